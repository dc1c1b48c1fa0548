"""Every way credits move. Callers (views, webhook handlers, cogs, admin actions, commands) only call these.

Each balance change is one conditional UPDATE (`... WHERE balance >= amount`) followed by its ledger row, in one
short transaction: never read-then-write, never a network call inside. On SQLite the transaction takes the write
lock at BEGIN (IMMEDIATE), on PostgreSQL the UPDATE takes the row lock; either way concurrent callers queue up
instead of overwriting each other, and the CHECK constraint backs the rule that no balance goes negative.

Credits that enter an account (`credits_refund`, `credits_grant`, `voucher_redeem`, a returned clawback) pay the
account's debt first (`owed`, what a refund or chargeback could not take back at once), as `repay` ledger rows in
the same transaction; see `vouchers.models` for the whole model. The lock order is always voucher, then account
(and, for the shop, order first), so two transactions never wait on each other in a circle.
"""

from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.db.models import F, Sum
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
from vouchers.models import Clawback, CreditAccount, LedgerEntry, Voucher

# Upper bound on any one movement: catches a slipped finger in the admin long before it matters.
MAX_CREDITS_PER_MOVEMENT = 1_000_000
MAX_MEMO_LENGTH = 200
_MAX_DISCORD_ID = 2**63 - 1


@dataclass(frozen=True)
class Redemption:
    voucher: Voucher
    credits: int  # the voucher's credits, as credited by its `redeem` row
    balance: int  # the balance after the redeem (and after any clawback and debt repayment below)
    clawed_back: int = 0  # held clawbacks of this voucher (a partial refund before it was redeemed)
    debt_repaid: int = 0  # paid towards what earlier clawbacks could not take


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
    clawback: Clawback | None = None,
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
        clawback=clawback,
    )


def _repay_debt(*, account_id: int, up_to: int) -> int:
    """Pay the account's debt from credits that just arrived (at most `up_to`); returns what was repaid.

    Called inside the transaction whose UPDATE added those credits: that UPDATE holds the account row's lock
    (PostgreSQL) or the database write lock (SQLite IMMEDIATE), so the `owed` read here cannot change before the
    guarded UPDATE below, which re-checks both counters anyway.
    """
    owed = CreditAccount.objects.values_list("owed", flat=True).get(pk=account_id)
    repaid = min(owed, up_to)
    if repaid <= 0:
        return 0
    updated = CreditAccount.objects.filter(pk=account_id, owed__gte=repaid, balance__gte=repaid).update(
        owed=F("owed") - repaid, balance=F("balance") - repaid, updated_at=timezone.now()
    )
    if updated != 1:  # cannot happen while the lock is held; refuse rather than write a wrong row
        raise RuntimeError(f"Account {account_id} changed while its debt was being repaid.")
    LedgerEntry.objects.create(
        account_id=account_id, delta=-repaid, kind=LedgerEntry.Kind.REPAY, memo="Owed credits repaid"
    )
    return repaid


@transaction.atomic
def _credit_in(*, account_id: int, amount: int, kind: str, **links) -> LedgerEntry:
    """Every way credits enter an account: the positive row, then the debt paid first from them."""
    entry = _ledger_move(account_id=account_id, delta=amount, kind=kind, **links)
    _repay_debt(account_id=account_id, up_to=amount)
    return entry


MAX_NAME_LENGTH = 100


def account_name_record(*, discord_user_id: int, name: str) -> None:
    """Remember the member's Discord name for operators: one UPDATE, a write only when it changed.

    Never creates an account (a name alone is not worth a row). The name is kept to one printable line.
    """
    _require_discord_id(discord_user_id)
    if not isinstance(name, str):
        raise VoucherError("A name must be text.")
    name = " ".join("".join(ch for ch in name if ch.isprintable() or ch.isspace()).split())[:MAX_NAME_LENGTH]
    if not name:
        return
    CreditAccount.objects.filter(discord_user_id=discord_user_id).exclude(discord_name=name).update(discord_name=name)


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
    return _voucher_redeem_into(code=code, account_get=lambda: account_get_or_create(discord_user_id=discord_user_id))


def _voucher_redeem_into(*, code: str, account_get) -> Redemption:
    with transaction.atomic():
        # Inside the transaction, so that a refused attempt (which raises below) leaves no empty account.
        account = account_get()
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
            # A partial refund that came while the voucher was unredeemed is taken now, from these credits;
            # the claim above holds the voucher row, so no clawback of it can be added or returned meanwhile.
            held = 0
            for clawback in Clawback.objects.filter(voucher=voucher, status=Clawback.Status.HELD, voided=False):
                _clawback_take(clawback=clawback, account_id=account.pk)
                held += clawback.credits
            repaid = _repay_debt(account_id=account.pk, up_to=voucher.credits - held)
            balance = CreditAccount.objects.values_list("balance", flat=True).get(pk=account.pk)
            return Redemption(
                voucher=voucher, credits=entry.delta, balance=balance, clawed_back=held, debt_repaid=repaid
            )
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


def credits_refund(*, entry_id: int, memo: str = "", amount: int | None = None) -> LedgerEntry:
    """Give back the credits of one reservation. At most once per reservation (a unique constraint).

    `amount` (default: all of it) gives back part of it, for a request of several images of which only some were
    delivered; it must be positive and at most the charge. Whoever refunds part knows what the rest paid for
    (the bot's audit checks the amount against the generation's undelivered images).
    """
    memo = _require_memo(memo)
    debit = LedgerEntry.objects.filter(pk=entry_id).first() if type(entry_id) is int else None
    if debit is None or debit.kind != LedgerEntry.Kind.GENERATE:
        raise RefundNotAllowed()
    if amount is not None and (type(amount) is not int or not 0 < amount <= -debit.delta):
        raise RefundNotAllowed()
    try:
        # Pays any debt first: credits reserved when a clawback came are exactly what it could not take then.
        return _credit_in(
            account_id=debit.account_id,
            amount=-debit.delta if amount is None else amount,
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
    return _credit_in(account_id=account.pk, amount=amount, kind=LedgerEntry.Kind.GRANT, memo=memo)


def credits_debit(*, discord_user_id: int, amount: int, memo: str) -> LedgerEntry:
    """An operator takes credits back (a mistaken grant, abuse). Never below zero; never creates a debt."""
    _require_discord_id(discord_user_id)
    _require_amount(amount)
    memo = _require_memo(memo, required=True)
    account_id = CreditAccount.objects.filter(discord_user_id=discord_user_id).values_list("pk", flat=True).first()
    if account_id is None:
        raise InsufficientCredits("That member has no credits.")
    try:
        return _ledger_move(account_id=account_id, delta=-amount, kind=LedgerEntry.Kind.DEBIT, memo=memo)
    except InsufficientCredits:
        raise InsufficientCredits("That member's balance is smaller than that.") from None


# --- Clawbacks: what a refunded or disputed payment bought, taken back ------------------------------------


def _require_cause(value: object) -> str:
    if not isinstance(value, str) or not 0 < len(value.strip()) <= 120:
        raise VoucherError("A clawback needs a cause (for example the Stripe refund id), at most 120 characters.")
    return value.strip()


def _clawback_take(*, clawback: Clawback, account_id: int) -> None:
    """Take a clawback from an account: what is spendable now, the rest as debt. Inside the caller's transaction.

    The account row is locked first (PostgreSQL; SQLite holds the write lock already), so the balance read here
    is the one the guarded UPDATE sees.
    """
    balance = CreditAccount.objects.select_for_update().values_list("balance", flat=True).get(pk=account_id)
    take = min(balance, clawback.credits)
    owed = clawback.credits - take
    updated = CreditAccount.objects.filter(pk=account_id, balance__gte=take).update(
        balance=F("balance") - take, owed=F("owed") + owed, updated_at=timezone.now()
    )
    if updated != 1:
        raise RuntimeError(f"Account {account_id} changed while a clawback was being taken.")
    now = timezone.now()
    Clawback.objects.filter(pk=clawback.pk).update(
        status=Clawback.Status.TAKEN, account_id=account_id, taken=take, owed=owed, taken_at=now
    )
    if take:
        LedgerEntry.objects.create(
            account_id=account_id,
            delta=-take,
            kind=LedgerEntry.Kind.CLAWBACK,
            voucher_id=clawback.voucher_id,
            clawback=clawback,
            memo=clawback.memo,
        )
    clawback.refresh_from_db()


def voucher_claw_back(*, voucher_id: int, credits: int, cause: str, memo: str = "") -> Clawback | None:
    """Take back up to `credits` of what a voucher bought, once per `cause`; returns the record (None: nothing left).

    Never more than the voucher is worth over all its clawbacks still in force. An unredeemed voucher is voided
    when the clawback claims all that is left of it, else the clawback is held and taken when it is redeemed.
    A redeemed voucher's clawback takes the redeemer's balance and records the rest as owed (see the models).
    """
    if type(voucher_id) is not int:  # "1", 1.0 or True would otherwise match voucher #1
        raise VoucherNotFound()
    _require_amount(credits)
    cause = _require_cause(cause)
    memo = _require_memo(memo) or "Payment refunded or disputed"
    with transaction.atomic():
        # The voucher row's lock serialises everything done to this voucher (redeem, clawbacks, returns).
        voucher = Voucher.objects.select_for_update().filter(pk=voucher_id).first()
        if voucher is None:
            raise VoucherNotFound()
        existing = Clawback.objects.filter(cause=cause).first()
        if existing is not None:
            if existing.voucher_id != voucher_id:
                raise VoucherError("That cause already took back credits from another voucher.")
            return existing
        in_force = (
            Clawback.objects.filter(voucher=voucher)
            .exclude(status=Clawback.Status.RETURNED)
            .aggregate(total=Sum("credits"))["total"]
            or 0
        )
        credits = min(credits, voucher.credits - in_force)
        if credits <= 0:
            return None
        Voucher.objects.filter(pk=voucher_id, refunded_at__isnull=True).update(refunded_at=timezone.now())
        voided = voucher.status == Voucher.Status.ACTIVE and credits == voucher.credits - in_force
        clawback = Clawback.objects.create(
            voucher=voucher, cause=cause, credits=credits, status=Clawback.Status.HELD, voided=voided, memo=memo
        )
        if voided:
            Voucher.objects.filter(pk=voucher_id, status=Voucher.Status.ACTIVE).update(status=Voucher.Status.VOID)
        elif voucher.status == Voucher.Status.REDEEMED:
            _clawback_take(clawback=clawback, account_id=voucher.redeemed_by_id)
        return clawback


def voucher_claw_back_return(*, cause: str, memo: str = "") -> Clawback | None:
    """Give back what the clawback of `cause` took (a dispute won, a refund that failed). Once; None if none.

    A voided voucher becomes redeemable again; a held clawback is simply dropped; a taken one cancels what is
    still owed of it and restores the rest as credits, which (like any credit arriving) pay other debt first.
    """
    cause = _require_cause(cause)
    memo = _require_memo(memo) or "Clawback given back"
    with transaction.atomic():
        voucher_id = Clawback.objects.filter(cause=cause).values_list("voucher_id", flat=True).first()
        if voucher_id is None:
            return None
        Voucher.objects.select_for_update().filter(pk=voucher_id).first()  # the same lock order as claw_back
        clawback = Clawback.objects.get(cause=cause)
        if clawback.status == Clawback.Status.RETURNED:
            return clawback
        now = timezone.now()
        if clawback.status == Clawback.Status.HELD:
            if clawback.voided:
                Voucher.objects.filter(pk=voucher_id, status=Voucher.Status.VOID).update(status=Voucher.Status.ACTIVE)
            Clawback.objects.filter(pk=clawback.pk).update(status=Clawback.Status.RETURNED, returned_at=now)
        else:
            account_id = clawback.account_id
            owed_now = CreditAccount.objects.select_for_update().values_list("owed", flat=True).get(pk=account_id)
            cancel = min(clawback.owed, owed_now)
            restore = clawback.taken + clawback.owed - cancel
            if cancel:
                updated = CreditAccount.objects.filter(pk=account_id, owed__gte=cancel).update(
                    owed=F("owed") - cancel, updated_at=now
                )
                if updated != 1:
                    raise RuntimeError(f"Account {account_id} changed while a clawback was being returned.")
            Clawback.objects.filter(pk=clawback.pk).update(
                status=Clawback.Status.RETURNED, returned_at=now, restored=restore, debt_cancelled=cancel
            )
            if restore:
                _credit_in(
                    account_id=account_id,
                    amount=restore,
                    kind=LedgerEntry.Kind.RESTORE,
                    voucher=clawback.voucher,
                    clawback=clawback,
                    memo=memo,
                )
        clawback.refresh_from_db()
        return clawback


# --- Server wallets: a Discord server's own account, funded by its managers ----------------------------------


def server_account_get_or_create(*, discord_guild_id: int, name: str = "") -> CreditAccount:
    """The server's wallet (a `server` account), created empty on first use; `name` is remembered for operators."""
    _require_discord_id(discord_guild_id)
    account, _ = CreditAccount.objects.get_or_create(
        discord_guild_id=discord_guild_id, defaults={"kind": CreditAccount.Kind.SERVER}
    )
    name = (
        " ".join("".join(ch for ch in name if ch.isprintable()).split())[:MAX_NAME_LENGTH]
        if isinstance(name, str)
        else ""
    )
    if name and account.discord_name != name:
        CreditAccount.objects.filter(pk=account.pk).update(discord_name=name)
        account.discord_name = name
    return account


def server_voucher_redeem(*, code: str, discord_guild_id: int, name: str = "") -> Redemption:
    """Move a voucher's credits into a server's wallet (`/server redeem`, or a server-bound `/buy` order)."""
    code = _require_code(code)
    _require_discord_id(discord_guild_id)
    return _voucher_redeem_into(
        code=code, account_get=lambda: server_account_get_or_create(discord_guild_id=discord_guild_id, name=name)
    )


def server_credits_reserve(
    *, discord_guild_id: int, amount: int, generation_id: int | None = None, memo: str = ""
) -> LedgerEntry:
    """`credits_reserve` from a server's wallet: one conditional debit; InsufficientCredits (nothing written) if
    the wallet is short or does not exist. `credits_refund` gives it back to the wallet, like any charge."""
    _require_discord_id(discord_guild_id)
    _require_amount(amount)
    memo = _require_memo(memo)
    account_id = CreditAccount.objects.filter(discord_guild_id=discord_guild_id).values_list("pk", flat=True).first()
    if account_id is None:
        raise InsufficientCredits("This server's wallet is empty.")
    return _ledger_move(
        account_id=account_id, delta=-amount, kind=LedgerEntry.Kind.GENERATE, generation_id=generation_id, memo=memo
    )
