"""The ledger's hot paths (debit, refund, redeem) as few statements as the rules allow, and the attacks on them.

Written before the rewrite that made them so: each statement a path sends is counted (no read a conditional
`UPDATE ... RETURNING` can replace, no savepoint), and each path is attacked where fewer statements could have
opened a hole: a race from threads and from two processes, a double refund, a partial refund then a full one,
a refund that must repay debt first, and a crash between two statements.
"""

import threading
import time
from collections import Counter

import pytest
from django.db import connection, connections, transaction
from django.db.models import Sum
from django.test.utils import CaptureQueriesContext

from discordbot.models import Generation
from tests.vouchers.conftest import crash_at, nothing_written, writes_row
from tests.vouchers.test_concurrency import attempt, kinds, race_processes, race_threads
from vouchers import services
from vouchers.errors import AlreadyRefunded, InsufficientCredits, RefundNotAllowed, VoucherAlreadyRedeemed
from vouchers.models import CreditAccount, LedgerEntry, Voucher

ALICE = 222_222_222_222_222_222
BOB = 333_333_333_333_333_333


def statements(captured: CaptureQueriesContext) -> list[str]:
    """The first word of each statement sent, BEGIN/COMMIT included; SAVEPOINTs show as SAVEPOINT."""
    return [query["sql"].split()[0].upper() for query in captured.captured_queries]


def books_balance(discord_user_id: int) -> int:
    account = CreditAccount.objects.get(discord_user_id=discord_user_id)
    ledger = LedgerEntry.objects.filter(account=account).aggregate(s=Sum("delta"))["s"] or 0
    assert account.balance == ledger, (account.balance, ledger)
    assert account.balance >= 0
    return account.balance


def charge(amount: int, *, count: int = 1, delivered: int | None = None, discord_user_id: int = ALICE) -> LedgerEntry:
    """A generation's charge: a failed one (to refund in full), or one that delivered `delivered` of `count` images."""
    account = CreditAccount.objects.get(discord_user_id=discord_user_id)
    generation = Generation.objects.create(
        account=account,
        prompt="p",
        cost=amount,
        count=count,
        delivered_count=delivered,
        status="failed" if delivered is None else "succeeded",
    )
    return services.credits_reserve(discord_user_id=discord_user_id, amount=amount, generation_id=generation.pk)


# --- how many statements ---------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_debit_is_one_guarded_update_and_one_insert_in_one_transaction() -> None:
    services.credits_grant(discord_user_id=ALICE, amount=10, memo="seed")
    with CaptureQueriesContext(connection) as captured:
        entry = services.credits_reserve(discord_user_id=ALICE, amount=3, memo="m")
    assert statements(captured) == ["BEGIN", "UPDATE", "INSERT", "COMMIT"]
    assert "RETURNING" in captured.captured_queries[1]["sql"].upper()
    # The entry returned is the row written, without reading it back.
    assert LedgerEntry.objects.get(pk=entry.pk).delta == entry.delta == -3
    assert (entry.kind, entry.memo, entry.account_id) == ("generate", "m", CreditAccount.objects.get().pk)
    assert books_balance(ALICE) == 7


@pytest.mark.django_db
def test_a_debit_inside_a_callers_transaction_makes_no_savepoint() -> None:
    services.credits_grant(discord_user_id=ALICE, amount=10, memo="seed")
    with transaction.atomic(), CaptureQueriesContext(connection) as captured:
        services.credits_reserve(discord_user_id=ALICE, amount=3)
    assert statements(captured) == ["UPDATE", "INSERT"]


@pytest.mark.django_db(transaction=True)
def test_a_refund_is_one_insert_select_and_one_guarded_update() -> None:
    services.credits_grant(discord_user_id=ALICE, amount=10, memo="seed")
    debit = charge(4)
    with CaptureQueriesContext(connection) as captured:
        refund = services.credits_refund(entry_id=debit.pk, memo="not delivered")
    assert statements(captured) == ["BEGIN", "INSERT", "UPDATE", "COMMIT"]
    assert (refund.refund_of_id, refund.delta, refund.generation_id) == (debit.pk, 4, debit.generation_id)
    assert LedgerEntry.objects.get(pk=refund.pk).refund_of_id == debit.pk
    assert books_balance(ALICE) == 10


@pytest.mark.django_db(transaction=True)
def test_a_redeem_by_a_member_with_an_account_is_three_statements() -> None:
    services.credits_grant(discord_user_id=ALICE, amount=1, memo="seed")
    voucher = services.voucher_issue(credits=25)
    with CaptureQueriesContext(connection) as captured:
        redemption = services.voucher_redeem(code=voucher.code, discord_user_id=ALICE)
    assert statements(captured) == ["BEGIN", "UPDATE", "UPDATE", "INSERT", "COMMIT"]
    assert (redemption.credits, redemption.balance, redemption.debt_repaid) == (25, 26, 0)
    stored = Voucher.objects.get(pk=voucher.pk)
    returned = redemption.voucher
    assert (returned.pk, returned.code, returned.status, returned.redeemed_by_id, returned.created_at) == (
        stored.pk,
        stored.code,
        stored.status,
        stored.redeemed_by_id,
        stored.created_at,
    )
    assert books_balance(ALICE) == 26


# --- refusals write nothing and leave the caller's transaction usable ---------------------------------------


@pytest.mark.django_db
def test_a_refused_debit_or_refund_inside_a_callers_transaction_leaves_it_usable() -> None:
    services.credits_grant(discord_user_id=ALICE, amount=5, memo="seed")
    debit = charge(2)
    services.credits_refund(entry_id=debit.pk)
    with transaction.atomic():
        with nothing_written():
            with pytest.raises(InsufficientCredits):
                services.credits_reserve(discord_user_id=ALICE, amount=6)
            with pytest.raises(AlreadyRefunded):
                services.credits_refund(entry_id=debit.pk)
            with pytest.raises(RefundNotAllowed):
                services.credits_refund(entry_id=debit.pk + 1000)
        services.credits_reserve(discord_user_id=ALICE, amount=5)  # the transaction goes on
    assert books_balance(ALICE) == 0


# --- partial and full refunds, and debt --------------------------------------------------------------------


@pytest.mark.django_db
def test_a_partial_refund_then_a_full_one_is_refused(assert_audit_clean) -> None:
    services.credits_grant(discord_user_id=ALICE, amount=10, memo="seed")
    debit = charge(6, count=3, delivered=2)
    part = services.credits_refund(entry_id=debit.pk, amount=2, memo="1 of 3 images missing")
    assert part.delta == 2
    with nothing_written():
        with pytest.raises(AlreadyRefunded):
            services.credits_refund(entry_id=debit.pk)
        with pytest.raises(AlreadyRefunded):
            services.credits_refund(entry_id=debit.pk, amount=1)
        with pytest.raises(RefundNotAllowed):  # more than the charge is refused as such, refunded or not
            services.credits_refund(entry_id=debit.pk, amount=7)
    assert books_balance(ALICE) == 6
    assert_audit_clean()


@pytest.mark.django_db
@pytest.mark.parametrize("amount", [0, -1, 7, True, 2.0, "2"])
def test_a_refund_of_a_bad_amount_writes_nothing(amount: object) -> None:
    services.credits_grant(discord_user_id=ALICE, amount=10, memo="seed")
    debit = charge(6)
    with nothing_written(), pytest.raises(RefundNotAllowed):
        services.credits_refund(entry_id=debit.pk, amount=amount)


@pytest.mark.django_db
def test_a_refund_of_what_is_not_a_generation_charge_is_refused() -> None:
    grant = services.credits_grant(discord_user_id=ALICE, amount=10, memo="seed")
    debit = services.credits_debit(discord_user_id=ALICE, amount=1, memo="operator")
    with nothing_written():
        for entry in (grant, debit):
            with pytest.raises(RefundNotAllowed):
                services.credits_refund(entry_id=entry.pk)


@pytest.mark.django_db
def test_a_refund_repays_the_debt_first_with_a_repay_row(assert_audit_clean) -> None:
    voucher = services.voucher_issue(credits=10)
    services.voucher_redeem(code=voucher.code, discord_user_id=ALICE)
    queued = charge(8, count=8, delivered=3)
    services.voucher_claw_back(voucher_id=voucher.pk, credits=10, cause="refund re_debt")  # takes 2, owes 8
    assert CreditAccount.objects.values_list("balance", "owed").get(discord_user_id=ALICE) == (0, 8)

    part = services.credits_refund(entry_id=queued.pk, amount=5)

    assert part.delta == 5
    rows = list(LedgerEntry.objects.order_by("pk").values_list("kind", "delta"))[-2:]
    assert rows == [("refund", 5), ("repay", -5)]
    assert CreditAccount.objects.values_list("balance", "owed").get(discord_user_id=ALICE) == (0, 3)
    assert books_balance(ALICE) == 0
    assert_audit_clean()


@pytest.mark.django_db
def test_a_refund_larger_than_the_debt_repays_it_and_keeps_the_rest(assert_audit_clean) -> None:
    voucher = services.voucher_issue(credits=10)
    services.voucher_redeem(code=voucher.code, discord_user_id=ALICE)
    queued = charge(8)
    services.voucher_claw_back(voucher_id=voucher.pk, credits=5, cause="refund re_small")  # takes 2, owes 3
    services.credits_refund(entry_id=queued.pk)
    assert CreditAccount.objects.values_list("balance", "owed").get(discord_user_id=ALICE) == (5, 0)
    assert list(LedgerEntry.objects.order_by("pk").values_list("kind", "delta"))[-2:] == [("refund", 8), ("repay", -3)]
    assert_audit_clean()


@pytest.mark.django_db
def test_a_redeem_repays_the_debt_first(assert_audit_clean) -> None:
    first = services.voucher_issue(credits=10)
    services.voucher_redeem(code=first.code, discord_user_id=ALICE)
    charge(10, count=1, delivered=1)  # spent on a delivered image
    services.voucher_claw_back(voucher_id=first.pk, credits=10, cause="dispute du_1")  # owes 10
    second = services.voucher_issue(credits=15)
    redemption = services.voucher_redeem(code=second.code, discord_user_id=ALICE)
    assert (redemption.credits, redemption.debt_repaid, redemption.balance) == (15, 10, 5)
    assert books_balance(ALICE) == 5
    assert_audit_clean()


# --- a crash between two statements --------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)  # the service's transaction is the outermost, as in production
def test_a_crash_between_the_debit_and_its_ledger_row_writes_neither() -> None:
    services.credits_grant(discord_user_id=ALICE, amount=10, memo="seed")
    with nothing_written(), crash_at(writes_row("generate")), pytest.raises(RuntimeError):
        services.credits_reserve(discord_user_id=ALICE, amount=3)
    assert books_balance(ALICE) == 10


@pytest.mark.django_db(transaction=True)  # the service's transaction is the outermost, as in production
def test_a_crash_between_the_refund_row_and_the_credit_writes_neither() -> None:
    services.credits_grant(discord_user_id=ALICE, amount=10, memo="seed")
    debit = charge(4)
    credit = lambda sql, params: sql.startswith(f"UPDATE {CreditAccount._meta.db_table} ")  # noqa: E731
    with nothing_written(), crash_at(credit), pytest.raises(RuntimeError):
        services.credits_refund(entry_id=debit.pk)
    services.credits_refund(entry_id=debit.pk)  # the retry refunds it, once
    assert books_balance(ALICE) == 10


@pytest.mark.django_db(transaction=True)  # the service's transaction is the outermost, as in production
def test_a_crash_between_the_claim_and_the_ledger_row_leaves_the_voucher_redeemable_and_no_account() -> None:
    voucher = services.voucher_issue(credits=10)
    with nothing_written(), crash_at(writes_row("redeem")), pytest.raises(RuntimeError):
        services.voucher_redeem(code=voucher.code, discord_user_id=BOB)
    assert not CreditAccount.objects.filter(discord_user_id=BOB).exists()
    assert services.voucher_redeem(code=voucher.code, discord_user_id=BOB).balance == 10


@pytest.mark.django_db
def test_a_crash_inside_a_callers_transaction_rolls_the_whole_of_it_back() -> None:
    services.credits_grant(discord_user_id=ALICE, amount=10, memo="seed")
    with nothing_written(), pytest.raises(RuntimeError):
        with transaction.atomic():
            services.credits_reserve(discord_user_id=ALICE, amount=1)
            with crash_at(writes_row("generate")):
                services.credits_reserve(discord_user_id=ALICE, amount=2)
    assert books_balance(ALICE) == 10


# --- races --------------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_debits_of_mixed_sizes_from_threads_never_overdraw_and_the_ledger_adds_up(assert_audit_clean) -> None:
    services.credits_grant(discord_user_id=ALICE, amount=150, memo="seed")
    outcomes = race_threads(
        10,
        lambda i: [attempt(services.credits_reserve, discord_user_id=ALICE, amount=1 + (i + n) % 3) for n in range(20)],
    )
    taken = sum(-o.delta for o in outcomes if isinstance(o, LedgerEntry))
    assert set(kinds(outcomes)) <= {"ok", "InsufficientCredits"}
    assert 148 <= taken <= 150  # only a debit larger than what is left is refused
    assert books_balance(ALICE) == 150 - taken
    assert_audit_clean()


@pytest.mark.django_db(transaction=True)
def test_debits_from_two_processes_never_overdraw_and_the_ledger_adds_up(tmp_path, assert_audit_clean) -> None:
    services.credits_grant(discord_user_id=ALICE, amount=300, memo="seed")
    step = {"service": "credits_reserve", "kwargs": {"discord_user_id": ALICE, "amount": 1}}
    outcomes = race_processes([[step] * 250, [step] * 250], tmp_path)
    assert kinds(outcomes) == {"ok": 300, "InsufficientCredits": 200}
    assert books_balance(ALICE) == 0
    assert_audit_clean()


@pytest.mark.django_db(transaction=True)
def test_two_processes_refunding_the_same_charges_refund_each_exactly_once(tmp_path) -> None:
    services.credits_grant(discord_user_id=ALICE, amount=100, memo="seed")
    charges = [charge(5).pk for _ in range(20)]
    full = [{"service": "credits_refund", "kwargs": {"entry_id": pk}} for pk in charges]
    partial = [{"service": "credits_refund", "kwargs": {"entry_id": pk, "amount": 2}} for pk in reversed(charges)]
    outcomes = race_processes([full, partial], tmp_path)
    assert kinds(outcomes) == {"ok": 20, "AlreadyRefunded": 20}
    assert Counter(LedgerEntry.objects.filter(kind="refund").values_list("refund_of_id", flat=True)) == dict.fromkeys(
        charges, 1
    )
    refunded = sum(o["ok"] for o in outcomes if "ok" in o)
    assert books_balance(ALICE) == refunded
    # (No audit: which of a full and a partial refund wins is the race's choice, so no one status fits.)


@pytest.mark.django_db(transaction=True)
def test_a_double_refund_from_threads_has_exactly_one_winner(assert_audit_clean) -> None:
    services.credits_grant(discord_user_id=ALICE, amount=10, memo="seed")
    debit = charge(10)
    outcomes = race_threads(8, lambda i: [attempt(services.credits_refund, entry_id=debit.pk)])
    assert kinds(outcomes) == {"ok": 1, "AlreadyRefunded": 7}
    assert books_balance(ALICE) == 10
    assert_audit_clean()


@pytest.mark.django_db(transaction=True)
def test_one_voucher_redeemed_by_two_new_members_from_threads_credits_one(assert_audit_clean) -> None:
    voucher = services.voucher_issue(credits=10)
    members = [BOB + n for n in range(6)]
    outcomes = race_threads(
        6, lambda i: [attempt(services.voucher_redeem, code=voucher.code, discord_user_id=members[i])]
    )
    assert kinds(outcomes) == {"ok": 1, "VoucherAlreadyRedeemed": 5}
    assert all(isinstance(o, (services.Redemption, VoucherAlreadyRedeemed)) for o in outcomes)
    # Only the winner has an account: a refused redeem created none.
    assert CreditAccount.objects.filter(discord_user_id__in=members).count() == 1
    assert_audit_clean()


# --- the SQLite writer queue ----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_second_sqlite_writer_waits_its_turn_on_the_file_lock_not_the_busy_timeout() -> None:
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's writer queue")
    services.credits_grant(discord_user_id=ALICE, amount=10, memo="seed")
    held = threading.Event()
    waited: list[object] = []

    def second_writer() -> None:
        try:
            connection.ensure_connection()
            connection.connection.execute("PRAGMA busy_timeout = 10")  # SQLite alone would give up after 10 ms
            held.wait(10)
            started = time.monotonic()
            services.credits_reserve(discord_user_id=ALICE, amount=1)
            waited.append(time.monotonic() - started)
        except Exception as exc:  # noqa: BLE001
            waited.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=second_writer)
    thread.start()
    with transaction.atomic():
        services.credits_reserve(discord_user_id=ALICE, amount=1)
        held.set()
        time.sleep(0.3)  # holds the write lock well past the other's busy timeout
    thread.join(30)
    assert len(waited) == 1 and isinstance(waited[0], float), waited
    assert waited[0] >= 0.2
    assert books_balance(ALICE) == 8


# --- the hand-written statements stay in step with the models ----------------------------------------------------


def test_the_ledger_insert_names_every_column_of_the_model() -> None:
    # A new LedgerEntry field must be added to vouchers.services' INSERT (or given a database default).
    entry = services._statements("sqlite", False, "%s").entry
    columns = entry[entry.index("(") + 1 : entry.index(")")].replace(" ", "").split(",")
    assert set(columns) == {field.column for field in LedgerEntry._meta.concrete_fields} - {"id"}
