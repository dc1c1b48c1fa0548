"""Every way credits move. Callers (views, webhook handlers, cogs, admin actions, commands) only call these.

Each balance change is one conditional UPDATE (`... WHERE balance >= amount`) followed by its ledger row, in one
short transaction: never read-then-write, never a network call inside. On SQLite the transaction takes the write
lock at BEGIN (IMMEDIATE), on PostgreSQL the UPDATE takes the row lock; either way concurrent callers queue up
instead of overwriting each other, and the CHECK constraint backs the rule that no balance goes negative.
"""

from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from vouchers.codes import normalize_code
from vouchers.errors import (
    AlreadyRefunded,
    InsufficientCredits,
    InvalidAccount,
    InvalidAmount,
    InvalidCode,
    RefundNotAllowed,
    VoucherAlreadyRedeemed,
    VoucherError,
    VoucherNotFound,
    VoucherVoid,
)
from vouchers.models import CreditAccount, LedgerEntry, Voucher

# Upper bound on any one movement: catches a slipped finger in the admin long before it matters.
MAX_CREDITS_PER_MOVEMENT = 1_000_000
MAX_MEMO_LENGTH = 200
_MAX_DISCORD_ID = 2**63 - 1


@dataclass(frozen=True)
class Redemption:
    voucher: Voucher
    credits: int
    balance: int


@dataclass(frozen=True)
class PaymentRefundOutcome:
    """What a refunded payment did to its voucher: voided it, clawed credits back, or nothing (repeat)."""

    voided: bool
    clawed_back: int
    already_handled: bool


def _require_amount(value: object) -> int:
    if type(value) is not int or not 0 < value <= MAX_CREDITS_PER_MOVEMENT:
        raise InvalidAmount(f"The amount must be a whole number of credits from 1 to {MAX_CREDITS_PER_MOVEMENT:,}.")
    return value


def _require_discord_id(value: object) -> int:
    if type(value) is not int or not 0 < value <= _MAX_DISCORD_ID:
        raise InvalidAccount()
    return value


def _require_memo(value: object, *, required: bool = False) -> str:
    if not isinstance(value, str):
        raise VoucherError("The memo must be text.")
    memo = value.strip()
    if required and not memo:
        raise VoucherError("A memo is required: say why, for the ledger.")
    if len(memo) > MAX_MEMO_LENGTH:
        raise VoucherError(f"The memo is too long (at most {MAX_MEMO_LENGTH} characters).")
    return memo


def _require_code(raw: object) -> str:
    code = normalize_code(raw) if isinstance(raw, str) else None
    if code is None:
        raise InvalidCode()
    return code


def account_get_or_create(*, discord_user_id: int) -> CreditAccount:
    """The member's account, created empty on first use."""
    _require_discord_id(discord_user_id)
    account, _ = CreditAccount.objects.get_or_create(discord_user_id=discord_user_id)
    return account


@transaction.atomic
def _ledger_move(
    *,
    account_id: int,
    delta: int,
    kind: str,
    memo: str = "",
    voucher: Voucher | None = None,
    generation_id: int | None = None,
    refund_of: LedgerEntry | None = None,
) -> LedgerEntry:
    """Apply `delta` to one account and record it, atomically. Refuses (writes nothing) if it would go negative."""
    accounts = CreditAccount.objects.filter(pk=account_id)
    if delta < 0:
        accounts = accounts.filter(balance__gte=-delta)
    if not accounts.update(balance=F("balance") + delta, updated_at=timezone.now()):
        raise InsufficientCredits()
    return LedgerEntry.objects.create(
        account_id=account_id,
        delta=delta,
        kind=kind,
        memo=memo,
        voucher=voucher,
        generation_id=generation_id,
        refund_of=refund_of,
    )


def voucher_issue(*, credits: int, note: str = "", order=None) -> Voucher:
    """Issue a new active voucher with a fresh unguessable code."""
    _require_amount(credits)
    note = _require_memo(note)
    # 80 random bits make a collision vanishingly rare; the unique constraint makes it harmless, so retry.
    for _ in range(3):
        try:
            with transaction.atomic():
                return Voucher.objects.create(credits=credits, note=note, order=order)
        except IntegrityError:
            if order is not None and Voucher.objects.filter(order=order).exists():
                raise
    raise VoucherError("Could not generate a unique voucher code; try again.")


def voucher_redeem(*, code: str, discord_user_id: int) -> Redemption:
    """Move a voucher's credits into the member's account. Exactly one of many racing redeemers wins."""
    code = _require_code(code)
    _require_discord_id(discord_user_id)
    with transaction.atomic():
        # Inside the transaction, so that a refused attempt (which raises below) leaves no empty account.
        account = account_get_or_create(discord_user_id=discord_user_id)
        # The claim itself: one conditional UPDATE. Whoever flips ACTIVE -> REDEEMED owns the credits.
        claimed = Voucher.objects.filter(code=code, status=Voucher.Status.ACTIVE).update(
            status=Voucher.Status.REDEEMED, redeemed_by=account, redeemed_at=timezone.now()
        )
        if claimed:
            voucher = Voucher.objects.get(code=code)
            entry = _ledger_move(
                account_id=account.pk,
                delta=voucher.credits,
                kind=LedgerEntry.Kind.REDEEM,
                voucher=voucher,
                memo=f"Redeemed {voucher.code}",
            )
            balance = CreditAccount.objects.values_list("balance", flat=True).get(pk=account.pk)
            return Redemption(voucher=voucher, credits=entry.delta, balance=balance)
        # Nothing was claimed; say why.
        voucher = Voucher.objects.filter(code=code).first()
        if voucher is None:
            raise VoucherNotFound()
        if voucher.status == Voucher.Status.REDEEMED:
            if voucher.redeemed_by_id == account.pk:
                raise VoucherAlreadyRedeemed("You already redeemed that voucher; its credits are in your balance.")
            raise VoucherAlreadyRedeemed()
        raise VoucherVoid()


def voucher_void(*, code: str, memo: str = "") -> Voucher:
    """Void an unredeemed voucher so it can never be redeemed."""
    code = _require_code(code)
    memo = _require_memo(memo)
    with transaction.atomic():
        updates: dict = {"status": Voucher.Status.VOID}
        if memo:
            updates["note"] = memo
        if Voucher.objects.filter(code=code, status=Voucher.Status.ACTIVE).update(**updates):
            return Voucher.objects.get(code=code)
    voucher = Voucher.objects.filter(code=code).first()
    if voucher is None:
        raise VoucherNotFound()
    if voucher.status == Voucher.Status.VOID:
        raise VoucherVoid("That voucher is already void.")
    raise VoucherAlreadyRedeemed("That voucher has been redeemed and can't be voided.")


def credits_reserve(
    *, discord_user_id: int, amount: int, generation_id: int | None = None, memo: str = ""
) -> LedgerEntry:
    """Take `amount` credits now for work about to be done; `credits_refund` gives them back if it fails."""
    _require_discord_id(discord_user_id)
    _require_amount(amount)
    memo = _require_memo(memo)
    account_id = CreditAccount.objects.filter(discord_user_id=discord_user_id).values_list("pk", flat=True).first()
    if account_id is None:
        raise InsufficientCredits("You have no credits yet. Use /buy or /redeem first.")
    return _ledger_move(
        account_id=account_id,
        delta=-amount,
        kind=LedgerEntry.Kind.GENERATE,
        generation_id=generation_id,
        memo=memo,
    )


def credits_refund(*, entry_id: int, memo: str = "") -> LedgerEntry:
    """Give back the credits of one reservation. At most once per reservation (a unique constraint)."""
    memo = _require_memo(memo)
    debit = LedgerEntry.objects.filter(pk=entry_id).first() if type(entry_id) is int else None
    if debit is None or debit.kind != LedgerEntry.Kind.GENERATE:
        raise RefundNotAllowed()
    try:
        return _ledger_move(
            account_id=debit.account_id,
            delta=-debit.delta,
            kind=LedgerEntry.Kind.REFUND,
            generation_id=debit.generation_id,
            refund_of=debit,
            memo=memo,
        )
    except IntegrityError:
        raise AlreadyRefunded() from None


def credits_grant(*, discord_user_id: int, amount: int, memo: str) -> LedgerEntry:
    """An operator's gift of credits (support, goodwill). The memo says why, in the ledger."""
    _require_amount(amount)
    memo = _require_memo(memo, required=True)
    account = account_get_or_create(discord_user_id=discord_user_id)
    return _ledger_move(account_id=account.pk, delta=amount, kind=LedgerEntry.Kind.GRANT, memo=memo)


def voucher_payment_refunded(*, voucher_id: int, memo: str = "") -> PaymentRefundOutcome:
    """The payment behind a voucher was refunded: void it if unredeemed, else claw back what is left.

    Idempotent: `refunded_at` is claimed by one conditional UPDATE, so a redelivered refund does nothing.
    Credits already spent on images are not clawed back below zero; the balance only drops to 0.
    """
    if type(voucher_id) is not int:  # "1", 1.0 or True would otherwise match voucher #1
        raise VoucherNotFound()
    memo = _require_memo(memo) or "Payment refunded"
    with transaction.atomic():
        if not Voucher.objects.filter(pk=voucher_id, refunded_at__isnull=True).update(refunded_at=timezone.now()):
            if not Voucher.objects.filter(pk=voucher_id).exists():
                raise VoucherNotFound()
            return PaymentRefundOutcome(voided=False, clawed_back=0, already_handled=True)
        if Voucher.objects.filter(pk=voucher_id, status=Voucher.Status.ACTIVE).update(
            status=Voucher.Status.VOID, note=memo
        ):
            return PaymentRefundOutcome(voided=True, clawed_back=0, already_handled=False)
        voucher = Voucher.objects.get(pk=voucher_id)
        if voucher.status != Voucher.Status.REDEEMED:  # voided earlier by an operator
            return PaymentRefundOutcome(voided=False, clawed_back=0, already_handled=False)
        # We hold the write lock (SQLite IMMEDIATE) or take the row lock (PostgreSQL), so the balance read
        # here cannot change before the conditional UPDATE in _ledger_move.
        balance = (
            CreditAccount.objects.select_for_update().values_list("balance", flat=True).get(pk=voucher.redeemed_by_id)
        )
        take = min(balance, voucher.credits)
        if take:
            _ledger_move(
                account_id=voucher.redeemed_by_id,
                delta=-take,
                kind=LedgerEntry.Kind.CLAWBACK,
                voucher=voucher,
                memo=memo,
            )
        return PaymentRefundOutcome(voided=False, clawed_back=take, already_handled=False)
