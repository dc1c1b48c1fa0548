"""`manage.py issuevoucher` and `manage.py auditcredits`, through call_command and as real processes."""

import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from discordbot.models import Generation
from storefront.models import CreditPack, Order
from tests.vouchers.conftest import child_database_url, nothing_written
from vouchers import services
from vouchers.audit import CHECKS
from vouchers.codes import normalize_code
from vouchers.models import Clawback, CreditAccount, LedgerEntry, Voucher

REPO = Path(__file__).resolve().parents[2]
ALICE = 111_111_111_111_111_111
BOB = 222_222_222_222_222_222


def run(command: str, *args: str, **options) -> str:
    out = StringIO()
    call_command(command, *args, stdout=out, stderr=StringIO(), **options)
    return out.getvalue()


def manage(*args: str) -> subprocess.CompletedProcess:
    """`python manage.py ...` with the production settings module, pointed at this test's database."""
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    env.update(DATABASE_URL=child_database_url(), DEBUG="false", SECRET_KEY="test-secret-key-for-a-subprocess")
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def audit_failure() -> tuple[CommandError, str]:
    out = StringIO()
    with pytest.raises(CommandError) as caught:
        call_command("auditcredits", stdout=out, stderr=StringIO())
    return caught.value, out.getvalue()


# --- issuevoucher ----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_issuevoucher_prints_one_valid_code_a_line_and_stores_each_with_its_note() -> None:
    lines = run("issuevoucher", "25", "--count", "5", "--note", "spring giveaway").splitlines()
    assert len(lines) == 5
    assert len(set(lines)) == 5
    for line in lines:
        assert normalize_code(line) == line
    stored = {v.code: v for v in Voucher.objects.all()}
    assert set(stored) == set(lines)
    for voucher in stored.values():
        assert (voucher.credits, voucher.note, voucher.status) == (25, "spring giveaway", Voucher.Status.ACTIVE)
    assert LedgerEntry.objects.count() == 0


@pytest.mark.django_db
def test_issuevoucher_issues_one_voucher_by_default() -> None:
    lines = run("issuevoucher", "7").splitlines()
    assert len(lines) == 1
    assert Voucher.objects.get().code == lines[0]
    assert Voucher.objects.get().note == ""


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["0"], "whole number of credits"),
        (["-5"], "whole number of credits"),
        (["1000001"], "whole number of credits"),
        (["abc"], "invalid int value"),
        (["2.5"], "invalid int value"),
        (["' OR 1=1 --"], "invalid int value"),
        ([], "the following arguments are required: credits"),
        (["10", "--count", "0"], "--count must be from 1 to 10000"),
        (["10", "--count", "-3"], "--count must be from 1 to 10000"),
        (["10", "--count", "10001"], "--count must be from 1 to 10000"),
        (["10", "--count", "many"], "invalid int value"),
        (["10", "--note", "n" * 201], "too long"),
    ],
    ids=lambda value: value if isinstance(value, str) else " ".join(value)[:40],
)
def test_issuevoucher_with_bad_input_fails_and_issues_nothing(args: list[str], message: str) -> None:
    services.voucher_issue(credits=3)
    with nothing_written(), pytest.raises(CommandError, match=message):
        run("issuevoucher", *args)


@pytest.mark.django_db(transaction=True)
def test_issuevoucher_as_a_process_prints_codes_and_exits_0() -> None:
    result = manage("issuevoucher", "12", "--count", "3", "--note", "from the shell")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    assert set(Voucher.objects.filter(credits=12, note="from the shell").values_list("code", flat=True)) == set(lines)


@pytest.mark.django_db(transaction=True)
def test_issuevoucher_as_a_process_exits_1_with_a_message_on_bad_credits() -> None:
    result = manage("issuevoucher", "0")
    assert result.returncode == 1
    assert "whole number of credits" in result.stderr
    assert result.stdout == ""
    assert not Voucher.objects.exists()


# --- auditcredits ----------------------------------------------------------------------------------------


def busy_history() -> dict:
    """A bit of everything the services do, all of it consistent."""
    pack = CreditPack.objects.create(name="Starter", credits=50, price_cents=500)
    order = Order.objects.create(
        pack=pack,
        credits=50,
        amount_cents=500,
        currency="usd",
        status=Order.Status.PAID,
        amount_paid=500,
        currency_paid="usd",
    )
    bought = services.voucher_issue(credits=50, order=order)
    services.voucher_redeem(code=bought.code, discord_user_id=ALICE)
    account = CreditAccount.objects.get(discord_user_id=ALICE)
    delivered = Generation.objects.create(account=account, prompt="a fox", cost=2, status="succeeded")
    services.credits_reserve(discord_user_id=ALICE, amount=2, generation_id=delivered.pk)
    failed = Generation.objects.create(account=account, prompt="a wolf", cost=3, status="failed")
    charge = services.credits_reserve(discord_user_id=ALICE, amount=3, generation_id=failed.pk)
    services.credits_refund(entry_id=charge.pk)
    services.credits_grant(discord_user_id=ALICE, amount=5, memo="goodwill")
    gift = services.voucher_issue(credits=9, note="gift")
    services.voucher_redeem(code=gift.code, discord_user_id=ALICE)
    # A voucher refunded before it was redeemed (voided), and one refunded after (Bob's: taken, partly owed).
    voided = services.voucher_issue(credits=4)
    services.voucher_claw_back(voucher_id=voided.pk, credits=4, cause="refund re_void")
    refunded = services.voucher_issue(credits=10)
    services.voucher_redeem(code=refunded.code, discord_user_id=BOB)
    bob = CreditAccount.objects.get(discord_user_id=BOB)
    queued = Generation.objects.create(account=bob, prompt="an owl", cost=6, status="queued")
    held = services.credits_reserve(discord_user_id=BOB, amount=6, generation_id=queued.pk)
    services.voucher_claw_back(voucher_id=refunded.pk, credits=10, cause="refund re_bob")  # takes 4, owes 6
    services.credits_refund(entry_id=held.pk)  # pays the debt
    Generation.objects.filter(pk=queued.pk).update(status="refunded")  # as the bot settles it
    services.credits_grant(discord_user_id=BOB, amount=3, memo="support")
    services.credits_debit(discord_user_id=BOB, amount=1, memo="duplicate grant")
    disputed = services.voucher_issue(credits=7)
    services.voucher_redeem(code=disputed.code, discord_user_id=BOB)
    services.voucher_claw_back(voucher_id=disputed.pk, credits=7, cause="dispute du_won")
    services.voucher_claw_back_return(cause="dispute du_won")
    return {
        "account": account,
        "order": order,
        "bought": bought,
        "gift": gift,
        "charge": charge,
        "failed": failed,
        "bob": bob,
        "refunded": refunded,
        "voided": voided,
    }


@pytest.mark.django_db
def test_auditcredits_passes_on_an_empty_database() -> None:
    output = run("auditcredits")
    assert f"All {len(CHECKS)} invariants hold." in output


@pytest.mark.django_db
def test_auditcredits_passes_after_a_consistent_history_and_lists_every_invariant() -> None:
    busy_history()
    output = run("auditcredits")
    for name in CHECKS:
        assert f"ok    {name}" in output
    assert "FAIL" not in output


def corrupt_balance(history: dict) -> None:
    CreditAccount.objects.filter(pk=history["account"].pk).update(balance=10_000)


def corrupt_extra_redeem(history: dict) -> None:
    # A second credit for the same voucher, with the balance moved to match so only the voucher check trips.
    LedgerEntry.objects.create(account=history["account"], kind="redeem", delta=9, voucher=history["gift"])
    CreditAccount.objects.filter(pk=history["account"].pk).update(balance=sum_of_ledger(history))


def corrupt_unredeem(history: dict) -> None:
    Voucher.objects.filter(pk=history["gift"].pk).update(status="active", redeemed_by=None, redeemed_at=None)


def corrupt_refund_mismatch(history: dict) -> None:
    other = Generation.objects.create(account=history["account"], prompt="x", cost=1, status="running")
    charge = services.credits_reserve(discord_user_id=ALICE, amount=1, generation_id=other.pk)
    LedgerEntry.objects.create(account=history["account"], kind="refund", delta=7, refund_of=charge)
    CreditAccount.objects.filter(pk=history["account"].pk).update(balance=sum_of_ledger(history))


def corrupt_generation_never_refunded(history: dict) -> None:
    gen = Generation.objects.create(account=history["account"], prompt="x", cost=1, status="running")
    services.credits_reserve(discord_user_id=ALICE, amount=1, generation_id=gen.pk)
    Generation.objects.filter(pk=gen.pk).update(status="failed")


def corrupt_paid_order_without_voucher(history: dict) -> None:
    Order.objects.create(
        pack=history["order"].pack,
        credits=50,
        amount_cents=500,
        currency="usd",
        status=Order.Status.PAID,
        amount_paid=500,
        currency_paid="usd",
    )


def corrupt_excessive_clawback(history: dict) -> None:
    Clawback.objects.create(voucher=history["voided"], cause="refund re_forged", credits=5, status="held")


def corrupt_owed(history: dict) -> None:
    CreditAccount.objects.filter(pk=history["bob"].pk).update(owed=5)


def corrupt_clawback_without_its_rows(history: dict) -> None:
    Clawback.objects.filter(cause="dispute du_won").update(restored=6)


def corrupt_paid_amount(history: dict) -> None:
    Order.objects.filter(pk=history["order"].pk).update(amount_paid=100)


def sum_of_ledger(history: dict) -> int:
    return sum(LedgerEntry.objects.filter(account=history["account"]).values_list("delta", flat=True))


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("corrupt", "invariant", "problem"),
    [
        pytest.param(
            corrupt_balance,
            "balance equals the sum of its ledger",
            f"account {ALICE}: balance 10000 but ledger sums to 62",
            id="raw-balance-update",
        ),
        pytest.param(
            corrupt_extra_redeem,
            "each voucher credited at most once, only when redeemed",
            "redeemed, but its redeem entries are",
            id="extra-redeem-entry",
        ),
        pytest.param(
            corrupt_unredeem,
            "each voucher credited at most once, only when redeemed",
            "active, yet credited 1 time(s)",
            id="credited-voucher-set-back-to-active",
        ),
        pytest.param(
            corrupt_refund_mismatch,
            "refunds mirror their charge",
            "does not mirror charge",
            id="refund-bigger-than-its-charge",
        ),
        pytest.param(
            corrupt_generation_never_refunded,
            "each generation charged once, refunded at most once",
            "failed but refunded 0 time(s)",
            id="failed-generation-not-refunded",
        ),
        pytest.param(
            corrupt_paid_order_without_voucher,
            "each paid order has exactly one voucher",
            "paid with 0 vouchers",
            id="paid-order-without-voucher",
        ),
        pytest.param(
            corrupt_excessive_clawback,
            "clawbacks never exceed the voucher",
            "clawbacks claim 9 of 4",
            id="clawback-beyond-the-voucher",
        ),
        pytest.param(
            corrupt_owed,
            "what is owed is what clawbacks could not take, less repayments",
            f"account {BOB}: owes 5, but its clawbacks and repayments say 0",
            id="owed-without-a-clawback",
        ),
        pytest.param(
            corrupt_clawback_without_its_rows,
            "each clawback is in the ledger as recorded",
            "restored 6, but its ledger rows say otherwise",
            id="clawback-record-not-in-ledger",
        ),
        pytest.param(
            corrupt_paid_amount,
            "every paid order was paid its amount",
            "sold for 500 usd, but the payment recorded is 100 usd",
            id="paid-order-underpaid",
        ),
    ],
)
def test_auditcredits_exits_1_and_names_the_broken_invariant(corrupt, invariant: str, problem: str) -> None:
    history = busy_history()
    corrupt(history)
    error, report = audit_failure()
    assert error.returncode == 1
    assert str(error) == f"1 of {len(CHECKS)} invariants broken."
    assert f"FAIL  {invariant}" in report
    failing_lines = [line for line in report.splitlines() if line.startswith("      - ")]
    assert any(problem in line for line in failing_lines), report
    for name in CHECKS:
        if name != invariant:
            assert f"ok    {name}" in report


@pytest.mark.django_db
def test_auditcredits_reports_every_broken_invariant_at_once() -> None:
    history = busy_history()
    corrupt_balance(history)
    corrupt_paid_order_without_voucher(history)
    error, report = audit_failure()
    assert str(error) == f"2 of {len(CHECKS)} invariants broken."
    assert report.count("FAIL") == 2


@pytest.mark.django_db
def test_auditcredits_caps_a_long_list_of_problems() -> None:
    for discord_user_id in range(1, 61):
        services.credits_grant(discord_user_id=discord_user_id, amount=1, memo="seed")
    CreditAccount.objects.update(balance=5)
    _, report = audit_failure()
    assert report.count("      - account ") == 50
    assert "... and 10 more" in report


@pytest.mark.django_db(transaction=True)
def test_auditcredits_as_a_process_exits_0_when_clean_and_1_with_a_report_when_corrupted() -> None:
    history = busy_history()
    clean = manage("auditcredits")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert f"All {len(CHECKS)} invariants hold." in clean.stdout

    corrupt_balance(history)
    broken = manage("auditcredits")
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "FAIL  balance equals the sum of its ledger" in broken.stdout
    assert f"account {ALICE}: balance 10000 but ledger sums to 62" in broken.stdout
    assert f"1 of {len(CHECKS)} invariants broken." in broken.stderr
