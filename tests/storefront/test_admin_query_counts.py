"""Every admin page (each registered model's list and change page, the searches operators type, the dashboard) runs
the same number of queries at 3 and at 30 rows of each kind: nothing is fetched per row (no N+1). A list's count
stops at a cap and says so; a whole code, email or Discord id is found by an exact lookup, not a substring scan.

Timings are not asserted here: bench/admin_scale.py measures them at 100,000 and 1,000,000 ledger rows."""

from datetime import timedelta

import pytest
from django.contrib import admin
from django.db import connection
from django.db.models import Count
from django.test.utils import CaptureQueriesContext
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from discordbot.models import BotProcess, Generation, MemberSettings
from storefront.models import CreditPack, Dispute, Order, Refund, StripeEvent
from vouchers.admin_base import CappedCountPaginator
from vouchers.models import Clawback, CreditAccount, LedgerEntry, Voucher

pytestmark = pytest.mark.django_db

BIG = 400_000_000_000_000_001  # the member every row of a kind also touches: their page grows with the rest
made = {"n": 0}


@pytest.fixture(autouse=True)
def _numbering_starts_again():
    made["n"] = 0  # each test's database starts empty (rolled back), and so do the numbers of what grow() makes


def grow(n: int) -> None:
    """n more of every kind: members, paid orders with redeemed vouchers, generations (charged, some refunded),
    refunds and disputes with their clawbacks, Stripe events, bot processes, member settings."""
    pack = CreditPack.objects.first() or CreditPack.objects.create(name="Pack", credits=10, price_cents=500)
    big, _ = CreditAccount.objects.get_or_create(discord_user_id=BIG, defaults={"discord_name": "Big (@big)"})
    now = timezone.now()
    for _ in range(n):
        made["n"] += 1
        i = made["n"]
        account = CreditAccount.objects.create(discord_user_id=BIG + i, discord_name=f"M{i} (@m{i})", balance=10)
        order = Order.objects.create(
            pack=pack, credits=10, amount_cents=500, currency="usd", status="paid", email=f"b{i}@example.com",
            discord_user_id=BIG + i, stripe_session_id=f"cs_test_{i:020d}", payment_intent_id=f"pi_{i:020d}",
            paid_at=now, amount_paid=500, currency_paid="usd",
        )  # fmt: skip
        voucher = Voucher.objects.create(
            credits=10, status="redeemed", order=order, redeemed_by=account, redeemed_at=now
        )
        for who in (account, big):
            LedgerEntry.objects.create(account=who, delta=10, kind="redeem", voucher=voucher, memo="Redeemed")
            gen = Generation.objects.create(account=who, prompt=f"prompt {i}", cost=2, count=2, status="failed")
            charge = LedgerEntry.objects.create(account=who, delta=-2, kind="generate", generation=gen)
            LedgerEntry.objects.create(account=who, delta=2, kind="refund", generation=gen, refund_of=charge)
        clawback = Clawback.objects.create(
            voucher=voucher, cause=f"refund re_{i}", credits=10, status="taken", account=account, taken=10,
            taken_at=now,
        )  # fmt: skip
        LedgerEntry.objects.create(account=account, delta=-10, kind="clawback", voucher=voucher, clawback=clawback)
        Refund.objects.create(stripe_refund_id=f"re_{i}", order=order, amount=500, status="succeeded", credits=10)
        Dispute.objects.create(
            stripe_dispute_id=f"du_{i}", order=order, status="needs_response", amount=500, currency="usd",
            credits_state="frozen",
        )  # fmt: skip
        StripeEvent.objects.create(event_id=f"evt_{i}", type="checkout.session.completed")
        BotProcess.objects.create(
            identity=f"bot-{i}", heartbeat_at=now, expires_at=now + timedelta(seconds=30), stopped_at=now
        )
        MemberSettings.objects.create(discord_user_id=BIG + i, size="1024x1024")


def pages() -> list[tuple[str, str]]:
    """Every registered model's list and the change page of one object (the busiest account), plus searches."""
    found = []
    for model in admin.site._registry:
        opts = model._meta
        try:
            found.append((f"{opts.label} list", reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")))
        except NoReverseMatch:
            continue
        if model is CreditAccount:
            obj = CreditAccount.objects.annotate(n=Count("ledger")).order_by("-n").first()
        else:
            obj = model._default_manager.order_by("-pk").first()
        if obj is not None:
            url = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
            found.append((f"{opts.label} page", url))
    code = Voucher.objects.order_by("pk").first().code
    big = CreditAccount.objects.get(discord_user_id=BIG)
    for url_name, q in [
        ("vouchers_ledgerentry", str(BIG)), ("vouchers_ledgerentry", code), ("vouchers_creditaccount", str(BIG)),
        ("vouchers_creditaccount", "b1@example.com"), ("vouchers_creditaccount", "@m"),
        ("discordbot_generation", str(BIG)), ("discordbot_generation", "prompt"), ("vouchers_voucher", code),
        ("vouchers_voucher", str(BIG + 1)), ("storefront_order", str(BIG + 1)), ("storefront_order", "b1@example.com"),
        ("storefront_order", code), ("storefront_dispute", "du_1"),
    ]:  # fmt: skip
        found.append((f"{url_name} search {q}", reverse(f"admin:{url_name}_changelist") + f"?q={q}"))
    found.append(("ledger of the busiest member", reverse("admin:vouchers_ledgerentry_changelist")
                  + f"?account__id__exact={big.pk}"))  # fmt: skip
    found.append(("dashboard", reverse("admin:dashboard")))
    return found


def query_counts(client) -> dict[str, int]:
    counts = {}
    for label, url in pages():
        client.get(url)  # the first request of a session may write it; count a settled one
        with CaptureQueriesContext(connection) as queries:
            response = client.get(url)
        assert response.status_code == 200, (label, url, response.status_code)
        counts[label] = len(queries.captured_queries)
    return counts


def test_every_admin_page_runs_as_many_queries_at_30_rows_as_at_3(operator):
    grow(3)
    few = query_counts(operator)
    grow(27)
    many = query_counts(operator)

    assert set(many) == set(few) and len(few) >= 30
    grew = {label: (few[label], many[label]) for label in few if many[label] != few[label]}
    assert not grew, grew


def test_a_list_counts_up_to_its_cap_and_says_so(operator, monkeypatch):
    grow(3)
    monkeypatch.setattr(CappedCountPaginator, "COUNT_CAP", 4)
    url = reverse("admin:vouchers_ledgerentry_changelist")

    with CaptureQueriesContext(connection) as queries:
        response = operator.get(url)
    counts = [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]

    assert response.context["cl"].result_count == 4 and response.context["cl"].paginator.capped
    assert "more than 4 ledger entries" in response.content.decode()
    assert counts and all("LIMIT 5" in sql for sql in counts)  # never a count of the whole table
    small = operator.get(reverse("admin:vouchers_voucher_changelist"), {"q": str(BIG + 1)})
    html = small.content.decode()
    assert not small.context["cl"].paginator.capped, html[html.find("paginator") - 100 : html.find("paginator") + 300]
    assert "1 voucher" in html, html[html.find("paginator") - 100 : html.find("paginator") + 300]


@pytest.mark.parametrize(
    "url_name, by",
    [("vouchers_ledgerentry", "code"), ("vouchers_voucher", "code"), ("storefront_order", "code"),
     ("vouchers_creditaccount", "code"), ("vouchers_voucher", "email"), ("storefront_order", "email"),
     ("vouchers_creditaccount", "email")],
)  # fmt: skip
def test_a_whole_code_or_email_is_an_exact_lookup(operator, url_name, by):
    grow(3)
    voucher = Voucher.objects.get(order__email="b2@example.com")
    expected = {
        "vouchers_ledgerentry": set(LedgerEntry.objects.filter(voucher=voucher)),
        "vouchers_voucher": {voucher},
        "storefront_order": {voucher.order},
        "vouchers_creditaccount": {voucher.redeemed_by},
    }[url_name]

    with CaptureQueriesContext(connection) as queries:
        response = operator.get(
            reverse(f"admin:{url_name}_changelist"), {"q": voucher.code if by == "code" else "b2@example.com"}
        )
    sql = " ".join(x["sql"] for x in queries.captured_queries).upper()

    assert set(response.context["cl"].result_list) == expected
    assert "LIKE" not in sql
