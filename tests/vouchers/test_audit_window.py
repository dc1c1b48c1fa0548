"""`auditcredits --since`: the windowed pass looks only at what changed since then, and catches each break planted
in the window (a balance, a voucher credited twice, a generation failed without its refund, an order paid the wrong
amount), while a break in untouched history is left to the full pass, which still catches it."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db.models import F
from django.utils import timezone

from discordbot.models import Generation
from discordbot.services import generation_reserve
from storefront.models import CreditPack, Order
from vouchers import services
from vouchers.audit import audit_credits
from vouchers.management.commands.auditcredits import parse_since
from vouchers.models import CreditAccount, LedgerEntry, Voucher

pytestmark = pytest.mark.django_db

OLD, NEW = 460_000_000_000_000_001, 460_000_000_000_000_002


@pytest.fixture
def history(db):
    """OLD's ledger is two days old; NEW moved an hour ago. Every invariant holds."""
    services.credits_grant(discord_user_id=OLD, amount=20, memo="welcome")
    services.credits_grant(discord_user_id=NEW, amount=20, memo="welcome")
    long_ago = timezone.now() - timedelta(days=2)
    LedgerEntry.objects.filter(account__discord_user_id=OLD).update(created_at=long_ago)
    CreditAccount.objects.filter(discord_user_id=OLD).update(updated_at=long_ago)
    broken = {name: p for name, p in audit_credits().items() if p}
    assert not broken, broken
    return timezone.now() - timedelta(days=1)


def broken(since=None) -> dict[str, list[str]]:
    return {name: p for name, p in audit_credits(since=since).items() if p}


def test_a_balance_broken_in_the_window_is_caught_and_one_in_old_history_is_left_to_the_full_pass(history):
    CreditAccount.objects.filter(discord_user_id=NEW).update(balance=F("balance") + 1)
    assert broken(history) == {
        "balance equals the sum of its ledger": [f"account {NEW}: balance 21 but ledger sums to 20"]
    }

    CreditAccount.objects.filter(discord_user_id=NEW).update(balance=F("balance") - 1)
    CreditAccount.objects.filter(discord_user_id=OLD).update(balance=F("balance") + 1)
    assert broken(history) == {}
    assert broken() == {"balance equals the sum of its ledger": [f"account {OLD}: balance 21 but ledger sums to 20"]}


def test_a_voucher_credited_twice_in_the_window_is_caught(history):
    voucher = services.voucher_issue(credits=5)
    services.voucher_redeem(code=voucher.code, discord_user_id=NEW)
    account = CreditAccount.objects.get(discord_user_id=NEW)
    LedgerEntry.objects.create(account=account, delta=5, kind="redeem", voucher=voucher, memo="again")
    CreditAccount.objects.filter(pk=account.pk).update(balance=F("balance") + 5)

    assert list(broken(history)) == ["each voucher credited at most once, only when redeemed"]


def test_a_generation_failed_without_its_refund_in_the_window_is_caught(history):
    gid = generation_reserve(discord_user_id=NEW, prompt="a tree").generation_id
    Generation.objects.filter(pk=gid).update(status=Generation.Status.FAILED, finished_at=timezone.now())

    assert broken(history) == {
        "each generation charged once, refunded at most once": [f"generation {gid}: failed but refunded 0 time(s)"]
    }


def test_an_order_paid_the_wrong_amount_in_the_window_is_caught(history):
    pack = CreditPack.objects.create(name="P", credits=10, price_cents=500)
    order = Order.objects.create(
        pack=pack, credits=10, amount_cents=500, currency="usd", status="paid", amount_paid=499, currency_paid="usd"
    )
    Voucher.objects.create(credits=10, order=order)

    assert broken(history) == {
        "every paid order was paid its amount": [
            f"order {order.pk}: sold for 500 usd, but the payment recorded is 499 usd"
        ]
    }


def test_the_command_takes_a_span_or_a_date_and_fails_on_a_break_in_the_window(history):
    out = StringIO()
    call_command("auditcredits", "--since", "1d", stdout=out)
    assert "All " in out.getvalue() and "invariants hold for what changed since" in out.getvalue()

    CreditAccount.objects.filter(discord_user_id=NEW).update(balance=F("balance") + 1)
    with pytest.raises(CommandError, match="1 of"):
        call_command("auditcredits", "--since", "12h", stdout=StringIO())
    assert abs(parse_since("90m") - (timezone.now() - timedelta(minutes=90))) < timedelta(seconds=5)
    assert parse_since("2026-11-30").tzinfo is not None
    with pytest.raises(CommandError, match="--since"):
        parse_since("yesterday")
