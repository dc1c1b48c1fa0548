"""Operator pages for the shop. Packs are editable; orders and Stripe events are history, so read-only."""

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html

from storefront.models import CreditPack, Order, StripeEvent
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
