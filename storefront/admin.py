"""Operator pages for the shop. Packs are editable; orders, disputes and Stripe events are history, so read-only.

Corrections on an order each need their own permission: resending the voucher email
(`storefront.resend_voucher_email`) and refunding it (`storefront.refund_order`, through Stripe, then settled by
the same function as Stripe's webhook).
Each order links to its payment in Stripe's dashboard. Codes and Checkout Session ids (which open the page that
shows the voucher) are masked for users without `vouchers.see_voucher_code`.
"""

import csv
import hashlib
import logging
from decimal import Decimal

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, path, reverse
from django.utils.html import format_html

from storefront.errors import CheckoutError
from storefront.gallery import MAX_IMAGE_BYTES, sample_image_inspect
from storefront.models import CreditPack, Dispute, LegalPage, Order, SampleImage, StripeEvent
from storefront.money import ZERO_DECIMAL_CURRENCIES, format_money
from storefront.selectors import dispute_generation_log
from storefront.services import MAX_REFUND_REASON_LENGTH, order_refund, voucher_email_send
from storefront.spreadsheet import csv_cell
from vouchers.admin import ReasonForm
from vouchers.admin_base import GuardedAdmin, ReadOnlyAdmin, column, moment, require_perm, shown_code, shown_secret
from vouchers.models import Voucher

logger = logging.getLogger(__name__)

RESEND = "storefront.resend_voucher_email"
REFUND = "storefront.refund_order"


class RefundForm(forms.Form):
    """How much to refund (in the order's currency, major units) and why. `refunds_seen` travels with the page,
    so the same form sent twice carries the same idempotency key (see `order_refund`)."""

    amount = forms.DecimalField(min_value=0, decimal_places=2, label="Amount")
    memo = forms.CharField(
        max_length=MAX_REFUND_REASON_LENGTH, label="Reason", help_text="Why: recorded with your name."
    )
    refunds_seen = forms.IntegerField(min_value=0, widget=forms.HiddenInput)

    def __init__(self, *args, order: Order, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.order = order
        zero_decimal = order.currency.lower() in ZERO_DECIMAL_CURRENCIES
        self.fields["amount"].decimal_places = 0 if zero_decimal else 2
        self.fields["amount"].label = f"Amount ({order.currency.upper()})"

    def clean_amount(self) -> int:
        value = self.cleaned_data["amount"]
        minor = int(value if self.order.currency.lower() in ZERO_DECIMAL_CURRENCIES else value * 100)
        if minor <= 0:
            raise forms.ValidationError("Refund more than nothing.")
        return minor


def stripe_payment_url(payment_intent_id: str) -> str | None:
    """The payment's page in Stripe's dashboard, in test or live mode as the secret key says; None when there
    is no Stripe payment (test-mode backend, unpaid order, unknown key)."""
    if settings.PAYMENTS_BACKEND != "stripe" or not payment_intent_id.startswith("pi_"):
        return None
    key = settings.STRIPE_SECRET_KEY
    if key.startswith(("sk_test_", "rk_test_")):
        return f"https://dashboard.stripe.com/test/payments/{payment_intent_id}"
    if key.startswith(("sk_live_", "rk_live_")):
        return f"https://dashboard.stripe.com/payments/{payment_intent_id}"
    return None


@admin.register(CreditPack)
class CreditPackAdmin(GuardedAdmin):
    list_display = ("name", "credits", "price", "per_image", "currency", "active", "sort_order")
    list_editable = ("active", "sort_order")
    list_filter = ("active",)
    search_fields = ("name",)
    fields = ("name", "credits", "price_cents", "currency", "active", "sort_order", "discord_sku_id")

    @admin.display(description="price", ordering="price_cents")
    def price(self, pack: CreditPack) -> str:
        return pack.price_display

    @admin.display(description="per image")
    def per_image(self, pack: CreditPack) -> str:
        return pack.price_per_image_display


@admin.register(Order)
class OrderAdmin(ReadOnlyAdmin):
    # No date_hierarchy: its year list is a DISTINCT over every order's date; the date filter costs nothing.
    list_filter = ("status", "pack", "created_at")
    list_select_related = ("pack", "voucher")
    search_fields = ("email", "stripe_session_id", "payment_intent_id", "=discord_user_id", "voucher__code")
    member_id_lookup = "discord_user_id"
    email_lookups = ("email",)
    code_search_fields = ("stripe_session_id", "voucher__code")
    exact_code_lookups = ("voucher__code",)
    exact_secret_lookups = ("stripe_session_id",)

    def get_list_display(self, request: HttpRequest):
        return (
            "id",
            moment("created_at"),
            "status",
            column(request, "pack", lambda o: o.pack.name, ordering="pack__name"),
            "credits",
            "amount",
            "email",
            column(request, "Discord user", lambda o: o.discord_user_id or "\N{EN DASH}", css="discord_user_id"),
            column(request, "voucher", lambda o: self._code(request, o), css="voucher_code"),
        )

    def _code(self, request: HttpRequest, order: Order) -> str:
        voucher = getattr(order, "voucher", None)
        return shown_code(request, voucher.code if voucher else None)

    def get_fields(self, request: HttpRequest, obj=None):
        return (
            "status",
            "pack",
            "credits",
            "amount",
            column(request, "voucher", lambda o: self._voucher_link(request, o), css="voucher_link"),
            "voucher_status",
            "email",
            "discord_user_id",
            column(request, "Checkout Session", lambda o: shown_secret(request, o.stripe_session_id), css="session"),
            "payment_intent_id",
            "stripe_link",
            "amount_paid",
            "currency_paid",
            "amount_refunded",
            "problem",
            "created_at",
            "paid_at",
            "updated_at",
        )

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        return self.get_fields(request, obj)

    def get_fieldsets(self, request: HttpRequest, obj=None):
        return [(None, {"fields": self.get_fields(request, obj)})]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Order]:
        return super().get_queryset(request).select_related("pack", "voucher")

    def has_resend_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(RESEND)

    def has_refund_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(REFUND)

    @admin.display(description="amount", ordering="amount_cents")
    def amount(self, order: Order) -> str:
        return order.amount_display

    def _voucher_link(self, request: HttpRequest, order: Order) -> str:
        voucher = getattr(order, "voucher", None)
        if voucher is None:
            return "– (none: not paid)"
        try:
            url = reverse("admin:vouchers_voucher_change", args=[voucher.pk])
        except NoReverseMatch:
            return shown_code(request, voucher.code)
        return format_html('<a href="{}">{}</a>', url, shown_code(request, voucher.code))

    @admin.display(description="voucher status")
    def voucher_status(self, order: Order) -> str:
        voucher = getattr(order, "voucher", None)
        if voucher is None:
            return "–"
        text = voucher.get_status_display()
        return f"{text}, payment refunded" if voucher.refunded_at else text

    @admin.display(description="payment in Stripe")
    def stripe_link(self, order: Order) -> str:
        url = stripe_payment_url(order.payment_intent_id)
        if url is None:
            return "– (no Stripe payment)"
        mode = "test mode" if "/test/" in url else "live"
        return format_html('<a href="{}" target="_blank" rel="noopener noreferrer">Open in Stripe ({})</a>', url, mode)

    # --- corrections ---------------------------------------------------------------------------------------

    def get_urls(self):
        return [
            path(
                "<path:object_id>/resend-email/",
                self.admin_site.admin_view(self.resend_email_view),
                name="storefront_order_resend_email",
            ),
            path(
                "<path:object_id>/refund/",
                self.admin_site.admin_view(self.refund_view),
                name="storefront_order_refund",
            ),
            *super().get_urls(),
        ]

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "can_resend": self.has_resend_permission(request),
            "can_refund": self.has_refund_permission(request),
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def resend_email_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Send the buyer their voucher email again: asks why, sends (no transaction open), logs who and why."""
        require_perm(request, RESEND)
        order = get_object_or_404(self.get_queryset(request), pk=object_id if object_id.isdigit() else None)
        back = HttpResponseRedirect(reverse("admin:storefront_order_change", args=[order.pk]))
        voucher = Voucher.objects.filter(order=order).first()
        if voucher is None or not order.email:
            why = "it has no voucher (not paid)" if voucher is None else "it has no email address"
            self.message_user(request, f"Order #{order.pk}: nothing to resend, {why}.", messages.ERROR)
            return back
        if voucher.status == Voucher.Status.VOID:
            self.message_user(request, f"Order #{order.pk}: its voucher is void; nothing to resend.", messages.ERROR)
            return back
        form = ReasonForm(request.POST if request.method == "POST" else None)
        if not form.is_valid():
            return TemplateResponse(
                request,
                "admin/storefront/order/resend_email.html",
                {
                    **self.admin_site.each_context(request),
                    "title": f"Resend the voucher email of order #{order.pk}",
                    "order": order,
                    "form": form,
                    "opts": self.model._meta,
                },
            )
        try:
            voucher_email_send(order_id=order.pk)
        except Exception:  # SMTP refusals, timeouts: tell the operator, keep the details in the log
            logger.exception("Resending the voucher email of order %s failed.", order.pk)
            self.message_user(request, f"Order #{order.pk}: the email could not be sent; try again.", messages.ERROR)
            return back
        reason = form.cleaned_data["memo"]
        self.log_change(request, order, f"Voucher email resent to {order.email}: {reason}")
        self.message_user(request, f"Voucher email resent to {order.email}.", messages.SUCCESS)
        return back

    def refund_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Refund (part of) an order: asks how much and why, refunds through Stripe, settles as the webhook does."""
        require_perm(request, REFUND)
        order = get_object_or_404(self.get_queryset(request), pk=object_id if object_id.isdigit() else None)
        back = HttpResponseRedirect(reverse("admin:storefront_order_change", args=[order.pk]))
        left = order.amount_cents - order.amount_refunded
        if order.status not in (Order.Status.PAID, Order.Status.REFUNDED) or left <= 0:
            why = (
                "it was never paid"
                if order.status not in (Order.Status.PAID, Order.Status.REFUNDED)
                else ("it has been refunded in full")
            )
            self.message_user(request, f"Order #{order.pk}: nothing to refund, {why}.", messages.ERROR)
            return back
        seen = order.refunds.count()
        initial = {
            "refunds_seen": seen,
            "amount": Decimal(left) / (1 if order.currency in ZERO_DECIMAL_CURRENCIES else 100),
        }
        form = RefundForm(request.POST if request.method == "POST" else None, initial=initial, order=order)
        error = ""
        if form.is_valid():
            amount, reason = form.cleaned_data["amount"], form.cleaned_data["memo"]
            try:
                refund = order_refund(
                    order_id=order.pk,
                    amount=amount,
                    reason=reason,
                    operator=request.user.get_username(),
                    refunds_seen=form.cleaned_data["refunds_seen"],
                )
            except CheckoutError as exc:
                error = exc.message
            else:
                shown = format_money(refund.amount, order.currency)
                self.log_change(request, order, f"Refunded {shown} (Stripe refund {refund.stripe_refund_id}): {reason}")
                self.message_user(
                    request,
                    f"Order #{order.pk}: refunded {shown} ({refund.status}); {refund.credits} credit(s) taken back.",
                    messages.SUCCESS,
                )
                return back
        return TemplateResponse(
            request,
            "admin/storefront/order/refund.html",
            {
                **self.admin_site.each_context(request),
                "title": f"Refund order #{order.pk}",
                "order": order,
                "form": form,
                "error": error,
                "paid": format_money(order.amount_cents, order.currency),
                "left": format_money(left, order.currency),
                "opts": self.model._meta,
            },
            status=400 if error else 200,
        )


@admin.register(StripeEvent)
class StripeEventAdmin(ReadOnlyAdmin):
    list_display = (
        "event_id",
        "type",
        moment("received_at"),
        moment("processed_at"),
        "attempts",
        "has_error",
        moment("next_attempt_at"),
    )
    list_filter = ("type", "received_at", ("processed_at", admin.EmptyFieldListFilter))
    search_fields = ("=event_id", "type")
    # An unprocessed event is retried at next_attempt_at; `manage.py processstripeevents --now` retries at once.
    fields = (
        "event_id",
        "type",
        "received_at",
        "processed_at",
        "attempts",
        "error",
        "next_attempt_at",
        "claimed_until",
    )

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


@admin.register(Dispute)
class DisputeAdmin(ReadOnlyAdmin):
    """Chargebacks as Stripe reports them, what they did to the credits, and the evidence Stripe asks for."""

    list_display = (
        "stripe_dispute_id",
        "order",
        "status",
        "reason",
        "disputed_amount",
        "evidence_due_by",
        "credits_state",
        "credits_frozen",
        "evidence",
    )
    list_filter = ("status", "credits_state", "reason")
    search_fields = ("=stripe_dispute_id", "=order__id", "order__email", "order__payment_intent_id")
    email_lookups = ("order__email",)
    date_hierarchy = "created_at"
    list_select_related = ("order",)
    fields = (
        "stripe_dispute_id",
        "order",
        "status",
        "reason",
        "disputed_amount",
        "evidence_due_by",
        "credits_state",
        "credits_frozen",
        "evidence",
        "created_at",
        "updated_at",
        "closed_at",
    )

    @admin.display(description="amount", ordering="amount")
    def disputed_amount(self, dispute: Dispute) -> str:
        return dispute.amount_display

    @admin.display(description="evidence")
    def evidence(self, dispute: Dispute) -> str:
        url = reverse("admin:storefront_dispute_generation_log", args=[dispute.pk])
        return format_html('<a href="{}">Generation log (CSV)</a>', url)

    def get_urls(self):
        own = [
            path(
                "<int:dispute_id>/generation-log.csv",
                self.admin_site.admin_view(self.generation_log_csv),
                name="storefront_dispute_generation_log",
            )
        ]
        return own + super().get_urls()

    def generation_log_csv(self, request: HttpRequest, dispute_id: int) -> HttpResponse:
        """Every image the disputing member generated since redeeming the voucher: Stripe's usage evidence."""
        dispute = get_object_or_404(Dispute.objects.select_related("order"), pk=dispute_id)
        if not self.has_view_permission(request, dispute):
            raise PermissionDenied
        log = dispute_generation_log(dispute=dispute)
        response = HttpResponse(content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="dispute-{dispute.stripe_dispute_id}-generations.csv"'
        writer = csv.writer(response)
        writer.writerow(["# dispute", dispute.stripe_dispute_id, "order", dispute.order_id])
        writer.writerow(["# discord user id", log.discord_user_id or "", "voucher redeemed at", log.redeemed_at or ""])
        writer.writerow(log.COLUMNS)
        for row in log.rows:
            writer.writerow([csv_cell(value) for value in row])
        return response
