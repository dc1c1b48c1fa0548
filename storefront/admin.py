"""Operator pages for the shop. Packs are editable; orders, disputes and Stripe events are history, so read-only."""

import csv

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import NoReverseMatch, path, reverse
from django.utils.html import format_html

from storefront.models import CreditPack, Dispute, Order, StripeEvent
from storefront.selectors import dispute_generation_log
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
        "amount_paid",
        "currency_paid",
        "amount_refunded",
        "problem",
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
            writer.writerow([_csv_safe(value) for value in row])
        return response


def _csv_safe(value: object) -> object:
    """Prompts are typed by members: never let a spreadsheet read one as a formula."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value
