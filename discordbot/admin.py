"""Operator admin for generations: a read-only record of every image asked for, with its timings.

Credits are never changed here; a generation stuck in flight is refunded by the bot's sweep.
"""

from datetime import timedelta

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from discordbot.models import BotProcess, EntitlementPurchase, Generation
from vouchers.admin_base import ReadOnlyAdmin, member_label, moment


def _seconds(delta: timedelta | None) -> str:
    return "-" if delta is None else f"{delta.total_seconds():.1f} s"


@admin.register(Generation)
class GenerationAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        moment("created_at"),
        "member",
        "status",
        "short_prompt",
        "size",
        "quality",
        "cost",
        "image_cost",
        "model",
        "waited",
        "took",
    ]
    list_filter = ["status", "model", "size", "quality", "created_at"]
    search_fields = ["prompt", "account__discord_user_id", "account__discord_name", "error"]
    member_id_lookup = "account__discord_user_id"
    list_select_related = ["account"]
    date_hierarchy = "created_at"
    fields = [
        "account",
        "prompt",
        "size",
        "quality",
        "model",
        "cost",
        "image_cost",
        "status",
        "error",
        "owner",
        "interaction_id",
        "guild_id",
        "channel_id",
        "message_id",
        "discord_message",
        "created_at",
        "started_at",
        "delivered_at",
        "finished_at",
        "waited",
        "took",
    ]
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[Generation]:
        return super().get_queryset(request).select_related("account")

    @admin.display(description="Discord user", ordering="account__discord_user_id")
    def member(self, obj: Generation) -> str:
        return member_label(obj.account)

    @admin.display(description="image cost", ordering="image_spend_micros")
    def image_cost(self, obj: Generation) -> str:
        """What the image service charged for it, once the pipeline reported it."""
        if obj.image_spend_micros is None:
            return "\N{EN DASH}"
        return f"${obj.image_spend_micros / 1_000_000:.4f}"

    @admin.display(description="prompt")
    def short_prompt(self, obj: Generation) -> str:
        return obj.prompt if len(obj.prompt) <= 60 else obj.prompt[:59] + "\N{HORIZONTAL ELLIPSIS}"

    @admin.display(description="in Discord")
    def discord_message(self, obj: Generation) -> str:
        url = obj.message_url
        if url:
            return format_html('<a href="{}" target="_blank" rel="noopener noreferrer">Open the message</a>', url)
        return "\N{EN DASH} (no message: not delivered)"

    @admin.display(description="waited")
    def waited(self, obj: Generation) -> str:
        """In line, from the request to the start of the backend call."""
        return _seconds(obj.started_at - obj.created_at if obj.started_at else None)

    @admin.display(description="took")
    def took(self, obj: Generation) -> str:
        """From the start (or the request, if it never started) to delivery or refund."""
        if obj.finished_at is None:
            return "-"
        return _seconds(obj.finished_at - (obj.started_at or obj.created_at))


@admin.register(BotProcess)
class BotProcessAdmin(ReadOnlyAdmin):
    """Which `runbot` process holds the bot lease (active), which stand by, and when each last renewed."""

    list_display = ["identity", "active", "host", "pid", "started_at", "heartbeat_at", "expires_at", "stopped_at"]
    list_filter = ["active"]


@admin.register(EntitlementPurchase)
class EntitlementPurchaseAdmin(ReadOnlyAdmin):
    """Credit packs bought in Discord's own store (Premium Apps): what each entitlement credited, whether Discord
    consumed it, and its refund. Read-only: the bot records them; a refund is Discord's (see the README)."""

    list_display = [
        "entitlement_id",
        moment("created_at", "credited"),
        "discord_user_id",
        "pack",
        "credits",
        "kind",
        "state",
    ]
    list_filter = ["pack", "entitlement_type", ("consumed_at", admin.EmptyFieldListFilter), "deleted_at"]
    search_fields = ["=entitlement_id", "=discord_user_id", "=sku_id"]
    list_select_related = ["pack"]
    date_hierarchy = "created_at"
    fields = [
        "entitlement_id",
        "sku_id",
        "discord_user_id",
        "kind",
        "pack",
        "credits",
        "voucher",
        "created_at",
        "consumed_at",
        "deleted_at",
        "clawback_cause",
    ]
    readonly_fields = fields

    @admin.display(description="type", ordering="entitlement_type")
    def kind(self, obj: EntitlementPurchase) -> str:
        return EntitlementPurchase.TYPE_NAMES.get(obj.entitlement_type, f"type {obj.entitlement_type}")

    @admin.display(description="state")
    def state(self, obj: EntitlementPurchase) -> str:
        if obj.voucher_id is None:
            return "refunded before it was credited"
        if obj.deleted_at is not None:
            return "refunded: clawed back"
        return "credited, consumed" if obj.consumed_at else "credited, not yet consumed"
