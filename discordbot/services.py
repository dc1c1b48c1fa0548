"""The bot's business rules: reserving, settling and refunding generations, and limiting failed redeems.

Typed sync functions with keyword-only arguments; the cogs call them through `discordbot.bridge.run_service`.
Credits move only through `vouchers.services`, so each generation is one `generate` ledger debit and, if the
image is not delivered, exactly one `refund` (a unique constraint on `refund_of` backs "exactly").

A generation's life: `generation_reserve` (queued, charged) -> `generation_start` (running) -> either
`generation_succeed` once the image is posted in Discord, or `generation_fail_and_refund`. Every transition is a
conditional UPDATE on the status, so two callers (the request itself and the stale sweep) can never both settle
one generation. No transaction here is ever held open across a call to the image backend or to Discord.
(`failed` is not used: a failure is refunded at once, so it ends as `refunded`, with the reason in `error`.)
"""

from collections.abc import Collection
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from discordbot.errors import GenerationError, RedeemRateLimited
from discordbot.models import Generation
from discordbot.replies import plural
from vouchers.errors import InsufficientCredits, VoucherError
from vouchers.models import CreditAccount, LedgerEntry
from vouchers.selectors import account_balance
from vouchers.services import Redemption, credits_refund, credits_reserve, voucher_redeem

MAX_PROMPT_LENGTH = 1000
MAX_ERROR_LENGTH = 500
STALE_BATCH_SIZE = 500
INTERRUPTED_ERROR = "interrupted: the bot stopped before the image was delivered"


@dataclass(frozen=True)
class Reservation:
    """An accepted request: its generation, what it is for, and the member's balance right after the debit."""

    generation_id: int
    prompt: str
    size: str
    quality: str
    cost: int
    balance: int


def generation_price(*, size: str | None = None, quality: str | None = None) -> tuple[str, str, int]:
    """The (size, quality, cost) of a request, with the defaults filled in; GenerationError if not on offer."""
    costs: dict[str, dict[str, int]] = settings.GENERATION_COSTS
    size = size or next(iter(costs))
    quality = quality or settings.GENERATION_DEFAULT_QUALITY
    cost = costs.get(size, {}).get(quality)
    if type(cost) is not int or cost <= 0:
        raise GenerationError(f"{size} at {quality} quality is not on offer.", reason="invalid_options")
    return size, quality, cost


def _require_prompt(prompt: object) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise GenerationError("Describe the image you want in the prompt.", reason="invalid_prompt")
    prompt = prompt.strip()
    if len(prompt) > MAX_PROMPT_LENGTH:
        raise GenerationError(f"The prompt is too long (at most {MAX_PROMPT_LENGTH} characters).", "invalid_prompt")
    return prompt


def generation_reserve(
    *,
    discord_user_id: int,
    prompt: str,
    size: str | None = None,
    quality: str | None = None,
    model: str = "",
    interaction_id: int | None = None,
    channel_id: int | None = None,
) -> Reservation:
    """Accept a request: create its Generation and take its cost, in one short transaction.

    Refuses at once (InsufficientCredits, nothing written) when the balance is short, so a member is never
    queued for an image they cannot pay for. The debit is a conditional UPDATE, so any number of concurrent
    requests can never spend more than the balance.
    """
    prompt = _require_prompt(prompt)
    size, quality, cost = generation_price(size=size, quality=quality)
    account_id = CreditAccount.objects.filter(discord_user_id=discord_user_id).values_list("pk", flat=True).first()
    try:
        if account_id is None:
            raise InsufficientCredits()
        with transaction.atomic():
            generation = Generation.objects.create(
                account_id=account_id,
                prompt=prompt,
                size=size,
                quality=quality,
                model=model[:64],
                cost=cost,
                interaction_id=interaction_id,
                channel_id=channel_id,
            )
            credits_reserve(
                discord_user_id=discord_user_id,
                amount=cost,
                generation_id=generation.pk,
                memo=f"Image #{generation.pk}",
            )
            balance = CreditAccount.objects.values_list("balance", flat=True).get(pk=account_id)
    except InsufficientCredits:
        balance = account_balance(discord_user_id=discord_user_id)
        raise InsufficientCredits(
            f"This image costs {plural(cost)} and your balance is {plural(balance)}. "
            "Use /buy to get more, or /redeem a voucher."
        ) from None
    return Reservation(
        generation_id=generation.pk, prompt=prompt, size=size, quality=quality, cost=cost, balance=balance
    )


def generation_reserve_again(
    *,
    source_id: int,
    discord_user_id: int,
    model: str = "",
    interaction_id: int | None = None,
    channel_id: int | None = None,
) -> Reservation:
    """The Regenerate button: a new, separately charged generation with the same prompt and options."""
    source = Generation.objects.filter(pk=source_id).select_related("account").first()
    if source is None:
        raise GenerationError("That image can no longer be regenerated.", reason="not_found")
    if source.account.discord_user_id != discord_user_id:
        raise GenerationError(
            "Only the member who asked for this image can regenerate it. Use /generate for your own.",
            reason="not_owner",
        )
    return generation_reserve(
        discord_user_id=discord_user_id,
        prompt=source.prompt,
        size=source.size,
        quality=source.quality,
        model=model,
        interaction_id=interaction_id,
        channel_id=channel_id,
    )


def generation_start(*, generation_id: int) -> bool:
    """Queued -> running. False when it is no longer queued (the sweep refunded it): do not generate then."""
    return bool(
        Generation.objects.filter(pk=generation_id, status=Generation.Status.QUEUED).update(
            status=Generation.Status.RUNNING, started_at=timezone.now()
        )
    )


def generation_succeed(*, generation_id: int, message_id: int | None = None) -> bool:
    """Running -> succeeded. Call only once the image is posted: a member is never charged for an undelivered
    image. False when it had already been settled (refunded by the sweep)."""
    return bool(
        Generation.objects.filter(pk=generation_id, status=Generation.Status.RUNNING).update(
            status=Generation.Status.SUCCEEDED, message_id=message_id, finished_at=timezone.now()
        )
    )


def generation_fail_and_refund(*, generation_id: int, error: str) -> bool:
    """Give back a generation's credits because its image was not delivered. Idempotent.

    One transaction: a conditional UPDATE moves the generation from an in-flight status to `refunded` (only one
    caller can win it), then its charge is refunded. Returns True when this call refunded, False when the
    generation had already been settled (delivered or refunded) and nothing changed.
    """
    with transaction.atomic():
        claimed = Generation.objects.filter(pk=generation_id, status__in=Generation.IN_FLIGHT).update(
            status=Generation.Status.REFUNDED, error=error[:MAX_ERROR_LENGTH], finished_at=timezone.now()
        )
        if not claimed:
            return False
        charge_id = LedgerEntry.objects.values_list("pk", flat=True).get(
            generation_id=generation_id, kind=LedgerEntry.Kind.GENERATE
        )
        credits_refund(entry_id=charge_id, memo=f"Image #{generation_id} not delivered")
    return True


def generations_refund_stale(
    *, older_than: timedelta | None = None, exclude_ids: Collection[int] = (), error: str = INTERRUPTED_ERROR
) -> list[int]:
    """Refund generations left in flight, and return their ids.

    At start-up (`older_than=None`) everything in flight belonged to a process that died (one bot process per
    database; a sharded deployment must pass `older_than`). The periodic sweep passes `older_than` longer than
    any request can legitimately take (queue wait + backend timeout) and the ids its own process is working on.
    Each refund is its own short transaction.
    """
    stale = Generation.objects.filter(status__in=Generation.IN_FLIGHT).exclude(pk__in=list(exclude_ids))
    if older_than is not None:
        stale = stale.filter(created_at__lt=timezone.now() - older_than)
    ids = list(stale.order_by("pk").values_list("pk", flat=True)[:STALE_BATCH_SIZE])
    return [pk for pk in ids if generation_fail_and_refund(generation_id=pk, error=error)]


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
