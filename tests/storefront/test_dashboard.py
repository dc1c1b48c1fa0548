"""Money at a glance: the dashboard's figures against a seeded history whose totals are known, its daily charts,
its CSV exports (codes masked, formulas defused), and its permission.

The history is made through the real services (checkout orders, vouchers, redeems, grants, generations, refunds)
and then moved to known days, so each figure below is worked out by hand in the comments.
"""

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.urls import reverse

from discordbot.models import Generation
from discordbot.services import (
    generation_fail_and_refund,
    generation_record_spend,
    generation_reserve,
    generation_start,
    generation_succeed,
)
from storefront.models import Dispute, Order, Refund
from storefront.payments import RefundInfo
from storefront.services import DisputeInfo, order_dispute_update, order_refund_apply
from tests.storefront.conftest import make_order, make_pack
from vouchers import services
from vouchers.codes import mask_code
from vouchers.models import LedgerEntry, Voucher

pytestmark = pytest.mark.django_db

DASHBOARD = reverse("admin:dashboard")
NOVEMBER = {"start": "2026-11-01", "end": "2026-11-30"}
ALICE, BOB, CAROL = 900_000_000_000_000_001, 900_000_000_000_000_002, 900_000_000_000_000_003


def at(day: str, hour: int = 12) -> datetime:
    return datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC)


def paid_order(*, credits: int, cents: int, currency: str = "usd", paid: str, pi: str) -> Order:
    pack = make_pack(name=f"{credits} pack", credits=credits, price_cents=cents, currency=currency)
    order = make_order(pack=pack, status="paid", payment_intent_id=pi, email=f"{pi}@example.com")
    Order.objects.filter(pk=order.pk).update(
        created_at=at(paid) - timedelta(minutes=5), paid_at=at(paid), amount_paid=cents, currency_paid=currency
    )
    services.voucher_issue(credits=credits, order=order, note=f"Order #{order.pk}")
    return Order.objects.get(pk=order.pk)


def redeem(order_or_voucher, member: int, day: str) -> None:
    voucher = order_or_voucher if isinstance(order_or_voucher, Voucher) else order_or_voucher.voucher
    services.voucher_redeem(code=voucher.code, discord_user_id=member)
    LedgerEntry.objects.filter(voucher=voucher, kind="redeem").update(created_at=at(day))


def refund(order: Order, day: str, *, amount: int | None = None, refund_id: str = "", fails: bool = False) -> None:
    """A Stripe refund applied on `day` (all of the order unless `amount`); `fails`: it then failed."""
    info = RefundInfo(id=refund_id or f"re_{order.pk}", amount=amount or order.amount_cents, status="succeeded")
    order_refund_apply(order_id=order.pk, refund=info)
    if fails:
        order_refund_apply(order_id=order.pk, refund=RefundInfo(id=info.id, amount=info.amount, status="failed"))
    Refund.objects.filter(stripe_refund_id=info.id).update(applied_at=at(day))
    Voucher.objects.filter(order=order).update(refunded_at=at(day))
    LedgerEntry.objects.filter(voucher__order=order, kind="clawback").update(created_at=at(day))


def dispute(order: Order, dispute_id: str, *, opened: str, closed: str = "", outcome: str = "") -> None:
    """A chargeback opened on `opened` and, if `closed`, won or lost (`outcome`) that day."""
    info = dict(id=dispute_id, payment_intent_id=order.payment_intent_id, reason="fraudulent")
    info.update(amount=order.amount_cents, currency=order.currency, evidence_due_by=None)
    order_dispute_update(dispute=DisputeInfo(status="needs_response", **info))
    Dispute.objects.filter(stripe_dispute_id=dispute_id).update(created_at=at(opened))
    if closed:
        order_dispute_update(dispute=DisputeInfo(status=outcome, **info))
        Dispute.objects.filter(stripe_dispute_id=dispute_id).update(closed_at=at(closed))


def generation(
    member: int,
    day: str,
    *,
    size: str,
    quality: str,
    delivered: bool = True,
    prompt: str = "a cat",
    spend: int | None = None,
):
    gid = generation_reserve(discord_user_id=member, prompt=prompt, size=size, quality=quality).generation_id
    if spend is not None:  # what the image service charged, as the pipeline reports it
        generation_record_spend(generation_id=gid, micros=spend)
    generation_start(generation_id=gid)
    if delivered:
        # The bot marks it delivering (under its lease) before the upload; then Discord has it.
        Generation.objects.filter(pk=gid).update(status=Generation.Status.DELIVERING)
        generation_succeed(generation_id=gid, message_id=gid)
    else:
        generation_fail_and_refund(generation_id=gid, error="moderation_blocked")
    Generation.objects.filter(pk=gid).update(created_at=at(day))
    LedgerEntry.objects.filter(generation_id=gid).update(created_at=at(day, 13))
    return gid


@pytest.fixture
def history(db):
    """November 2026, with a few things just outside it. Expected figures are in `test_figures_*`."""
    a = paid_order(credits=150, cents=1200, paid="2026-11-03", pi="pi_a")
    b = paid_order(credits=50, cents=500, paid="2026-11-10", pi="pi_b")
    c = paid_order(credits=100, cents=900, currency="eur", paid="2026-11-20", pi="pi_c")
    d = paid_order(credits=400, cents=2800, paid="2026-10-31", pi="pi_d")  # paid before, refunded inside
    f = paid_order(credits=150, cents=1200, paid="2026-12-01", pi="pi_f")  # after the period
    pending = make_order(pack=a.pack, email="pending@example.com")
    Order.objects.filter(pk=pending.pk).update(created_at=at("2026-11-21"))

    redeem(a, ALICE, "2026-11-04")  # sold 150
    gift = services.voucher_issue(credits=20, note="giveaway")
    redeem(gift, ALICE, "2026-11-05")  # given 20
    services.voucher_issue(credits=30, note="not yet redeemed")
    services.credits_grant(discord_user_id=ALICE, amount=7, memo="outage")
    LedgerEntry.objects.filter(kind="grant").update(created_at=at("2026-11-06"))  # granted 7

    # Credits charged, and what the image service charged for each (micro-dollars).
    generation(ALICE, "2026-11-04", size="1024x1024", quality="medium", spend=42_000)  # 1
    generation(ALICE, "2026-11-04", size="1024x1024", quality="medium", spend=42_000)  # 1
    generation(ALICE, "2026-11-15", size="1024x1024", quality="medium", prompt="=HYPERLINK(1)", spend=42_000)  # 1
    generation(ALICE, "2026-11-15", size="1536x1024", quality="high", spend=250_000)  # 4
    # 2, refunded (made and billed, then its upload failed)
    generation(ALICE, "2026-11-16", size="1536x1024", quality="medium", delivered=False, spend=63_000)

    redeem(b, BOB, "2026-11-10")  # sold 50
    generation(BOB, "2026-11-11", size="1024x1536", quality="medium")  # 2, its cost never reported
    refund(b, "2026-11-12")  # Bob has 48 left: clawed back 48
    refund(d, "2026-11-02")  # unredeemed: voided, no clawback

    e = paid_order(credits=200, cents=2000, paid="2026-11-05", pi="pi_e")  # unredeemed
    refund(e, "2026-11-07", amount=500, refund_id="re_e1")  # partial: $5 of $20 (50 credits held on the voucher)
    refund(e, "2026-11-08", amount=300, refund_id="re_e2", fails=True)  # failed: not counted, its credits back
    g = paid_order(credits=100, cents=1000, paid="2026-11-06", pi="pi_g")
    dispute(g, "du_g", opened="2026-11-08", closed="2026-11-25", outcome="lost")  # voucher void for good
    h = paid_order(credits=80, cents=800, paid="2026-11-07", pi="pi_h")
    dispute(h, "du_h", opened="2026-11-09", closed="2026-11-20", outcome="won")  # voucher active again

    services.credits_grant(discord_user_id=CAROL, amount=100, memo="after the period")
    LedgerEntry.objects.filter(account__discord_user_id=CAROL).update(created_at=at("2026-12-01"))
    return {"a": a, "b": b, "c": c, "d": d, "e": e, "f": f, "g": g, "h": h, "gift": gift}


def dashboard(client, **params):
    response = client.get(DASHBOARD, params or NOVEMBER)
    assert response.status_code == 200
    return response


def test_figures_for_money(operator, history):
    rows = {r["currency"]: r for r in dashboard(operator).context["revenue_rows"]}

    # USD: paid in November a ($12), b ($5), e ($20), g ($10), h ($8) = $55; refunds applied in November:
    # b ($5), d ($28, paid in October) and e's partial $5 (its failed $3 not counted) = $38.
    usd = rows["USD"]
    assert usd["paid_orders"] == 5 and usd["revenue"] == "$55.00"
    assert (usd["refund_count"], usd["refunded_orders"], usd["refunds"]) == (3, 3, "$38.00")
    # Disputes: g and h opened ($18), g lost ($10), h won ($8). Net: 55 - 38 - 10 = $7.
    assert (usd["disputes_opened"], usd["disputes_opened_amount"]) == (2, "$18.00")
    assert (usd["disputes_lost"], usd["disputes_lost_amount"]) == (1, "$10.00")
    assert (usd["disputes_won"], usd["disputes_won_amount"]) == (1, "$8.00")
    assert usd["net"] == "$7.00"
    assert (rows["EUR"]["paid_orders"], rows["EUR"]["revenue"], rows["EUR"]["net"]) == (1, "€9.00", "€9.00")
    assert set(rows) == {"USD", "EUR"}


def test_figures_for_credits(operator, history, assert_audit_clean):
    credits = dashboard(operator).context["credits"]

    assert (credits.sold, credits.gifted, credits.granted) == (150 + 50, 20, 7)
    assert credits.charged == 1 + 1 + 1 + 4 + 2 + 2
    assert credits.refunded == 2
    assert credits.spent == 9
    assert credits.clawed_back == 48
    # Now, whatever the period: Alice 150+20+7-(1+1+1+4+2)+2 = 170, Bob 0, Carol 100; vouchers c, f and the 30.
    assert credits.outstanding == 270
    # Bob spent 2 of his 50 before his refund: the clawback took 48 and the 2 are owed.
    assert credits.owed == 2
    # Active vouchers: c, f, the unredeemed 30, e (its 50 held, taken when redeemed), h (dispute won).
    assert credits.unredeemed == 100 + 150 + 30 + 200 + 80
    kinds = {k.kind: (k.entries, k.credits) for k in credits.by_kind}
    assert kinds == {"redeem": (3, 220), "grant": (1, 7), "generate": (6, -11), "refund": (1, 2), "clawback": (1, -48)}
    assert_audit_clean()


def test_figures_for_images(operator, history):
    images = dashboard(operator).context["images"]

    assert (images.requested, images.delivered, images.delivered_credits) == (6, 5, 1 + 1 + 1 + 4 + 2)
    assert images.by_status == {"succeeded": 5, "refunded": 1}
    assert images.by_size_quality == [("1024x1024", "medium", 3), ("1024x1536", "medium", 1), ("1536x1024", "high", 1)]


def test_figures_for_image_cost_and_margin(operator, history):
    response = dashboard(operator)
    images, spend = response.context["images"], response.context["spend"]

    # 42,000 x 3 + 250,000 + 63,000 (the refunded one was billed too) = 439,000 micro-dollars; Bob's not reported.
    assert (images.spend_micros, images.spend_reported, images.spend_not_reported) == (439_000, 5, 1)
    assert images.delivered_not_reported == 1
    assert (spend["cost"], spend["per_image"]) == ("$0.44", "$0.0878")  # 439,000 / 5 delivered
    # USD net $7.00 (see test_figures_for_money) minus $0.439.
    assert (spend["margin_micros"], spend["margin"]) == (6_561_000, "$6.56")
    assert spend["other_currencies"] == ["EUR"]
    html = response.content.decode()
    assert "1 delivered image without a figure" in html and "sales in EUR are not converted" in html


def test_spend_guard_off_and_on_today(operator, settings, db):
    services.credits_grant(discord_user_id=CAROL, amount=10, memo="test funds")
    gid = generation_reserve(discord_user_id=CAROL, prompt="today").generation_id
    generation_record_spend(generation_id=gid, micros=1_250_000)

    settings.IMAGE_SPEND_DAILY_BUDGET_USD = None
    off = operator.get(DASHBOARD)
    assert not off.context["spend"]["guard_on"] and "Off (set IMAGE_SPEND_DAILY_BUDGET_USD" in off.content.decode()

    settings.IMAGE_SPEND_DAILY_BUDGET_USD = Decimal("5")
    under = operator.get(DASHBOARD).context["spend"]
    assert (under["guard_on"], under["reached"], under["today"], under["budget"]) == (True, False, "$1.2500", "$5.00")

    settings.IMAGE_SPEND_DAILY_BUDGET_USD = Decimal("1.25")
    reached = operator.get(DASHBOARD)
    assert reached.context["spend"]["reached"]
    assert "reached: new /generate requests are refused" in reached.content.decode()


def test_a_shorter_period_counts_only_its_days(operator, history):
    response = dashboard(operator, start="2026-11-04", end="2026-11-04")

    assert response.context["credits"].sold == 150
    assert response.context["credits"].charged == 2
    assert response.context["images"].delivered == 2
    assert response.context["revenue_rows"] == []


def test_daily_charts_are_inline_svg_with_a_bar_per_day(operator, history):
    html = dashboard(operator).content.decode()

    assert html.count('<figure class="chart"><svg') == 4  # revenue in USD, in EUR, credits spent, images delivered
    assert "<title>2026-11-03: $12.00</title>" in html and "<title>2026-11-10: $5.00</title>" in html
    assert "<title>2026-11-04: 2</title>" in html  # two images (and two credits) that day
    assert "<title>2026-11-16: 0</title>" in html  # the refunded request cost nothing net
    assert html.count('<rect class="bar"') == 4 * 30
    assert "cdn" not in html.lower() and '<script src="http' not in html


def test_default_period_is_the_last_30_days(operator, db):
    response = operator.get(DASHBOARD)

    period = response.context["period"]
    today = datetime.now(UTC).date()
    assert (period.first, period.last) == (today - timedelta(days=29), today)


def test_a_period_that_ends_before_it_starts_is_refused_plainly(operator, db):
    response = operator.get(DASHBOARD, {"start": "2026-11-30", "end": "2026-11-01"})

    assert response.status_code == 200
    assert "must start on or before" in response.content.decode()
    assert (
        operator.get(
            reverse("admin:dashboard_export", args=["orders"]), {"start": "2026-11-30", "end": "2026-11-01"}
        ).status_code
        == 400
    )


# --- CSV exports ----------------------------------------------------------------------------------------------


def export(client, kind: str, **params) -> list[dict[str, str]]:
    response = client.get(reverse("admin:dashboard_export", args=[kind]), params or NOVEMBER)
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv"
    body = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(body)))


def test_orders_export_has_the_orders_created_in_the_period(operator, history):
    rows = export(operator, "orders")

    assert sorted(r["payment_intent_id"] for r in rows) == ["", "pi_a", "pi_b", "pi_c", "pi_e", "pi_g", "pi_h"]
    a = next(r for r in rows if r["payment_intent_id"] == "pi_a")
    assert (a["amount_cents"], a["currency"], a["status"]) == ("1200", "usd", "paid")
    assert a["voucher_code"] == history["a"].voucher.code  # the operator is a superuser: may see codes


def test_ledger_export_matches_the_dashboard(operator, history):
    rows = export(operator, "ledger")

    assert sum(int(r["delta"]) for r in rows) == 220 + 7 - 11 + 2 - 48
    assert {r["kind"] for r in rows} == {"redeem", "grant", "generate", "refund", "clawback"}


def test_generations_export_defuses_spreadsheet_formulas(operator, history):
    rows = export(operator, "generations")

    assert len(rows) == 6
    assert "'=HYPERLINK(1)" in {r["prompt"] for r in rows}
    assert {r["status"] for r in rows} == {"succeeded", "refunded"}


def test_exports_mask_codes_and_session_ids_without_see_codes(staff_login, history):
    Order.objects.filter(pk=history["a"].pk).update(stripe_session_id="cs_test_a1b2c3d4e5f6g7h8i9")
    viewer = staff_login("storefront.view_dashboard")
    code = history["a"].voucher.code

    orders = export(viewer, "orders")
    ledger = export(viewer, "ledger")

    a = next(r for r in orders if r["payment_intent_id"] == "pi_a")
    assert a["voucher_code"] == mask_code(code)
    assert "a1b2c3d4e5f6g7h8" not in a["stripe_session_id"]
    assert all(code not in ",".join(r.values()) for r in ledger)
    assert any(mask_code(code) in r["memo"] for r in ledger)


def test_unknown_export_is_not_found(operator, db):
    assert operator.get(reverse("admin:dashboard_export", args=["users"])).status_code == 404


# --- permission ---------------------------------------------------------------------------------------------------


def test_staff_without_the_dashboard_permission_get_403_and_no_link(staff_login, history):
    viewer = staff_login("storefront.view_order", "vouchers.view_ledgerentry", "discordbot.view_generation")

    assert viewer.get(DASHBOARD).status_code == 403
    for kind in ["orders", "ledger", "generations"]:
        assert viewer.get(reverse("admin:dashboard_export", args=[kind]), NOVEMBER).status_code == 403
    assert DASHBOARD not in viewer.get(reverse("admin:index")).content.decode()


def test_the_dashboard_permission_opens_the_page_and_its_link(staff_login, history):
    viewer = staff_login("storefront.view_dashboard")

    assert dashboard(viewer).context["credits"].sold == 200
    assert DASHBOARD in viewer.get(reverse("admin:index")).content.decode()


def test_anonymous_visitors_are_sent_to_the_login(client, db):
    response = client.get(DASHBOARD)

    assert response.status_code == 302 and "/login/" in response["Location"]
