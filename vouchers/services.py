"""Every way credits move. Callers (views, webhook handlers, cogs, admin actions, commands) only call these.

Each balance change is one conditional UPDATE (`... WHERE balance >= amount`) followed by its ledger row, in one
short transaction: never read-then-write, never a network call inside. On SQLite the transaction takes the write
lock at BEGIN (IMMEDIATE), on PostgreSQL the UPDATE takes the row lock; either way concurrent callers queue up
instead of overwriting each other, and the CHECK constraint backs the rule that no balance goes negative.

The hot paths (a debit, a refund, a redeem) are written as the few statements the rules need and no more: the
conditional `UPDATE ... RETURNING` is also the lookup (no read before it), a refund is one `INSERT ... SELECT`
from the charge it refunds, and each runs in one transaction without savepoints (`atomic(savepoint=False)`:
inside a caller's transaction a refusal that wrote nothing is raised after the block, so the caller's
transaction stays usable; a failure after a write dooms the caller's transaction rather than leave half of it).
Reads happen only on the paths that refuse, or when the account owes credits.

Credits that enter an account (`credits_refund`, `credits_grant`, `voucher_redeem`, a returned clawback) pay the
account's debt first (`owed`, what a refund or chargeback could not take back at once), as `repay` ledger rows in
the same transaction; see `vouchers.models` for the whole model. The lock order is always voucher, then account
(and, for the shop, order first), so two transactions never wait on each other in a circle.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from django.db import IntegrityError, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
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


# --- The statements behind every movement ------------------------------------------------------------------


@dataclass(frozen=True)
class _Statements:
    debit: str  # params: amount, updated_at, discord_user_id, amount -> (account id,)
    debit_server: str  # the same with discord_guild_id: a server's wallet
    credit_if_no_debt: str  # params: amount, updated_at, account id -> (balance,)
    owed_locked: str  # params: account id -> (owed,)
    credit_and_repay: str  # params: amount - repaid, repaid, updated_at, account id, repaid -> (balance,)
    entry: str  # params: account, delta, kind, voucher, generation, refund_of, clawback, memo, created_at -> (id,)
    refund_all: str  # params: kind, memo, created_at, charge id, generate kind, charge id -> (id, account, delta, gen)
    refund_part: str  # params: amount, kind, memo, created_at, charge id, generate kind, amount, charge id -> same
    claim: str  # params: redeemed_at, discord_user_id, code, discord_user_id -> voucher columns
    claim_server: str  # the same with discord_guild_id: redeemed into a server's wallet


@cache
def _statements(vendor: str, for_update: bool, placeholder: str) -> _Statements:
    """The SQL of the hot paths, the same on SQLite (3.35+) and PostgreSQL; names come from the models."""
    if placeholder != "%s":
        plain = _statements(vendor, for_update, "%s")
        return _Statements(
            **{name: getattr(plain, name).replace("%s", placeholder) for name in plain.__dataclass_fields__}
        )
    del vendor  # part of the cache key only
    account = CreditAccount._meta.db_table
    ledger = LedgerEntry._meta.db_table
    voucher = Voucher._meta.db_table
    entry_columns = "account_id, delta, kind, voucher_id, generation_id, refund_of_id, clawback_id, memo, created_at"
    refund = (
        f"INSERT INTO {ledger} ({entry_columns}) "
        "SELECT account_id, {delta}, %s, NULL, generation_id, id, NULL, %s, %s "
        f"FROM {ledger} WHERE id = %s AND kind = %s{{bound}} "
        # The unique refund_of answers a race; this makes the usual "already refunded" a refusal, not an error.
        f"AND NOT EXISTS (SELECT 1 FROM {ledger} WHERE refund_of_id = %s) "
        "RETURNING id, account_id, delta, generation_id"
    )
    # Whose account: a member's (by discord_user_id) or a server's wallet (by discord_guild_id).
    debit = (
        f"UPDATE {account} SET balance = balance - %s, updated_at = %s "
        "WHERE {owner} = %s AND balance >= %s RETURNING id"
    )
    claim = (
        f"UPDATE {voucher} SET status = %s, redeemed_at = %s, "
        f"redeemed_by_id = (SELECT id FROM {account} WHERE {{owner}} = %s) "
        f"WHERE code = %s AND status = %s AND EXISTS (SELECT 1 FROM {account} WHERE {{owner}} = %s) "
        "RETURNING id, credits, redeemed_by_id, order_id, refunded_at, note, created_at"
    )
    return _Statements(
        debit=debit.format(owner="discord_user_id"),
        debit_server=debit.format(owner="discord_guild_id"),
        credit_if_no_debt=(
            f"UPDATE {account} SET balance = balance + %s, updated_at = %s WHERE id = %s AND owed = 0 RETURNING balance"
        ),
        owed_locked=f"SELECT owed FROM {account} WHERE id = %s" + (" FOR UPDATE" if for_update else ""),
        credit_and_repay=(
            f"UPDATE {account} SET balance = balance + %s, owed = owed - %s, updated_at = %s "
            "WHERE id = %s AND owed >= %s RETURNING balance"
        ),
        entry=f"INSERT INTO {ledger} ({entry_columns}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        refund_all=refund.replace("{delta}", "-delta").replace("{bound}", ""),
        refund_part=refund.replace("{delta}", "%s").replace("{bound}", " AND %s <= -delta"),
        claim=claim.format(owner="discord_user_id"),
        claim_server=claim.format(owner="discord_guild_id"),
    )


@contextmanager
def _cursor(connection: BaseDatabaseWrapper) -> Iterator[tuple[Any, _Statements]]:
    """A cursor for the hot paths' statements, and the statements, inside the caller's atomic block.

    Django's cursor wrapper costs about as much as a statement itself on SQLite (some 30 us each), so the
    statements go straight to the driver's cursor, in its placeholder style, with Django's error translation
    (an IntegrityError is still `django.db.IntegrityError`). While something watches statements (query logging:
    DEBUG or CaptureQueriesContext; an `execute_wrapper`) they go through Django's cursor instead, to be seen:
    the same statements either way.
    """
    for_update = connection.features.has_select_for_update
    if connection.queries_logged or connection.execute_wrappers:
        with connection.cursor() as cursor:
            yield cursor, _statements(connection.vendor, for_update, "%s")
        return
    connection.ensure_connection()
    placeholder = "?" if connection.Database.paramstyle == "qmark" else "%s"
    cursor = connection.connection.cursor()
    try:
        with connection.wrap_database_errors:
            yield cursor, _statements(connection.vendor, for_update, placeholder)
    finally:
        cursor.close()


def _db_datetime(connection: BaseDatabaseWrapper, value: object) -> datetime | None:
    """A datetime column as read by raw SQL, as the ORM would give it (SQLite returns text)."""
    convert = getattr(connection.ops, "convert_datetimefield_value", None)
    return convert(value, None, connection) if convert and value is not None else value


def _entry(
    connection: BaseDatabaseWrapper,
    pk: int,
    *,
    account_id: int,
    delta: int,
    kind: str,
    created_at: datetime,
    memo: str = "",
    voucher_id: int | None = None,
    generation_id: int | None = None,
    refund_of_id: int | None = None,
    clawback_id: int | None = None,
) -> LedgerEntry:
    """The LedgerEntry a raw INSERT wrote, without reading it back (built as the ORM builds a fetched row)."""
    values = (pk, account_id, delta, kind, voucher_id, generation_id, refund_of_id, clawback_id, memo, created_at)
    return LedgerEntry.from_db(connection.alias, _ENTRY_FIELDS, values)


_ENTRY_FIELDS = (
    "id", "account_id", "delta", "kind", "voucher_id", "generation_id", "refund_of_id", "clawback_id", "memo",
    "created_at",
)  # fmt: skip


def _insert_entry(
    cursor,
    sql: _Statements,
    *,
    account_id: int,
    delta: int,
    kind: str,
    at: object,
    memo: str = "",
    voucher_id: int | None = None,
    generation_id: int | None = None,
    refund_of_id: int | None = None,
    clawback_id: int | None = None,
) -> int:
    cursor.execute(sql.entry, [account_id, delta, kind, voucher_id, generation_id, refund_of_id, clawback_id, memo, at])
    return cursor.fetchone()[0]


def _credit(cursor, sql: _Statements, *, account_id: int, amount: int, at: object, repay_up_to: int) -> tuple[int, int]:
    """Add `amount` to the balance, paying up to `repay_up_to` of the account's debt from it; (balance, repaid).

    Usually the account owes nothing and this is one guarded UPDATE. When it owes, the row is locked
    (PostgreSQL; SQLite holds the write lock already) and read, so the repayment is exact; the caller writes the
    `repay` row after its own positive row.
    """
    if repay_up_to > 0:
        cursor.execute(sql.credit_if_no_debt, [amount, at, account_id])
        row = cursor.fetchone()
        if row is not None:
            return row[0], 0
        cursor.execute(sql.owed_locked, [account_id])
        owed = cursor.fetchone()[0]
        repaid = min(owed, repay_up_to)
    else:
        repaid = 0
    cursor.execute(sql.credit_and_repay, [amount - repaid, repaid, at, account_id, repaid])
    row = cursor.fetchone()
    if row is None:  # cannot happen while the lock is held; refuse rather than write a wrong row
        raise RuntimeError(f"Account {account_id} changed while credits were being added.")
    return row[0], repaid


def _credit_in(*, account_id: int, amount: int, kind: str, memo: str = "", **links) -> LedgerEntry:
    """Every other way credits enter an account (a grant, a restore): the positive row, then the debt paid first.

    Runs in one transaction: the caller's, or its own.
    """
    connection = transaction.get_connection()
    now = timezone.now()
    at = connection.ops.adapt_datetimefield_value(now)
    with transaction.atomic(savepoint=False), _cursor(connection) as (cursor, sql):
        _, repaid = _credit(cursor, sql, account_id=account_id, amount=amount, at=at, repay_up_to=amount)
        pk = _insert_entry(cursor, sql, account_id=account_id, delta=amount, kind=kind, at=at, memo=memo, **links)
        if repaid:
            _insert_entry(
                cursor, sql, account_id=account_id, delta=-repaid, kind=LedgerEntry.Kind.REPAY, at=at, memo=_REPAY_MEMO
            )
    return _entry(connection, pk, account_id=account_id, delta=amount, kind=kind, created_at=now, memo=memo, **links)


_REPAY_MEMO = "Owed credits repaid"


def _debit(
    *, discord_user_id: int, amount: int, kind: str, memo: str, generation_id: int | None = None, server: bool = False
):
    """Take `amount` from the member's account (`server`: the server's wallet whose id `discord_user_id` then is):
    one guarded `UPDATE ... RETURNING id`, then its ledger row.

    Returns the entry, or None when nothing was taken (no account, or too small a balance); nothing is written
    then, and the caller says why.
    """
    connection = transaction.get_connection()
    now = timezone.now()
    at = connection.ops.adapt_datetimefield_value(now)
    with transaction.atomic(savepoint=False), _cursor(connection) as (cursor, sql):
        cursor.execute(sql.debit_server if server else sql.debit, [amount, at, discord_user_id, amount])
        row = cursor.fetchone()
        if row is None:
            return None
        account_id = row[0]
        pk = _insert_entry(
            cursor, sql, account_id=account_id, delta=-amount, kind=kind, at=at, memo=memo, generation_id=generation_id
        )
    return _entry(
        connection,
        pk,
        account_id=account_id,
        delta=-amount,
        kind=kind,
        created_at=now,
        memo=memo,
        generation_id=generation_id,
    )


def _repay_debt(*, account_id: int, up_to: int) -> int:
    """Pay the account's debt from credits already added in this transaction (at most `up_to`); what was repaid.

    Only `voucher_redeem` needs it apart from `_credit`, after taking a held clawback from the new credits.
    """
    connection = transaction.get_connection()
    at = connection.ops.adapt_datetimefield_value(timezone.now())
    with _cursor(connection) as (cursor, sql):
        _, repaid = _credit(cursor, sql, account_id=account_id, amount=0, at=at, repay_up_to=up_to)
        if repaid:
            _insert_entry(
                cursor, sql, account_id=account_id, delta=-repaid, kind=LedgerEntry.Kind.REPAY, at=at, memo=_REPAY_MEMO
            )
    return repaid


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
    """Move a voucher's credits into the member's account. Exactly one of many racing redeemers wins.

    For a member who has an account, three statements: the claim (which also finds the account), the credit, the
    ledger row. A new member's first claim finds no account: it is created and the claim tried once more.
    """
    code = _require_code(code)
    _require_discord_id(discord_user_id)
    return _voucher_redeem_into(code=code, owner_id=discord_user_id, server=False)


def _voucher_redeem_into(*, code: str, owner_id: int, server: bool) -> Redemption:
    """The redeem into a member's account (`owner_id` a Discord user id) or a server's wallet (a server id)."""
    connection = transaction.get_connection()
    now = timezone.now()
    at = connection.ops.adapt_datetimefield_value(now)
    claim = [Voucher.Status.REDEEMED, at, owner_id, code, Voucher.Status.ACTIVE, owner_id]
    # A savepoint only when nested in a caller's transaction: a refusal may follow the account created here.
    with transaction.atomic(), _cursor(connection) as (cursor, sql):
        # The claim itself: one conditional UPDATE. Whoever flips ACTIVE -> REDEEMED owns the credits.
        cursor.execute(sql.claim_server if server else sql.claim, claim)
        row = cursor.fetchone()
        if row is None:
            # Inside the transaction, so that a refused attempt (which raises below) leaves no empty account.
            # Through the ORM (INSERT OR IGNORE / ON CONFLICT DO NOTHING), so that every column gets its default.
            new = (
                CreditAccount(kind=CreditAccount.Kind.SERVER, discord_guild_id=owner_id)
                if server
                else CreditAccount(discord_user_id=owner_id)
            )
            CreditAccount.objects.bulk_create([new], ignore_conflicts=True)
            cursor.execute(sql.claim_server if server else sql.claim, claim)
            row = cursor.fetchone()
        if row is None:
            _refuse_redeem(code=code, owner_id=owner_id, server=server)
        voucher_id, credits, account_id, order_id, refunded_at, note, created_at = row
        voucher = Voucher(
            id=voucher_id,
            code=code,
            credits=credits,
            status=Voucher.Status.REDEEMED,
            order_id=order_id,
            redeemed_by_id=account_id,
            redeemed_at=now,
            refunded_at=_db_datetime(connection, refunded_at),
            note=note,
            created_at=_db_datetime(connection, created_at),
        )
        voucher._state.adding = False
        voucher._state.db = connection.alias
        memo = f"Redeemed {code}"
        if refunded_at is None:
            # No clawback was ever made of this voucher (the first one sets refunded_at): credit, pay debt first.
            balance, repaid = _credit(cursor, sql, account_id=account_id, amount=credits, at=at, repay_up_to=credits)
            _insert_entry(
                cursor,
                sql,
                account_id=account_id,
                delta=credits,
                kind=LedgerEntry.Kind.REDEEM,
                at=at,
                memo=memo,
                voucher_id=voucher_id,
            )
            if repaid:
                _insert_entry(
                    cursor,
                    sql,
                    account_id=account_id,
                    delta=-repaid,
                    kind=LedgerEntry.Kind.REPAY,
                    at=at,
                    memo=_REPAY_MEMO,
                )
            return Redemption(voucher=voucher, credits=credits, balance=balance, debt_repaid=repaid)
        _credit(cursor, sql, account_id=account_id, amount=credits, at=at, repay_up_to=0)
        _insert_entry(
            cursor,
            sql,
            account_id=account_id,
            delta=credits,
            kind=LedgerEntry.Kind.REDEEM,
            at=at,
            memo=memo,
            voucher_id=voucher_id,
        )
        # A partial refund that came while the voucher was unredeemed is taken now, from these credits;
        # the claim above holds the voucher row, so no clawback of it can be added or returned meanwhile.
        held = 0
        for clawback in Clawback.objects.filter(voucher_id=voucher_id, status=Clawback.Status.HELD, voided=False):
            _clawback_take(clawback=clawback, account_id=account_id)
            held += clawback.credits
        repaid = _repay_debt(account_id=account_id, up_to=credits - held)
        balance = CreditAccount.objects.values_list("balance", flat=True).get(pk=account_id)
        return Redemption(voucher=voucher, credits=credits, balance=balance, clawed_back=held, debt_repaid=repaid)


def _refuse_redeem(*, code: str, owner_id: int, server: bool) -> None:
    """Nothing was claimed; say why."""
    redeemer_id = "redeemed_by__discord_guild_id" if server else "redeemed_by__discord_user_id"
    found = Voucher.objects.filter(code=code).values_list("status", redeemer_id).first()
    if found is None:
        raise VoucherNotFound()
    status, redeemer = found
    if status == Voucher.Status.REDEEMED:
        if redeemer == owner_id:
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
    """Take `amount` credits now for work about to be done; `credits_refund` gives them back if it fails.

    Two statements in one transaction: `UPDATE ... WHERE discord_user_id = ? AND balance >= ? RETURNING id`,
    then the ledger row. Only a refusal reads (to say whether the member has an account at all).
    """
    return _reserve(owner_id=discord_user_id, server=False, amount=amount, generation_id=generation_id, memo=memo)


def _reserve(*, owner_id: int, server: bool, amount: int, generation_id: int | None, memo: str) -> LedgerEntry:
    """A charge from a member's account (`owner_id` a Discord user id) or a server's wallet (a server id)."""
    _require_discord_id(owner_id)
    _require_amount(amount)
    memo = _require_memo(memo)
    entry = _debit(
        discord_user_id=owner_id,
        amount=amount,
        kind=LedgerEntry.Kind.GENERATE,
        memo=memo,
        generation_id=generation_id,
        server=server,
    )
    if entry is None:
        owner = {"discord_guild_id" if server else "discord_user_id": owner_id}
        if not CreditAccount.objects.filter(**owner).exists():
            raise InsufficientCredits(
                "This server's wallet is empty." if server else "You have no credits yet. Use /buy or /redeem first."
            )
        raise InsufficientCredits()
    return entry


def credits_refund(*, entry_id: int, memo: str = "", amount: int | None = None) -> LedgerEntry:
    """Give back the credits of one reservation. At most once per reservation (a unique constraint).

    `amount` (default: all of it) gives back part of it, for a request of several images of which only some were
    delivered; it must be positive and at most the charge. Whoever refunds part knows what the rest paid for
    (the bot's audit checks the amount against the generation's undelivered images).

    The refund row is one `INSERT ... SELECT` from the charge, which checks the charge's kind and size and that
    it has no refund yet; the unique `refund_of` settles a race. Then the credit (paying any debt first).
    """
    memo = _require_memo(memo)
    if type(entry_id) is not int or not 0 < entry_id <= _MAX_DISCORD_ID:
        raise RefundNotAllowed()
    if amount is not None and (type(amount) is not int or not 0 < amount <= MAX_CREDITS_PER_MOVEMENT):
        raise RefundNotAllowed()
    connection = transaction.get_connection()
    now = timezone.now()
    at = connection.ops.adapt_datetimefield_value(now)
    kinds = LedgerEntry.Kind
    try:
        with transaction.atomic(savepoint=False), _cursor(connection) as (cursor, sql):
            if amount is None:
                cursor.execute(sql.refund_all, [kinds.REFUND, memo, at, entry_id, kinds.GENERATE, entry_id])
            else:
                cursor.execute(
                    sql.refund_part, [amount, kinds.REFUND, memo, at, entry_id, kinds.GENERATE, amount, entry_id]
                )
            row = cursor.fetchone()
            if row is not None:
                pk, account_id, delta, generation_id = row
                # Pays any debt first: credits reserved when a clawback came are exactly what it could not take.
                _, repaid = _credit(cursor, sql, account_id=account_id, amount=delta, at=at, repay_up_to=delta)
                if repaid:
                    _insert_entry(
                        cursor, sql, account_id=account_id, delta=-repaid, kind=kinds.REPAY, at=at, memo=_REPAY_MEMO
                    )
    except IntegrityError:
        raise AlreadyRefunded() from None
    if row is None:
        charge = LedgerEntry.objects.filter(pk=entry_id).values_list("kind", "delta").first()
        if charge is None or charge[0] != kinds.GENERATE or (amount is not None and amount > -charge[1]):
            raise RefundNotAllowed()
        raise AlreadyRefunded()
    return _entry(
        connection,
        pk,
        account_id=account_id,
        delta=delta,
        kind=kinds.REFUND,
        created_at=now,
        memo=memo,
        generation_id=generation_id,
        refund_of_id=entry_id,
    )


def credits_grant(*, discord_user_id: int, amount: int, memo: str) -> LedgerEntry:
    """An operator's gift of credits (support, goodwill). The memo says why, in the ledger."""
    _require_amount(amount)
    memo = _require_memo(memo, required=True)
    _require_discord_id(discord_user_id)
    with transaction.atomic(savepoint=False):
        account = account_get_or_create(discord_user_id=discord_user_id)
        return _credit_in(account_id=account.pk, amount=amount, kind=LedgerEntry.Kind.GRANT, memo=memo)


def credits_debit(*, discord_user_id: int, amount: int, memo: str) -> LedgerEntry:
    """An operator takes credits back (a mistaken grant, abuse). Never below zero; never creates a debt."""
    _require_discord_id(discord_user_id)
    _require_amount(amount)
    memo = _require_memo(memo, required=True)
    entry = _debit(discord_user_id=discord_user_id, amount=amount, kind=LedgerEntry.Kind.DEBIT, memo=memo)
    if entry is None:
        if not CreditAccount.objects.filter(discord_user_id=discord_user_id).exists():
            raise InsufficientCredits("That member has no credits.")
        raise InsufficientCredits("That member's balance is smaller than that.")
    return entry


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
                    voucher_id=clawback.voucher_id,
                    clawback_id=clawback.pk,
                    memo=memo,
                )
        clawback.refresh_from_db()
        return clawback


# --- Server wallets: a Discord server's own account, funded by its managers ----------------------------------


def _server_name(name: object) -> str:
    if not isinstance(name, str):
        return ""
    return " ".join("".join(ch for ch in name if ch.isprintable()).split())[:MAX_NAME_LENGTH]


def server_account_get_or_create(*, discord_guild_id: int, name: str = "") -> CreditAccount:
    """The server's wallet (a `server` account), created empty on first use; `name` is remembered for operators."""
    _require_discord_id(discord_guild_id)
    account, _ = CreditAccount.objects.get_or_create(
        discord_guild_id=discord_guild_id, defaults={"kind": CreditAccount.Kind.SERVER}
    )
    name = _server_name(name)
    if name and account.discord_name != name:
        CreditAccount.objects.filter(pk=account.pk).update(discord_name=name)
        account.discord_name = name
    return account


def server_voucher_redeem(*, code: str, discord_guild_id: int, name: str = "") -> Redemption:
    """Move a voucher's credits into a server's wallet (`/server redeem`, or a server-bound `/buy` order)."""
    code = _require_code(code)
    _require_discord_id(discord_guild_id)
    name = _server_name(name)
    with transaction.atomic():
        redemption = _voucher_redeem_into(code=code, owner_id=discord_guild_id, server=True)
        if name:
            CreditAccount.objects.filter(discord_guild_id=discord_guild_id).exclude(discord_name=name).update(
                discord_name=name
            )
    return redemption


def server_credits_reserve(
    *, discord_guild_id: int, amount: int, generation_id: int | None = None, memo: str = ""
) -> LedgerEntry:
    """`credits_reserve` from a server's wallet: one conditional debit; InsufficientCredits (nothing written) if
    the wallet is short or does not exist. `credits_refund` gives it back to the wallet, like any charge."""
    return _reserve(owner_id=discord_guild_id, server=True, amount=amount, generation_id=generation_id, memo=memo)
