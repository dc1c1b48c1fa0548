"""The database itself refuses what the services never do: a negative balance, a wrongly signed ledger row,
a second refund of one charge, an inconsistent voucher. And the ledger is append-only in the ORM."""

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.models import F, ProtectedError

from vouchers import services
from vouchers.models import Clawback, CreditAccount, LedgerEntry, Voucher

pytestmark = pytest.mark.django_db

ALICE = 111_111_111_111_111_111


def refused(callable_, *args, **kwargs) -> None:
    """Run one write in a savepoint and require the database to refuse it (the test transaction stays usable)."""
    with pytest.raises(IntegrityError), transaction.atomic():
        callable_(*args, **kwargs)


@pytest.fixture
def account() -> CreditAccount:
    services.credits_grant(discord_user_id=ALICE, amount=10, memo="seed")
    return CreditAccount.objects.get(discord_user_id=ALICE)


def balance(account: CreditAccount) -> int:
    return CreditAccount.objects.values_list("balance", flat=True).get(pk=account.pk)


# --- balance >= 0 ----------------------------------------------------------------------------------------


def test_a_queryset_update_to_a_negative_balance_is_refused(account) -> None:
    refused(CreditAccount.objects.filter(pk=account.pk).update, balance=-1)
    assert balance(account) == 10


def test_an_f_expression_that_would_overdraw_is_refused(account) -> None:
    refused(CreditAccount.objects.filter(pk=account.pk).update, balance=F("balance") - 11)
    assert balance(account) == 10


def test_a_raw_sql_update_to_a_negative_balance_is_refused(account) -> None:
    table = CreditAccount._meta.db_table

    def raw_update() -> None:
        with connection.cursor() as cursor:
            cursor.execute(f"UPDATE {table} SET balance = balance - 1000 WHERE id = %s", [account.pk])

    refused(raw_update)
    assert balance(account) == 10


def test_an_account_cannot_be_created_with_a_negative_balance() -> None:
    refused(CreditAccount.objects.create, discord_user_id=ALICE, balance=-1)
    assert not CreditAccount.objects.exists()


def test_a_balance_may_be_exactly_zero(account) -> None:
    CreditAccount.objects.filter(pk=account.pk).update(balance=0)
    assert balance(account) == 0


def test_one_discord_user_has_one_account(account) -> None:
    refused(CreditAccount.objects.create, discord_user_id=ALICE)


# --- ledger signs and refunds ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "delta"),
    [
        ("redeem", -5),
        ("redeem", 0),
        ("refund", -5),
        ("grant", -5),
        ("grant", 0),
        ("generate", 5),
        ("generate", 0),
        ("clawback", 5),
        ("clawback", 0),
        ("repay", 5),
        ("restore", -5),
        ("debit", 5),
        ("bogus", 5),
    ],
)
def test_a_ledger_entry_whose_sign_does_not_match_its_kind_is_refused(account, kind: str, delta: int) -> None:
    debit = services.credits_reserve(discord_user_id=ALICE, amount=1)
    refund_of = debit if kind == "refund" else None
    refused(LedgerEntry.objects.create, account=account, kind=kind, delta=delta, refund_of=refund_of)
    assert LedgerEntry.objects.count() == 2


@pytest.mark.parametrize(
    ("kind", "delta"),
    [("redeem", 5), ("grant", 5), ("generate", -5), ("clawback", -5), ("restore", 5), ("repay", -5), ("debit", -5)],
)
def test_a_ledger_entry_with_the_right_sign_is_accepted(account, kind: str, delta: int) -> None:
    clawback = None
    if kind in ("clawback", "restore"):
        clawback = Clawback.objects.create(
            voucher=services.voucher_issue(credits=5), cause="c", credits=5, status="held"
        )
    LedgerEntry.objects.create(account=account, kind=kind, delta=delta, clawback=clawback, memo="why")
    assert LedgerEntry.objects.filter(kind=kind, delta=delta).exists()


@pytest.mark.parametrize("kind", ["clawback", "restore"])
def test_a_clawback_or_restore_entry_must_name_its_clawback(account, kind: str) -> None:
    refused(LedgerEntry.objects.create, account=account, kind=kind, delta=-5 if kind == "clawback" else 5)


def test_an_operator_debit_must_say_why(account) -> None:
    refused(LedgerEntry.objects.create, account=account, kind="debit", delta=-1, memo="")


def test_owed_can_never_be_negative(account) -> None:
    refused(CreditAccount.objects.filter(pk=account.pk).update, owed=F("owed") - 1)


def test_a_clawback_cause_counts_once_even_bypassing_the_service() -> None:
    voucher = services.voucher_issue(credits=5)
    Clawback.objects.create(voucher=voucher, cause="refund re_1", credits=5, status="held")
    refused(Clawback.objects.create, voucher=voucher, cause="refund re_1", credits=5, status="held")


def test_a_taken_clawback_must_add_up_to_its_credits(account) -> None:
    voucher = services.voucher_issue(credits=5)
    refused(
        Clawback.objects.create,
        voucher=voucher,
        cause="refund re_1",
        credits=5,
        status="taken",
        account=account,
        taken=2,
        owed=2,
        taken_at=voucher.created_at,
    )


def test_a_refund_must_name_the_charge_it_refunds(account) -> None:
    refused(LedgerEntry.objects.create, account=account, kind="refund", delta=1)


def test_a_charge_can_be_refunded_only_once_even_bypassing_the_service(account) -> None:
    debit = services.credits_reserve(discord_user_id=ALICE, amount=3)
    services.credits_refund(entry_id=debit.pk)
    refused(LedgerEntry.objects.create, account=account, kind="refund", delta=3, refund_of=debit)
    assert LedgerEntry.objects.filter(kind="refund").count() == 1


# --- vouchers --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("credits", [0, -1])
def test_a_voucher_worth_nothing_is_refused(credits: int) -> None:
    refused(Voucher.objects.create, credits=credits)
    assert not Voucher.objects.exists()


def test_two_vouchers_cannot_share_a_code() -> None:
    Voucher.objects.create(code="AAAA-BBBB-CCCC-DDDD", credits=1)
    refused(Voucher.objects.create, code="AAAA-BBBB-CCCC-DDDD", credits=1)


def test_a_voucher_marked_redeemed_must_say_by_whom_and_when() -> None:
    voucher = services.voucher_issue(credits=5)
    refused(Voucher.objects.filter(pk=voucher.pk).update, status=Voucher.Status.REDEEMED)
    assert Voucher.objects.get(pk=voucher.pk).status == Voucher.Status.ACTIVE


def test_an_active_voucher_cannot_carry_a_redeemer(account) -> None:
    voucher = services.voucher_issue(credits=5)
    refused(Voucher.objects.filter(pk=voucher.pk).update, redeemed_by=account)


# --- append-only ledger ----------------------------------------------------------------------------------


def test_saving_an_existing_ledger_entry_raises_and_changes_nothing(account) -> None:
    entry = LedgerEntry.objects.get()
    entry.delta = 1_000
    with pytest.raises(RuntimeError, match="append-only"):
        entry.save()
    with pytest.raises(RuntimeError, match="append-only"):
        entry.save(update_fields=["delta"])
    assert LedgerEntry.objects.get().delta == 10


def test_deleting_a_ledger_entry_raises_and_keeps_it(account) -> None:
    entry = LedgerEntry.objects.get()
    with pytest.raises(RuntimeError, match="append-only"):
        entry.delete()
    assert LedgerEntry.objects.filter(pk=entry.pk).exists()


def test_a_new_ledger_entry_can_still_be_saved(account) -> None:
    entry = LedgerEntry(account=account, kind="grant", delta=1, memo="by hand")
    entry.save()
    assert LedgerEntry.objects.count() == 2


def test_an_account_with_ledger_entries_cannot_be_deleted(account) -> None:
    with pytest.raises(ProtectedError), transaction.atomic():
        CreditAccount.objects.filter(pk=account.pk).delete()
    assert LedgerEntry.objects.count() == 1
