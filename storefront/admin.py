"""Operator pages for the shop. Packs are editable; orders and Stripe events are history, so read-only."""

import hashlib

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html

from storefront.gallery import MAX_IMAGE_BYTES, sample_image_inspect
from storefront.models import CreditPack, LegalPage, Order, SampleImage, StripeEvent
from vouchers.admin_base import ReadOnlyAdmin


@admin.register(CreditPack)
class CreditPackAdmin(admin.ModelAdmin):
    list_display = ("name", "credits", "price", "per_image", "currency", "active", "sort_order")
    list_editable = ("active", "sort_order")
    list_filter = ("active",)
    search_fields = ("name",)
    fields = ("name", "credits", "price_cents", "currency", "active", "sort_order")

    @admin.display(description="price", ordering="price_cents")
    def price(self, pack: CreditPack) -> str:
        return pack.price_display

    @admin.display(description="per image")
    def per_image(self, pack: CreditPack) -> str:
        return pack.price_per_image_display


@admin.register(Order)
class OrderAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "created_at",
        "status",
        "pack",
        "credits",
        "amount",
        "email",
        "discord_user_id",
        "voucher_code",
    )
    list_filter = ("status", "pack")
    list_select_related = ("pack", "voucher")
    date_hierarchy = "created_at"
    search_fields = ("email", "stripe_session_id", "payment_intent_id", "=discord_user_id", "voucher__code")
    fields = (
        "status",
        "pack",
        "credits",
        "amount",
        "voucher_link",
        "voucher_status",
        "email",
        "discord_user_id",
        "stripe_session_id",
        "payment_intent_id",
        "created_at",
        "paid_at",
        "updated_at",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Order]:
        return super().get_queryset(request).select_related("pack", "voucher")

    @admin.display(description="amount", ordering="amount_cents")
    def amount(self, order: Order) -> str:
        return order.amount_display

    @admin.display(description="voucher")
    def voucher_code(self, order: Order) -> str:
        voucher = getattr(order, "voucher", None)
        return voucher.code if voucher else "–"

    @admin.display(description="voucher")
    def voucher_link(self, order: Order) -> str:
        voucher = getattr(order, "voucher", None)
        if voucher is None:
            return "– (none: not paid)"
        try:
            url = reverse("admin:vouchers_voucher_change", args=[voucher.pk])
        except NoReverseMatch:
            return voucher.code
        return format_html('<a href="{}">{}</a>', url, voucher.code)

    @admin.display(description="voucher status")
    def voucher_status(self, order: Order) -> str:
        voucher = getattr(order, "voucher", None)
        if voucher is None:
            return "–"
        text = voucher.get_status_display()
        return f"{text}, payment refunded" if voucher.refunded_at else text


@admin.register(StripeEvent)
class StripeEventAdmin(ReadOnlyAdmin):
    list_display = ("event_id", "type", "received_at", "processed_at", "attempts", "has_error")
    list_filter = ("type", ("processed_at", admin.EmptyFieldListFilter))
    search_fields = ("=event_id", "type")
    date_hierarchy = "received_at"
    fields = ("event_id", "type", "received_at", "processed_at", "attempts", "error")

    @admin.display(description="error", boolean=True)
    def has_error(self, event: StripeEvent) -> bool:
        return bool(event.error)


# --- Legal pages and the sample gallery (issue 12) --------------------------------------------------------


@admin.register(LegalPage)
class LegalPageAdmin(admin.ModelAdmin):
    """The seeded terms, privacy and refund pages: operators edit the wording; the three pages always exist."""

    list_display = ("title", "kind", "updated_at", "view_on_site_link")
    fields = ("kind", "title", "body", "updated_at")
    readonly_fields = ("kind", "updated_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # seeded by a migration; one page per kind

    def has_delete_permission(self, request: HttpRequest, obj: LegalPage | None = None) -> bool:
        return False  # an empty body already falls back to the default wording

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        form.base_fields["body"].help_text = (
            "Plain text. A blank line starts a paragraph, a line starting with '## ' is a heading, lines starting "
            "with '- ' make a list. {shop_name}, {legal_entity}, {support_contact} and {site_url} are filled in "
            "from the settings. Leave empty to show the default wording."
        )
        return form

    @admin.display(description="page")
    def view_on_site_link(self, page: LegalPage) -> str:
        url = reverse(page.kind)
        return format_html('<a href="{}">{}</a>', url, url)


class SampleImageForm(forms.ModelForm):
    """Upload a picture; its bytes, type, size and digest are filled in by `sample_image_inspect`."""

    upload = forms.FileField(
        required=False, help_text="PNG, JPEG, WebP or GIF, at most 5 MiB. Leave empty to keep the current image."
    )

    class Meta:
        model = SampleImage
        fields = ("prompt", "size", "quality", "active", "sort_order")

    def clean(self) -> dict:
        cleaned = super().clean()
        upload = cleaned.get("upload")
        if upload is None and self.instance.pk is None:
            raise forms.ValidationError({"upload": "Choose an image to upload."})
        if upload is not None:
            data = upload.read(MAX_IMAGE_BYTES + 1)
            try:
                content_type, width, height = sample_image_inspect(data=data)
            except forms.ValidationError as exc:
                raise forms.ValidationError({"upload": exc.messages}) from exc
            self.instance.image = data
            self.instance.content_type, self.instance.width, self.instance.height = content_type, width, height
            self.instance.digest = hashlib.sha256(data).hexdigest()
        return cleaned


@admin.register(SampleImage)
class SampleImageAdmin(admin.ModelAdmin):
    form = SampleImageForm
    list_display = ("thumbnail", "prompt", "size", "quality", "active", "sort_order")
    list_display_links = ("thumbnail", "prompt")
    list_editable = ("active", "sort_order")
    list_filter = ("active",)
    search_fields = ("prompt",)
    readonly_fields = ("preview", "content_type", "width", "height", "created_at")

    def get_fields(self, request: HttpRequest, obj: SampleImage | None = None) -> list[str]:
        fields = ["upload", "prompt", "size", "quality", "active", "sort_order"]
        return (["preview", *fields, "content_type", "width", "height", "created_at"]) if obj else fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[SampleImage]:
        return super().get_queryset(request).defer("image")  # the list needs no image bytes

    def _img(self, sample: SampleImage, height: int) -> str:
        url = reverse("gallery_image", kwargs={"pk": sample.pk, "digest": sample.digest})
        return format_html('<img src="{}" alt="" style="height: {}px; width: auto;">', url, height)

    @admin.display(description="image")
    def thumbnail(self, sample: SampleImage) -> str:
        return self._img(sample, 48)

    @admin.display(description="current image")
    def preview(self, sample: SampleImage) -> str:
        return self._img(sample, 200)
