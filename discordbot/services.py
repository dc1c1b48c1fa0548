"""The bot's business rules: reserving, settling and refunding generations, the bot lease, failed redeems.

Typed sync functions with keyword-only arguments; the cogs call them through `discordbot.bridge.run_service`.
Credits move only through `vouchers.services`, so each generation is one `generate` ledger debit and, if the
image is not delivered, exactly one `refund` (a unique constraint on `refund_of` backs "exactly").

A generation's life: `generation_reserve` (queued, charged, owned by the bot process that accepted it) ->
`generation_start` (running) -> `generation_deliver_begin` (delivering: the upload to Discord starts) ->
`generation_succeed` once Discord has the image; or `generation_fail_and_refund` at any point before delivery.
Every transition is a conditional UPDATE on the status, so two callers can never both settle one generation.
A delivering generation is refunded only after Discord was asked and the image is not there
(`delivery_checked=True`): delivered means charged, always. No transaction here is ever held open across a call
to the image backend or to Discord. (`failed` is not used: a failure is refunded at once, so it ends as
`refunded`, with the reason in `error`.)

Ownership across processes: each `runbot` holds a `BotProcess` row whose `expires_at` it renews (the lease).
Only generations whose owner's lease has expired are settled by another process (`generations_refund_stale`,
`generations_delivering_orphaned`). A process delivers only while its lease has a safety margin left
(`generation_deliver_begin`), so by the time its lease expires no upload of its can still be under way.
"""

import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from discordbot.errors import GenerationError, RedeemRateLimited
from discordbot.guilds import guild_allowance_left, guild_charge_give_back, guild_request_charge, guild_rules_get
from discordbot.models import BotProcess, Generation, MemberSettings
from discordbot.replies import plural
from discordbot.selectors import spend_today
from vouchers.errors import InsufficientCredits, VoucherError
from vouchers.models import CreditAccount, LedgerEntry
from vouchers.pricing import image_cost
from vouchers.selectors import account_balance
from vouchers.services import (
    Redemption,
    account_get_or_create,
    account_name_record,
    credits_refund,
    credits_reserve,
    voucher_redeem,
)

log = logging.getLogger(__name__)

MAX_PROMPT_LENGTH = 1000
MAX_ERROR_LENGTH = 500
STALE_BATCH_SIZE = 500
INTERRUPTED_ERROR = "interrupted: the bot stopped before the image was delivered"
PROCESS_RECORD_DAYS = 7


@dataclass(frozen=True)
class Reservation:
    """An accepted request: its generation, what it is for, and the member's balance right after the debit."""

    generation_id: int
    prompt: str
    size: str
    quality: str
    cost: int  # the whole request (unit_cost x count)
    balance: int
    operation: str = "generate"
    count: int = 1
    private: bool = False
    moderation: str = ""  # the server's setting for the image service ("": the service's default)
    paid_by_server: bool = False  # the server's wallet paid (from the member's allowance)

    @property
    def unit_cost(self) -> int:
        return self.cost // self.count


MEMBER_NAME_THROTTLE_SECONDS = 3600


def member_name_seen(*, discord_user_id: int, name: str) -> bool:
    """A member used a command: remember their Discord name for operators, at most once an hour per member.

    Throttled through the cache (shared by the bot's processes when it is Redis), so a busy member costs one
    write an hour at most; members without an account are not counted against the hour, so a first /redeem's
    name is recorded at the member's next command. True when the name was written (if it changed).
    """
    key = f"member-name-seen:{discord_user_id}"
    if cache.get(key) is not None:
        return False
    if (
        _select_one(f'SELECT 1 FROM "{CreditAccount._meta.db_table}" WHERE "discord_user_id" = %s', discord_user_id)
        is None
    ):
        return False
    if not cache.add(key, 1, timeout=MEMBER_NAME_THROTTLE_SECONDS):
        return False  # another process took this hour's write
    account_name_record(discord_user_id=discord_user_id, name=name)
    return True


def generation_price(
    *,
    size: str | None = None,
    quality: str | None = None,
    operation: str = "generate",
    count: int = 1,
    input_images: int = 0,
) -> tuple[str, str, int]:
    """The (size, quality, cost) of a request, with the defaults filled in; GenerationError if not on offer.

    The cost is `vouchers.pricing.image_cost`: the one price table for every operation, by size, quality and count.
    """
    size = size or next(iter(settings.GENERATION_COSTS))
    quality = quality or settings.GENERATION_DEFAULT_QUALITY
    try:
        cost = image_cost(operation=operation, size=size, quality=quality, count=count, input_images=input_images)
    except ValueError as exc:
        raise GenerationError(str(exc), reason="invalid_options") from None
    return size, quality, cost


def _require_prompt(prompt: object) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise GenerationError("Describe the image you want in the prompt.", reason="invalid_prompt")
    prompt = prompt.strip()
    if len(prompt) > MAX_PROMPT_LENGTH:
        raise GenerationError(f"The prompt is too long (at most {MAX_PROMPT_LENGTH} characters).", "invalid_prompt")
    return prompt


SPEND_BUDGET_REACHED = (
    "Image making is paused for today: the shop's daily image budget has been used up. "
    "Nothing was charged. Please try again tomorrow (the day turns at midnight UTC)."
)


def _spend_guard_check() -> None:
    """A soft daily cap, not a balance: read then refuse is enough here. Images already accepted still run, so the
    day can end over budget by what was in flight (and by figures not yet reported) when it was reached."""
    if settings.IMAGE_SPEND_DAILY_BUDGET_USD is None:
        return  # no guard, no query
    if spend_today().reached:
        raise GenerationError(SPEND_BUDGET_REACHED, reason="spend_budget")


def generation_record_spend(*, generation_id: int, micros: int) -> None:
    """Record what the image service charged for a generation, in micro-dollars (from the usage it reported).

    One UPDATE; recording again replaces the figure (the same report retried). Refuses a negative or non-integer
    figure and an unknown generation (GenerationError, nothing written).
    """
    if type(micros) is not int or micros < 0:
        raise GenerationError("An image's spend must be a whole, non-negative number of micro-dollars.", "invalid")
    if type(generation_id) is not int:
        raise GenerationError("No such generation.", reason="not_found")
    if not Generation.objects.filter(pk=generation_id).update(image_spend_micros=micros):
        raise GenerationError("No such generation.", reason="not_found")


def generation_reserve(
    *,
    discord_user_id: int,
    prompt: str,
    size: str | None = None,
    quality: str | None = None,
    model: str = "",
    owner: str = "",
    interaction_id: int | None = None,
    guild_id: int | None = None,
    channel_id: int | None = None,
    operation: str = "generate",
    count: int = 1,
    input_images: int = 0,
    private: bool = False,
    start: bool = False,
) -> Reservation:
    """Accept a request: create its Generation and take its whole cost (every image asked for), in one short
    transaction. Images that do not come are refunded when the delivery is recorded (`generation_succeed`).
    `start`: the caller already holds a slot to make it, so it is created running (`generation_start` folded in:
    one database round trip less before the image service is called).

    Refuses at once (InsufficientCredits, nothing written) when the balance is short, so a member is never
    queued for an image they cannot pay for, and (GenerationError "spend_budget", nothing written) once today's
    image spend has reached the daily budget. The debit is a conditional UPDATE, so any number of concurrent
    requests can never spend more than the balance.
    """
    prompt = _require_prompt(prompt)
    size, quality, cost = generation_price(
        size=size, quality=quality, operation=operation, count=count, input_images=input_images
    )
    _spend_guard_check()
    rules = guild_rules_get(guild_id=guild_id)  # None: a DM, or a server without rules (see discordbot.guilds)
    accounts = CreditAccount._meta.db_table
    row = _select_one(f'SELECT "id" FROM "{accounts}" WHERE "discord_user_id" = %s', discord_user_id)
    account_id = None if row is None else row[0]
    try:
        if account_id is None and rules is None:
            raise InsufficientCredits()
        with transaction.atomic():
            if account_id is None:  # the server's wallet may pay; else the rollback leaves no empty account
                account_id = account_get_or_create(discord_user_id=discord_user_id).pk
            generation = Generation.objects.create(
                account_id=account_id,
                prompt=prompt,
                size=size,
                quality=quality,
                model=model[:64],
                cost=cost,
                operation=operation,
                count=count,
                private=private,
                owner=owner,
                interaction_id=interaction_id,
                guild_id=guild_id,
                channel_id=channel_id,
                **({"status": Generation.Status.RUNNING, "started_at": timezone.now()} if start else {}),
            )
            charge = credits_reserve if rules is None else partial(guild_request_charge, rules=rules, count=count)
            entry = charge(
                discord_user_id=discord_user_id,
                amount=cost,
                generation_id=generation.pk,
                memo=f"Image #{generation.pk}",
            )
            # The member's balance after it (their own, whoever paid: the server's wallet is not theirs to see).
            [balance] = _select_one(f'SELECT "balance" FROM "{accounts}" WHERE "id" = %s', account_id)
    except InsufficientCredits:
        balance = account_balance(discord_user_id=discord_user_id)
        what = "This image costs" if count == 1 else f"These {count} images cost"
        left = guild_allowance_left(guild_id=guild_id, discord_user_id=discord_user_id) if rules else 0
        allowance = (
            f" This server pays only for a request that fits in your allowance left today ({plural(left)}) and in"
            " its wallet."
            if left
            else ""
        )
        raise InsufficientCredits(
            f"{what} {plural(cost)} and your balance is {plural(balance)}. Use /buy to get more, or /redeem a "
            f"voucher.{allowance}"
        ) from None
    return Reservation(
        generation_id=generation.pk,
        prompt=prompt,
        size=size,
        quality=quality,
        cost=cost,
        balance=balance,
        operation=operation,
        count=count,
        private=private,
        moderation=rules.moderation if rules else "",
        paid_by_server=entry.account_id != account_id,
    )


def generation_reserve_again(
    *,
    source_id: int,
    discord_user_id: int,
    prompt: str | None = None,
    model: str = "",
    owner: str = "",
    interaction_id: int | None = None,
    guild_id: int | None = None,
    channel_id: int | None = None,
    start: bool = False,
) -> Reservation:
    """The Regenerate button (and the Edit button's modal, with a new `prompt`): a new, separately charged
    generation with the same options, and the same prompt unless one is given. `start` as for generation_reserve."""
    source = Generation.objects.filter(pk=source_id).select_related("account").first()
    if source is None:
        raise GenerationError("That image can no longer be regenerated.", reason="not_found")
    if source.account.discord_user_id != discord_user_id:
        raise GenerationError(
            "Only the member who asked for this image can regenerate it. Use /generate for your own.",
            reason="not_owner",
        )
    if source.operation != "generate":
        # An edit's pictures are not kept: only a prompt-only request can be made again from the record.
        raise GenerationError("Only images made from a prompt alone can be regenerated.", reason="invalid_options")
    return generation_reserve(
        discord_user_id=discord_user_id,
        prompt=source.prompt if prompt is None else prompt,
        size=source.size,
        quality=source.quality,
        count=source.count,
        private=source.private,
        model=model,
        owner=owner,
        interaction_id=interaction_id,
        guild_id=guild_id,
        channel_id=channel_id,
        start=start,
    )


@dataclass(frozen=True)
class VariationSource:
    """A delivered result a member may vary: its prompt and options (the picture itself is on its message)."""

    prompt: str
    size: str
    quality: str
    private: bool


def generation_variation_source(*, source_id: int, discord_user_id: int) -> VariationSource:
    """The Vary button: what the variation of a delivered result starts from. Only its requester may vary it."""
    source = Generation.objects.filter(pk=source_id).select_related("account").first()
    if source is None or source.status != Generation.Status.SUCCEEDED:
        raise GenerationError("That image can no longer be varied.", reason="not_found")
    if source.account.discord_user_id != discord_user_id:
        raise GenerationError(
            "Only the member who asked for this image can vary it. Use /edit with your own picture.",
            reason="not_owner",
        )
    return VariationSource(prompt=source.prompt, size=source.size, quality=source.quality, private=source.private)


@dataclass(frozen=True)
class RequestDefaults:
    """A member's /settings: None where they have not chosen (the bot's default then applies)."""

    size: str | None = None
    quality: str | None = None
    count: int | None = None
    private: bool | None = None


def member_settings_get(*, discord_user_id: int) -> RequestDefaults:
    # Read on every /generate: one plain SELECT (the ORM's query building cost more CPU than the query itself).
    row = _select_one(
        f'SELECT "size", "quality", "count", "private" FROM "{MemberSettings._meta.db_table}" '
        'WHERE "discord_user_id" = %s',
        discord_user_id,
    )
    if row is None:
        return RequestDefaults()
    size, quality, count, private = row
    return RequestDefaults(
        size=size or None, quality=quality or None, count=count, private=None if private is None else bool(private)
    )


def _select_one(sql: str, *params: object) -> tuple | None:
    """The first row of a plain SELECT on the bot's hot path (names from the models, quoted as the ORM quotes them,
    the same SQL on SQLite and PostgreSQL), without the ORM's per-query CPU."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()


def member_settings_set(
    *,
    discord_user_id: int,
    size: str | None = None,
    quality: str | None = None,
    count: int | None = None,
    private: bool | None = None,
) -> RequestDefaults:
    """/settings: store the options given (others keep their stored value). Each is checked against what is on
    offer, so a stored default can always be priced (GenerationError otherwise, nothing written)."""
    current = member_settings_get(discord_user_id=discord_user_id)
    merged = RequestDefaults(
        size=size or current.size,
        quality=quality or current.quality,
        count=count if count is not None else current.count,
        private=private if private is not None else current.private,
    )
    generation_price(size=merged.size, quality=merged.quality, count=merged.count or 1)
    MemberSettings.objects.update_or_create(
        discord_user_id=discord_user_id,
        defaults={
            "size": merged.size or "",
            "quality": merged.quality or "",
            "count": merged.count,
            "private": merged.private,
        },
    )
    return merged


def generation_start(*, generation_id: int) -> bool:
    """Queued -> running. False when it is no longer queued (the sweep refunded it): do not generate then."""
    return bool(
        Generation.objects.filter(pk=generation_id, status=Generation.Status.QUEUED).update(
            status=Generation.Status.RUNNING, started_at=timezone.now()
        )
    )


def generation_prompt_for_owner(*, generation_id: int, discord_user_id: int) -> str:
    """The Edit button: the prompt the member will change. Only the requester may rerun a result."""
    row = (
        Generation.objects.filter(pk=generation_id, operation="generate")
        .values_list("prompt", "account__discord_user_id")
        .first()
    )
    if row is None:
        raise GenerationError("That image can no longer be changed.", reason="not_found")
    if row[1] != discord_user_id:
        raise GenerationError("Only the member who asked for this image can change it.", reason="not_owner")
    return row[0]


def generation_owner_id(*, generation_id: int) -> int | None:
    """The Discord user id of the member who asked for a generation (None if there is no such generation)."""
    return Generation.objects.filter(pk=generation_id).values_list("account__discord_user_id", flat=True).first()


def generation_deliver_begin(
    *, generation_id: int, owner: str, message_id: int | None, lease_margin: float, delivered_count: int = 1
) -> bool:
    """Running -> delivering, just before the image is uploaded to Discord. False: do not upload.

    Allowed only while the owner still holds the bot lease with `lease_margin` seconds to spare (more than the
    upload may take): another process settles this generation only after the owner's lease expired, and by then
    the upload is over, so asking Discord then gives the final answer. `delivered_count` is how many images the
    upload carries (the rest failed): recorded now so that whoever records the delivery refunds the right amount.
    """
    # One conditional UPDATE: the lease check and the transition commit together, with no read-then-write. Raw
    # SQL (the same on SQLite and PostgreSQL, names from the models), as vouchers.services does for the ledger: the
    # ORM spent more CPU building this statement than the database spent running it, once per image, on the GIL
    # that the bot's event loop needs.
    generation, process = Generation._meta.db_table, BotProcess._meta.db_table
    expires = connection.ops.adapt_datetimefield_value(timezone.now() + timedelta(seconds=lease_margin))
    with connection.cursor() as cursor:
        cursor.execute(
            f'UPDATE "{generation}" SET "status" = %s, "message_id" = %s, "delivered_count" = %s '
            'WHERE "id" = %s AND "status" = %s AND "count" >= %s AND "owner" IN '
            f'(SELECT "identity" FROM "{process}" WHERE "identity" = %s AND "active" = %s AND "expires_at" > %s)',
            [
                Generation.Status.DELIVERING.value,
                message_id,
                delivered_count,
                generation_id,
                Generation.Status.RUNNING.value,
                delivered_count,
                owner,
                True,
                expires,
            ],
        )
        return cursor.rowcount == 1


def generation_succeed(*, generation_id: int, message_id: int | None = None) -> bool:
    """Delivering -> succeeded: Discord has the image (it answered the upload, or was asked). The charge stands.

    When the upload carried fewer images than were asked for (`delivered_count` < `count`), the missing ones are
    refunded in the same transaction: one partial refund of the charge, `unit cost x missing`. So each image is
    charged as delivered, and the generation is settled once (the conditional UPDATE lets one caller win).

    False when it is not delivering (already recorded, or never began delivery). Idempotent, so the caller
    retries it freely on a database hiccup.
    """
    # One conditional UPDATE that also returns what the refund of missing images needs (no read after it): raw
    # SQL for the CPU, as in `generation_deliver_begin`.
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f'UPDATE "{Generation._meta.db_table}" SET "status" = %s, "delivered_at" = %s, "finished_at" = %s'
            + ("" if message_id is None else ', "message_id" = %s')
            + ' WHERE "id" = %s AND "status" = %s RETURNING "cost", "count", "delivered_count"',
            [
                Generation.Status.SUCCEEDED.value,
                now,
                now,
                *(() if message_id is None else (message_id,)),
                generation_id,
                Generation.Status.DELIVERING.value,
            ],
        )
        row = cursor.fetchone()
        if row is None:
            return False
        cost, count, delivered = row
        missing = count - (delivered or count)
        if missing > 0:
            charge_id = LedgerEntry.objects.values_list("pk", flat=True).get(
                generation_id=generation_id, kind=LedgerEntry.Kind.GENERATE
            )
            # The allowance first, then the credits: the lock order of the reservation (the member's day row, then
            # the account), so a refund and a reservation of the same member never wait on each other in a circle.
            guild_charge_give_back(generation_id=generation_id, images=missing)
            credits_refund(
                entry_id=charge_id,
                amount=cost // count * missing,
                memo=f"Image #{generation_id}: {plural(missing, 'image')} of {count} not delivered",
            )
    return True


def generation_fail_and_refund(*, generation_id: int, error: str, delivery_checked: bool = False) -> bool:
    """Give back a generation's credits because its image was not delivered. Idempotent.

    One transaction: a conditional UPDATE moves the generation from an undelivered status to `refunded` (only one
    caller can win it), then its charge is refunded. A delivering generation is refunded only with
    `delivery_checked=True`: the caller asked Discord and the image is not there. Returns True when this call
    refunded, False when the generation was already settled (or is delivering and unchecked): nothing changed.
    """
    statuses = Generation.IN_FLIGHT if delivery_checked else Generation.UNDELIVERED
    return _refund_where(Q(pk=generation_id, status__in=statuses), generation_id=generation_id, error=error)


def _refund_where(condition: Q, *, generation_id: int, error: str) -> bool:
    with transaction.atomic():
        claimed = Generation.objects.filter(condition).update(
            status=Generation.Status.REFUNDED, error=error[:MAX_ERROR_LENGTH], finished_at=timezone.now()
        )
        if not claimed:
            return False
        charge_id = LedgerEntry.objects.values_list("pk", flat=True).get(
            generation_id=generation_id, kind=LedgerEntry.Kind.GENERATE
        )
        guild_charge_give_back(generation_id=generation_id)  # before the credits: the reservation's lock order
        credits_refund(entry_id=charge_id, memo=f"Image #{generation_id} not delivered")
    return True


def _orphaned(*, identity: str, exclude_ids: Collection[int], own_older_than: timedelta | None) -> Q:
    """In flight, and nobody alive will settle it: its owner's lease expired (or it never had an owner); or it is
    this process's own but older than any request may take and not being worked on (`exclude_ids`)."""
    now = timezone.now()
    live_owners = BotProcess.objects.filter(expires_at__gte=now).values("identity")
    orphaned = ~Q(owner__in=live_owners)
    if identity and own_older_than is not None:
        orphaned |= Q(owner=identity, created_at__lt=now - own_older_than)
    return Q(status__in=Generation.IN_FLIGHT) & orphaned & ~Q(pk__in=list(exclude_ids))


def generations_refund_stale(
    *,
    identity: str = "",
    exclude_ids: Collection[int] = (),
    own_older_than: timedelta | None = None,
    error: str = INTERRUPTED_ERROR,
) -> list[int]:
    """Refund queued or running generations nobody alive will finish (see `_orphaned`), and return their ids.

    Called by the lease holder at start-up and by its periodic sweep. Delivering ones are not touched here: the
    caller asks Discord about each (`generations_delivering_orphaned`). Each refund is its own short transaction
    whose conditional UPDATE re-checks the condition, so a generation whose owner renewed meanwhile is left alone.
    """
    condition = _orphaned(identity=identity, exclude_ids=exclude_ids, own_older_than=own_older_than)
    undelivered = condition & Q(status__in=Generation.UNDELIVERED)
    ids = list(Generation.objects.filter(undelivered).order_by("pk").values_list("pk", flat=True)[:STALE_BATCH_SIZE])
    return [pk for pk in ids if _refund_where(undelivered & Q(pk=pk), generation_id=pk, error=error)]


@dataclass(frozen=True)
class DeliveryCheck:
    """A generation whose upload began but whose outcome was not recorded: ask Discord about this message."""

    generation_id: int
    channel_id: int | None
    message_id: int | None


def generations_delivering_orphaned(
    *, identity: str = "", exclude_ids: Collection[int] = (), own_older_than: timedelta | None = None
) -> list[DeliveryCheck]:
    """Delivering generations nobody alive will record (see `_orphaned`): settle each by asking Discord."""
    condition = _orphaned(identity=identity, exclude_ids=exclude_ids, own_older_than=own_older_than)
    rows = (
        Generation.objects.filter(condition & Q(status=Generation.Status.DELIVERING))
        .order_by("pk")
        .values_list("pk", "channel_id", "message_id")[:STALE_BATCH_SIZE]
    )
    return [DeliveryCheck(pk, channel_id, message_id) for pk, channel_id, message_id in rows]


# --- The bot lease -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LeaseState:
    held: bool  # this process holds the lease
    holder: str = ""  # the process that holds it, if another one
    holder_expires_at: datetime | None = None


def bot_process_register(*, identity: str, host: str, pid: int, lease_seconds: float) -> None:
    """Record a starting `runbot` process (stand-by until it acquires the lease), and forget processes gone for a
    week (a missing row counts as an expired lease, so their generations stay settleable)."""
    now = timezone.now()
    BotProcess.objects.filter(active=False, expires_at__lt=now - timedelta(days=PROCESS_RECORD_DAYS)).delete()
    BotProcess.objects.create(
        identity=identity, host=host[:255], pid=pid, heartbeat_at=now, expires_at=now + timedelta(seconds=lease_seconds)
    )


def bot_lease_acquire(*, identity: str, lease_seconds: float) -> LeaseState:
    """Heartbeat, and take the bot lease if nobody alive holds it. Safe under any number of racing processes:
    the partial unique constraint `one_active_bot_process` lets exactly one row be active."""
    now = timezone.now()
    with transaction.atomic():
        BotProcess.objects.filter(identity=identity).update(
            heartbeat_at=now, expires_at=now + timedelta(seconds=lease_seconds)
        )
        # A holder that stopped renewing is presumed dead: its generations become orphans once it is unseated.
        BotProcess.objects.filter(active=True, expires_at__lt=now).exclude(identity=identity).update(active=False)
        holder = BotProcess.objects.filter(active=True).values_list("identity", "expires_at").first()
        if holder is not None:
            return LeaseState(held=holder[0] == identity, holder=holder[0], holder_expires_at=holder[1])
        try:
            with transaction.atomic():
                taken = BotProcess.objects.filter(identity=identity, stopped_at__isnull=True).update(active=True)
        except IntegrityError:  # another process took it in the same instant
            return LeaseState(held=False)
        return LeaseState(held=bool(taken))


def bot_lease_renew(*, identity: str, lease_seconds: float) -> bool:
    """The holder's heartbeat. False when it no longer holds the lease (it was presumed dead and replaced): it
    must stop serving at once."""
    now = timezone.now()
    return bool(
        BotProcess.objects.filter(identity=identity, active=True).update(
            heartbeat_at=now, expires_at=now + timedelta(seconds=lease_seconds)
        )
    )


def bot_lease_release(*, identity: str) -> None:
    """A clean stop, once this process's own work is settled: the lease is free for a stand-by at once."""
    now = timezone.now()
    BotProcess.objects.filter(identity=identity).update(active=False, expires_at=now, stopped_at=now)


# --- Failed /redeem attempts ----------------------------------------------------------------------------------


def _redeem_failures_key(discord_user_id: int) -> str:
    return f"discordbot:redeem-failures:{discord_user_id}"


def redeem_rate_limit_check(*, discord_user_id: int) -> None:
    """Raise RedeemRateLimited when the member has used up their failed attempts for this window."""
    failures = cache.get(_redeem_failures_key(discord_user_id)) or 0
    if failures >= settings.REDEEM_MAX_FAILURES:
        minutes = max(1, settings.REDEEM_FAILURE_WINDOW_SECONDS // 60)
        raise RedeemRateLimited(
            f"Too many failed voucher attempts. Please wait up to {plural(minutes, 'minute')} and try again."
        )


def redeem_rate_limit_record_failure(*, discord_user_id: int) -> int:
    """Count one failed attempt; the window starts at the first failure. Returns the failures so far."""
    key = _redeem_failures_key(discord_user_id)
    window = settings.REDEEM_FAILURE_WINDOW_SECONDS
    cache.add(key, 0, timeout=window)
    try:
        return cache.incr(key)  # atomic in locmem and Redis, so concurrent failures all count
    except ValueError:  # the window expired between add() and incr()
        cache.set(key, 1, timeout=window)
        return 1


def voucher_redeem_limited(*, code: str, discord_user_id: int) -> Redemption:
    """/redeem: `voucher_redeem`, refused while the member is over their failed-attempt limit.

    Every refusal (malformed, unknown, void or already-redeemed code) counts, so codes cannot be guessed by
    trying many.
    """
    redeem_rate_limit_check(discord_user_id=discord_user_id)
    try:
        return voucher_redeem(code=code, discord_user_id=discord_user_id)
    except VoucherError:
        redeem_rate_limit_record_failure(discord_user_id=discord_user_id)
        raise
