"""Per-server rules and server wallets: what a Discord server's managers decide for image requests in it.

A server with no `GuildSettings` row has no rules: any member, any channel, each paying from their own balance
(as in a DM). Once its managers set anything (`/server ...`, or an operator in the admin), every image request
in it (/generate, /edit and the image buttons) goes through two steps:

- `guild_request_check`, before anything is reserved or answered: the channel, the required role, a member
  barred, the per-member daily image cap and the most one image may cost. A refusal says why, privately, and
  costs nothing.
- `guild_request_charge`, inside `generation_reserve`'s transaction: the daily cap again, now enforced (the check
  above reads, this one is a conditional UPDATE), then the payer. One reservation per request: if the whole
  request fits in the member's allowance left today and in the server's wallet, the wallet pays; otherwise the
  member's own balance pays all of it.

A member's use of a server on a day is one `GuildMemberDay` row; its counters only rise by a conditional UPDATE
that re-checks the limit in its WHERE clause (never read-then-write), and only fall by a refund of what a request
counted (`GuildCharge`, given back once per refund in the refund's transaction). The wallet itself is a
`CreditAccount` of kind `server` and moves only through `vouchers.services`, like any member's balance.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from discordbot.errors import BotError, GenerationError
from discordbot.models import GuildCharge, GuildMember, GuildMemberDay, GuildSettings
from discordbot.replies import plural
from vouchers.errors import InsufficientCredits
from vouchers.models import CreditAccount, LedgerEntry
from vouchers.services import (
    MAX_CREDITS_PER_MOVEMENT,
    Redemption,
    credits_reserve,
    server_account_get_or_create,
    server_credits_reserve,
    server_voucher_redeem,
)

SERVER_RULE = "server_rule"
MAX_CHANNELS = 50
MODERATION_LEVELS = ("auto", "low")


class ServerSettingsError(BotError):
    """A manager's /server input that cannot be stored (nothing was written)."""

    reason = "invalid_server_setting"


def today() -> date:
    return timezone.now().date()  # UTC (settings.TIME_ZONE): the day turns at midnight UTC


def _require_id(value: object, what: str = "id") -> int:
    if type(value) is not int or not 0 < value < 2**63:
        raise ServerSettingsError(f"That is not a valid Discord {what}.")
    return value


def _limit(value: object, what: str) -> int | None:
    """0 (or None) means no limit."""
    if value is None or value == 0:
        return None
    if type(value) is not int or not 0 < value <= MAX_CREDITS_PER_MOVEMENT:
        raise ServerSettingsError(
            f"The {what} must be a whole number from 0 (no limit) to {MAX_CREDITS_PER_MOVEMENT:,}."
        )
    return value


# --- What managers set ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerRules:
    """A server's settings as a request sees them (None where a rule is off)."""

    guild_id: int
    channel_ids: tuple[int, ...] = ()
    required_role_id: int | None = None
    daily_image_cap: int | None = None
    max_image_cost: int | None = None
    moderation: str = ""
    default_allowance: int = 0


def _rules(row: GuildSettings) -> ServerRules:
    return ServerRules(
        guild_id=row.guild_id,
        channel_ids=tuple(int(c) for c in row.channel_ids or ()),
        required_role_id=row.required_role_id,
        daily_image_cap=row.daily_image_cap,
        max_image_cost=row.max_image_cost,
        moderation=row.moderation,
        default_allowance=row.default_allowance,
    )


def guild_rules_get(*, guild_id: int | None) -> ServerRules | None:
    """The server's rules; None in a DM or a server whose managers set nothing."""
    if guild_id is None:
        return None
    # Asked twice per /generate in a server, and most servers set nothing: a plain existence check first (the ORM
    # query cost the bot's event loop more CPU, through the GIL, than the database spent on it).
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT 1 FROM "{GuildSettings._meta.db_table}" WHERE "guild_id" = %s', [guild_id])
        if cursor.fetchone() is None:
            return None
    row = GuildSettings.objects.filter(guild_id=guild_id).first()
    return None if row is None else _rules(row)


def _settings_row(guild_id: int, name: str = "") -> GuildSettings:
    row, _ = GuildSettings.objects.get_or_create(guild_id=_require_id(guild_id, "server id"))
    name = " ".join(name.split())[:100] if isinstance(name, str) else ""
    if name and row.name != name:
        row.name = name
        GuildSettings.objects.filter(pk=row.pk).update(name=name)
    return row


@transaction.atomic
def guild_rules_set(
    *,
    guild_id: int,
    name: str = "",
    daily_image_cap: int | None = None,
    max_image_cost: int | None = None,
    moderation: str | None = None,
    required_role_id: int | None = None,
    clear_role: bool = False,
) -> ServerRules:
    """/server rules: store the rules given (None: unchanged; 0 for a limit: no limit; moderation "default": the
    image service's own). Invalid input raises ServerSettingsError and writes nothing."""
    updates: dict = {}
    if daily_image_cap is not None:
        updates["daily_image_cap"] = _limit(daily_image_cap, "daily image cap")
    if max_image_cost is not None:
        updates["max_image_cost"] = _limit(max_image_cost, "most one image may cost")
    if moderation is not None:
        if moderation not in (*MODERATION_LEVELS, "default"):
            raise ServerSettingsError("Moderation is auto, low or default.")
        updates["moderation"] = "" if moderation == "default" else moderation
    if required_role_id is not None and clear_role:
        raise ServerSettingsError("Give a role, or clear it, not both.")
    if required_role_id is not None:
        updates["required_role_id"] = _require_id(required_role_id, "role")
    if clear_role:
        updates["required_role_id"] = None
    row = _settings_row(guild_id, name)
    if updates:
        GuildSettings.objects.filter(pk=row.pk).update(**updates, updated_at=timezone.now())
        row.refresh_from_db()
    return _rules(row)


@transaction.atomic
def guild_channel_set(*, guild_id: int, channel_id: int | None, allow: bool, name: str = "") -> ServerRules:
    """/server channel: add a channel to (allow) or remove it from the channels image commands work in; with no
    channel and allow=False, clear the list (every channel again)."""
    row = GuildSettings.objects.select_for_update().filter(pk=_settings_row(guild_id, name).pk).get()
    channels = [int(c) for c in row.channel_ids or ()]
    if channel_id is None:
        if allow:
            raise ServerSettingsError("Name the channel to allow.")
        channels = []
    else:
        channel_id = _require_id(channel_id, "channel")
        if allow and channel_id not in channels:
            if len(channels) >= MAX_CHANNELS:
                raise ServerSettingsError(f"At most {MAX_CHANNELS} channels can be listed.")
            channels.append(channel_id)
        elif not allow and channel_id in channels:
            channels.remove(channel_id)
    GuildSettings.objects.filter(pk=row.pk).update(channel_ids=channels, updated_at=timezone.now())
    row.refresh_from_db()
    return _rules(row)


def guild_member_bar(*, guild_id: int, discord_user_id: int, barred: bool, name: str = "") -> None:
    """/server bar and /server unbar: a barred member's image requests in this server are refused."""
    _settings_row(guild_id, name)  # barring someone is a rule: the server has rules from now on
    GuildMember.objects.update_or_create(
        guild_id=guild_id, discord_user_id=_require_id(discord_user_id, "member"), defaults={"barred": barred}
    )


def guild_allowance_set(
    *, guild_id: int, credits: int | None, discord_user_id: int | None = None, name: str = ""
) -> None:
    """/server allowance: the credits a day each member may spend from the server's wallet (no member: the default
    for everyone), or one member's own (credits None: back to the default)."""
    if credits is not None and (type(credits) is not int or not 0 <= credits <= MAX_CREDITS_PER_MOVEMENT):
        raise ServerSettingsError(f"An allowance is a whole number of credits from 0 to {MAX_CREDITS_PER_MOVEMENT:,}.")
    row = _settings_row(guild_id, name)
    if discord_user_id is None:
        if credits is None:
            raise ServerSettingsError("Give the default allowance in credits (0: none).")
        GuildSettings.objects.filter(pk=row.pk).update(default_allowance=credits, updated_at=timezone.now())
        return
    GuildMember.objects.update_or_create(
        guild_id=guild_id, discord_user_id=_require_id(discord_user_id, "member"), defaults={"allowance": credits}
    )


def guild_wallet_redeem(*, guild_id: int, code: str, manager_id: int, name: str = "") -> Redemption:
    """/server redeem: a voucher's credits into the server's wallet. Failed attempts count against the manager's
    own failed-redeem limit, as /redeem's do."""
    from discordbot.services import redeem_rate_limit_check, redeem_rate_limit_record_failure  # (imports guilds)
    from vouchers.errors import VoucherError

    redeem_rate_limit_check(discord_user_id=manager_id)
    try:
        return server_voucher_redeem(code=code, discord_guild_id=_require_id(guild_id, "server id"), name=name)
    except VoucherError:
        redeem_rate_limit_record_failure(discord_user_id=manager_id)
        raise


def guild_wallet_open(*, guild_id: int, name: str = "") -> CreditAccount:
    """The server's wallet, created empty (before a server-bound checkout, so its page can name it)."""
    return server_account_get_or_create(discord_guild_id=_require_id(guild_id, "server id"), name=name)


# --- What managers see ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSummary:
    rules: ServerRules | None
    wallet: int  # the wallet's balance
    barred: tuple[int, ...]
    allowances: tuple[tuple[int, int], ...]  # (member, credits a day) overrides


def guild_summary(*, guild_id: int) -> ServerSummary:
    wallet = CreditAccount.objects.filter(discord_guild_id=guild_id).values_list("balance", flat=True).first() or 0
    members = GuildMember.objects.filter(guild_id=guild_id).order_by("discord_user_id")
    return ServerSummary(
        rules=guild_rules_get(guild_id=guild_id),
        wallet=wallet,
        barred=tuple(members.filter(barred=True).values_list("discord_user_id", flat=True)),
        allowances=tuple(members.filter(allowance__isnull=False).values_list("discord_user_id", "allowance")),
    )


@dataclass(frozen=True)
class MemberUsage:
    discord_user_id: int
    images: int  # asked for that day, less those refunded
    allowance_used: int  # credits the wallet paid for, less refunds
    allowance: int  # the member's allowance (their own, or the default)


def guild_usage(*, guild_id: int, day: date | None = None, limit: int = 25) -> list[MemberUsage]:
    """/server usage: each member's use of the server on `day` (default today), the heaviest wallet users first."""
    day = day or today()
    rules = guild_rules_get(guild_id=guild_id)
    default = rules.default_allowance if rules else 0
    overrides = dict(
        GuildMember.objects.filter(guild_id=guild_id, allowance__isnull=False).values_list(
            "discord_user_id", "allowance"
        )
    )
    rows = (
        GuildMemberDay.objects.filter(guild_id=guild_id, day=day)
        .order_by("-allowance_used", "-images", "discord_user_id")
        .values_list("discord_user_id", "images", "allowance_used")[:limit]
    )
    return [
        MemberUsage(discord_user_id=user, images=images, allowance_used=used, allowance=overrides.get(user, default))
        for user, images, used in rows
    ]


def _allowance(*, rules: ServerRules, discord_user_id: int) -> int:
    override = (
        GuildMember.objects.filter(guild_id=rules.guild_id, discord_user_id=discord_user_id)
        .values_list("allowance", flat=True)
        .first()
    )
    return rules.default_allowance if override is None else override


def guild_allowance_left(*, guild_id: int, discord_user_id: int) -> int:
    """What is left of the member's allowance today (0 in a server without rules)."""
    rules = guild_rules_get(guild_id=guild_id)
    if rules is None:
        return 0
    used = (
        GuildMemberDay.objects.filter(guild_id=guild_id, discord_user_id=discord_user_id, day=today())
        .values_list("allowance_used", flat=True)
        .first()
        or 0
    )
    return max(0, _allowance(rules=rules, discord_user_id=discord_user_id) - used)


# --- A member's request -----------------------------------------------------------------------------------------


def _refuse(text: str) -> GenerationError:
    return GenerationError(text, reason=SERVER_RULE)


def guild_request_check(
    *,
    guild_id: int | None,
    channel_ids: Sequence[int],
    discord_user_id: int,
    role_ids: Sequence[int],
    count: int | None = None,
    unit_cost: int | None = None,
) -> None:
    """May this member ask for images here? Raises GenerationError (reason "server_rule") saying why not.

    Called before anything is reserved or answered. `channel_ids`: the channel, and a thread's parent channel.
    `count` and `unit_cost` when already known (a button's are known only when it is reserved, which checks the
    cap and the cost again)."""
    rules = guild_rules_get(guild_id=guild_id)
    if rules is None:
        return
    member = (
        GuildMember.objects.filter(guild_id=guild_id, discord_user_id=discord_user_id)
        .values_list("barred", flat=True)
        .first()
    )
    if member:
        raise _refuse("This server's managers have barred you from making images here.")
    if rules.channel_ids and not set(channel_ids) & set(rules.channel_ids):
        where = ", ".join(f"<#{c}>" for c in rules.channel_ids[:10])
        raise _refuse(f"Images can't be made in this channel on this server. Try {where}.")
    if rules.required_role_id is not None and rules.required_role_id not in role_ids:
        raise _refuse(f"On this server, making images needs the <@&{rules.required_role_id}> role.")
    if unit_cost is not None:
        _check_cost(rules, unit_cost)
    if rules.daily_image_cap is not None:
        used = (
            GuildMemberDay.objects.filter(guild_id=guild_id, discord_user_id=discord_user_id, day=today())
            .values_list("images", flat=True)
            .first()
            or 0
        )
        _check_cap(rules, used, count or 1)


def _check_cost(rules: ServerRules, unit_cost: int) -> None:
    if rules.max_image_cost is not None and unit_cost > rules.max_image_cost:
        raise _refuse(
            f"On this server one image may cost at most {plural(rules.max_image_cost)}; this one costs "
            f"{plural(unit_cost)}. Pick a smaller size or a lower quality."
        )


def _check_cap(rules: ServerRules, used: int, count: int) -> None:
    cap = rules.daily_image_cap
    if cap is not None and used + count > cap:
        left = max(0, cap - used)
        raise _refuse(
            f"On this server each member may make {plural(cap, 'image')} a day; you have {left} left today. "
            "The day turns at midnight UTC."
        )


def guild_request_charge(
    *,
    rules: ServerRules,
    discord_user_id: int,
    generation_id: int,
    amount: int,
    count: int,
    memo: str = "",
) -> LedgerEntry:
    """Count the request against the server's rules and take its cost: from the server's wallet if all of it fits
    in today's allowance left and the wallet, else from the member's own balance. Inside the caller's
    transaction (`generation_reserve`); raises (and the caller's transaction writes nothing) when the daily cap
    is reached (GenerationError) or the member cannot pay (InsufficientCredits).
    """
    cost = amount
    _check_cost(rules, cost // count)
    day = today()
    key = {"guild_id": rules.guild_id, "discord_user_id": discord_user_id, "day": day}
    # The row exists before the conditional UPDATEs below; racing creators are fine (the unique key, no conflict).
    GuildMemberDay.objects.bulk_create([GuildMemberDay(**key)], ignore_conflicts=True)
    usage = GuildMemberDay.objects.filter(**key)
    counted = usage
    if rules.daily_image_cap is not None:
        counted = counted.filter(images__lte=rules.daily_image_cap - count)
    if not counted.update(images=F("images") + count):
        used = usage.values_list("images", flat=True).first() or 0
        _check_cap(rules, used, count)
        raise _refuse("This server's daily image cap is reached.")  # cannot happen: the cap check above raises
    allowance = _allowance(rules=rules, discord_user_id=discord_user_id)
    entry = None
    if cost <= allowance:
        try:
            with transaction.atomic():  # a savepoint: if the wallet is short, the allowance is not used either
                if not usage.filter(allowance_used__lte=allowance - cost).update(
                    allowance_used=F("allowance_used") + cost
                ):
                    raise InsufficientCredits()
                entry = server_credits_reserve(
                    discord_guild_id=rules.guild_id, amount=cost, generation_id=generation_id, memo=memo
                )
        except InsufficientCredits:
            entry = None
    GuildCharge.objects.create(
        generation_id=generation_id,
        guild_id=rules.guild_id,
        discord_user_id=discord_user_id,
        day=day,
        images=count,
        allowance=cost if entry is not None else 0,
    )
    if entry is None:
        entry = credits_reserve(discord_user_id=discord_user_id, amount=cost, generation_id=generation_id, memo=memo)
    return entry


def guild_charge_give_back(*, generation_id: int, images: int | None = None) -> None:
    """A refund of `images` of a request (None: all of them) gives back their share of the daily cap and, when the
    wallet paid, of the allowance. Inside the refund's transaction, before its credits move (the member's day row
    is locked before the account, as in `guild_request_charge`); the refund itself happens once per charge (a
    unique constraint), and so does this (the conditional UPDATE on what is still unreturned)."""
    charge = GuildCharge.objects.filter(generation_id=generation_id).first()
    if charge is None:
        return  # a DM, or a server without rules when it was asked
    images = charge.images - charge.images_returned if images is None else images
    if images <= 0:
        return
    allowance = charge.allowance // charge.images * images
    claimed = GuildCharge.objects.filter(
        pk=charge.pk, images_returned__lte=F("images") - images, allowance_returned__lte=F("allowance") - allowance
    ).update(images_returned=F("images_returned") + images, allowance_returned=F("allowance_returned") + allowance)
    if not claimed:
        return
    GuildMemberDay.objects.filter(
        Q(guild_id=charge.guild_id, discord_user_id=charge.discord_user_id, day=charge.day)
    ).update(images=F("images") - images, allowance_used=F("allowance_used") - allowance)


# --- The bot's side: the one check call the pipeline makes --------------------------------------------------


def interaction_facts(interaction) -> dict:
    """Where and who, as Discord sent them with the interaction: the channel (and a thread's parent), the member's
    role ids. The role ids are read from the member payload itself (`Member._roles`): `Member.roles` drops roles
    of a server the bot has not cached, and the rules must not depend on the cache."""
    channel_ids = [interaction.channel_id] if interaction.channel_id else []
    parent_id = getattr(interaction.channel, "parent_id", None)
    if parent_id:
        channel_ids.append(parent_id)
    return {
        "guild_id": interaction.guild_id,
        "channel_ids": channel_ids,
        "discord_user_id": interaction.user.id,
        "role_ids": list(getattr(interaction.user, "_roles", ())),
    }


async def server_rules_refuse(interaction, request) -> bool:
    """Before anything is reserved or answered: refuse (privately, nothing charged) a request this server's rules
    forbid. True when refused. `request` is the pipeline's Request, or None for a button whose options are read
    when it is reserved (which enforces the cap and the cost again)."""
    if interaction.guild_id is None:
        return False  # a DM: no server, no rules
    from discordbot.bridge import run_service
    from discordbot.replies import send_private
    from discordbot.services import generation_price

    count = unit_cost = None
    if request is not None:
        count = request.count or 1
        try:
            _, _, cost = generation_price(
                size=request.size,
                quality=request.quality,
                operation=request.operation,
                count=count,
                input_images=len(request.attachments),
            )
            unit_cost = cost // count
        except GenerationError:
            pass  # not on offer: the pipeline's own check says so
    try:
        await run_service(guild_request_check, **interaction_facts(interaction), count=count, unit_cost=unit_cost)
    except GenerationError as exc:
        await send_private(interaction, f"{exc.message} Nothing was charged.")
        return True
    return False
