"""Operator admin for generations: a read-only record of every image asked for, with its timings.

Credits are never changed here; a generation stuck in flight is refunded by the bot's sweep.
"""

from datetime import timedelta

from django import forms
from django.conf import settings
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from discordbot.guilds import MAX_CHANNELS
from discordbot.models import BotProcess, EntitlementPurchase, Generation, GuildMember, GuildMemberDay, GuildSettings
from vouchers import pricing
from vouchers.admin_base import GuardedAdmin, ReadOnlyAdmin, member_label, moment
from vouchers.models import CreditAccount


def _seconds(delta: timedelta | None) -> str:
    return "-" if delta is None else f"{delta.total_seconds():.1f} s"


class ConfiguredValuesFilter(admin.SimpleListFilter):
    """A filter offering the values the settings configure (the price table's sizes and qualities, the image
    model), instead of Django's default list built by a SELECT DISTINCT over every generation. Any value in the
    URL still filters, configured or not."""

    def lookups(self, request, model_admin):
        return [(value, value) for value in self.values()]

    def values(self) -> list[str]:
        raise NotImplementedError

    def queryset(self, request, queryset):
        value = self.value()
        return queryset.filter(**{self.parameter_name: value}) if value else queryset


class SizeFilter(ConfiguredValuesFilter):
    title = parameter_name = "size"

    def values(self) -> list[str]:
        return [row.size for row in pricing.price_table()]


class QualityFilter(ConfiguredValuesFilter):
    title = parameter_name = "quality"

    def values(self) -> list[str]:
        return pricing.price_qualities()


class ModelFilter(ConfiguredValuesFilter):
    title = parameter_name = "model"

    def values(self) -> list[str]:
        return [settings.IMAGE_MODEL]


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
    # No date_hierarchy and no value lists built by SELECT DISTINCT: at 200,000 generations each was a scan.
    list_filter = ["status", ModelFilter, SizeFilter, QualityFilter, "created_at"]
    search_fields = ["prompt", "account__discord_user_id", "account__discord_name", "error"]
    member_id_lookup = "account__discord_user_id"
    list_select_related = ["account"]
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


# --- Per-server rules and server wallets (discordbot.guilds) -----------------------------------------------------


class GuildSettingsForm(forms.ModelForm):
    class Meta:
        model = GuildSettings
        fields = [
            "guild_id",
            "name",
            "channel_ids",
            "required_role_id",
            "daily_image_cap",
            "max_image_cost",
            "moderation",
            "default_allowance",
        ]
        help_texts = {"channel_ids": "Channel ids where image commands work, e.g. [123, 456]; [] for every channel."}

    def clean_channel_ids(self) -> list[int]:
        value = self.cleaned_data["channel_ids"] or []
        if not isinstance(value, list) or any(type(c) is not int or not 0 < c < 2**63 for c in value):
            raise forms.ValidationError("A list of Discord channel ids (whole numbers), or [] for every channel.")
        if len(value) > MAX_CHANNELS:
            raise forms.ValidationError(f"At most {MAX_CHANNELS} channels.")
        return list(dict.fromkeys(value))


@admin.register(GuildSettings)
class GuildSettingsAdmin(GuardedAdmin):
    """A server's rules, as its managers set them with /server; operators may correct them here. The wallet is a
    credit account of kind "server" (credits move only through the ledger, never here)."""

    form = GuildSettingsForm
    list_display = [
        "guild_id",
        "name",
        "daily_image_cap",
        "max_image_cost",
        "moderation",
        "default_allowance",
        "wallet",
        "updated_at",
    ]
    search_fields = ["name", "=guild_id"]

    @admin.display(description="wallet (credits)")
    def wallet(self, obj: GuildSettings) -> int:
        return (
            CreditAccount.objects.filter(discord_guild_id=obj.guild_id).values_list("balance", flat=True).first() or 0
        )


@admin.register(GuildMember)
class GuildMemberAdmin(GuardedAdmin):
    """Members barred from a server's images, and members with their own daily allowance."""

    list_display = ["guild_id", "discord_user_id", "barred", "allowance", "updated_at"]
    list_filter = ["barred"]
    search_fields = ["=guild_id", "=discord_user_id"]


@admin.register(GuildMemberDay)
class GuildMemberDayAdmin(ReadOnlyAdmin):
    """Usage per member per server per day (UTC): images asked for and credits the server's wallet paid, net of
    refunds. Written only by the bot's reservations and refunds."""

    list_display = ["day", "guild_id", "discord_user_id", "images", "allowance_used"]
    list_filter = ["day"]
    search_fields = ["=guild_id", "=discord_user_id"]
    date_hierarchy = "day"


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
