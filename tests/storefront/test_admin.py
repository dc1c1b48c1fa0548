"""Operator pages: packs editable; orders and Stripe events are read-only history, searchable and filterable."""

import csv
import io

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from discordbot.models import Generation
from storefront.models import CreditPack, Dispute, Order, StripeEvent
from tests.storefront.conftest import deliver, dispute_event, event_body, make_order, make_pack, start_checkout
from vouchers.models import CreditAccount, Voucher
from vouchers.services import credits_grant, voucher_issue, voucher_redeem

pytestmark = pytest.mark.django_db


@pytest.fixture
def orders(db) -> dict[str, Order]:
    pack = make_pack(name="Creator")
    paid = make_order(
        pack=pack,
        status="paid",
        email="ada@example.com",
        stripe_session_id="cs_test_paid_one",
        payment_intent_id="pi_paid_one",
        discord_user_id=123456789012345678,
    )
    voucher_issue(credits=paid.credits, order=paid)
    pending = make_order(pack=pack, email="bob@example.com", stripe_session_id="cs_test_pending_two")
    return {"paid": paid, "pending": pending}


def test_packs_are_editable(operator, no_packs):
    response = operator.post(
        reverse("admin:storefront_creditpack_add"),
        {"name": "Mega", "credits": 1000, "price_cents": 6000, "currency": "usd", "active": "on", "sort_order": 5},
    )

    assert response.status_code == 302
    pack = CreditPack.objects.get()
    assert (pack.name, pack.credits, pack.price_cents) == ("Mega", 1000, 6000)
    page = operator.get(reverse("admin:storefront_creditpack_changelist")).content.decode()
    assert "$60.00" in page and "$0.06" in page


def test_pack_admin_refuses_a_zero_price(operator, no_packs):
    operator.post(
        reverse("admin:storefront_creditpack_add"),
        {"name": "Free", "credits": 10, "price_cents": 0, "currency": "usd", "sort_order": 1},
    )
    # The database CHECK backs the rule; the admin must not have saved it.
    assert not CreditPack.objects.filter(price_cents=0).exists()


def test_order_list_shows_the_voucher_code(operator, orders):
    code = orders["paid"].voucher.code

    page = operator.get(reverse("admin:storefront_order_changelist")).content.decode()

    assert code in page
    assert "ada@example.com" in page and "bob@example.com" in page


@pytest.mark.parametrize(
    "query, found",
    [
        ("ada@example", "paid"),
        ("cs_test_pending_two", "pending"),
        ("pi_paid_one", "paid"),
        ("123456789012345678", "paid"),
        ("not-a-number", None),
    ],
)
def test_orders_are_searchable(operator, orders, query, found):
    response = operator.get(reverse("admin:storefront_order_changelist"), {"q": query})

    assert response.status_code == 200
    shown = {name for name, order in orders.items() if order in response.context["cl"].result_list}
    assert shown == ({found} if found else set())


def test_orders_are_searchable_by_voucher_code(operator, orders):
    code = orders["paid"].voucher.code

    response = operator.get(reverse("admin:storefront_order_changelist"), {"q": code})

    assert list(response.context["cl"].result_list) == [orders["paid"]]


def test_orders_filter_by_status(operator, orders):
    response = operator.get(reverse("admin:storefront_order_changelist"), {"status__exact": "pending"})

    assert list(response.context["cl"].result_list) == [orders["pending"]]


def test_orders_are_read_only(operator, orders):
    order = orders["paid"]
    change_url = reverse("admin:storefront_order_change", args=[order.pk])

    page = operator.get(change_url)
    operator.post(change_url, {"status": "pending", "email": "evil@example.com"})

    assert page.status_code == 200
    assert order.voucher.code in page.content.decode()
    assert 'name="email"' not in page.content.decode()  # shown as text, not as a field
    assert 'name="status"' not in page.content.decode()
    order.refresh_from_db()
    assert (order.status, order.email) == ("paid", "ada@example.com")
    assert operator.get(reverse("admin:storefront_order_add")).status_code == 403
    assert operator.post(reverse("admin:storefront_order_delete", args=[order.pk]), {"post": "yes"}).status_code == 403
    assert Order.objects.filter(pk=order.pk).exists()


def test_stripe_events_are_read_only_and_searchable(operator):
    StripeEvent.objects.create(event_id="evt_found", type="checkout.session.completed", error="boom")
    StripeEvent.objects.create(event_id="evt_other", type="charge.refunded")
    changelist = reverse("admin:storefront_stripeevent_changelist")

    found = operator.get(changelist, {"q": "evt_found"})
    by_type = operator.get(changelist, {"type__exact": "charge.refunded"})
    event = StripeEvent.objects.get(event_id="evt_found")
    change = operator.get(reverse("admin:storefront_stripeevent_change", args=[event.pk]))
    operator.post(reverse("admin:storefront_stripeevent_change", args=[event.pk]), {"error": ""})

    assert [e.event_id for e in found.context["cl"].result_list] == ["evt_found"]
    assert [e.event_id for e in by_type.context["cl"].result_list] == ["evt_other"]
    assert "boom" in change.content.decode()
    assert 'name="error"' not in change.content.decode()
    event.refresh_from_db()
    assert event.error == "boom"
    assert operator.get(reverse("admin:storefront_stripeevent_add")).status_code == 403
    delete = reverse("admin:storefront_stripeevent_delete", args=[event.pk])
    assert operator.post(delete, {"post": "yes"}).status_code == 403
    assert StripeEvent.objects.count() == 2


# --- disputes -------------------------------------------------------------------------------------------


@pytest.fixture
def disputed(client, fake_stripe, pack):
    """A paid order, redeemed by a member who generated before and after redeeming, then disputed."""
    order = start_checkout(client, pack)
    deliver(client, event_body("checkout.session.completed", fake_stripe.mark_paid(order.stripe_session_id)))
    credits_grant(discord_user_id=555, amount=1, memo="before")
    account = CreditAccount.objects.get(discord_user_id=555)
    Generation.objects.create(account=account, prompt="before the voucher", cost=1, status="succeeded")
    voucher_redeem(code=Voucher.objects.get(order=order).code, discord_user_id=555)
    Generation.objects.create(account=account, prompt="a red fox", cost=1, status="succeeded", message_id=42)
    Generation.objects.create(account=account, prompt="=HYPERLINK(1)", cost=2, status="failed", error="blocked")
    deliver(client, dispute_event(fake_stripe.dispute(order.stripe_session_id)))
    return Dispute.objects.get()


def test_disputes_are_listed_read_only_with_their_credits(operator, disputed):
    page = operator.get(reverse("admin:storefront_dispute_changelist")).content.decode()

    assert disputed.stripe_dispute_id in page and "needs_response" in page and "fraudulent" in page
    assert "$12.00" in page and "Generation log (CSV)" in page
    detail = operator.get(reverse("admin:storefront_dispute_change", args=[disputed.pk]))
    assert detail.status_code == 200
    assert operator.get(reverse("admin:storefront_dispute_add")).status_code == 403


def test_dispute_evidence_export_is_the_members_generation_log_since_redeeming(operator, disputed):
    response = operator.get(reverse("admin:storefront_dispute_generation_log", args=[disputed.pk]))

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert f"dispute-{disputed.stripe_dispute_id}-generations.csv" in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0][:2] == ["# dispute", disputed.stripe_dispute_id]
    assert rows[1][1] == "555"
    header, *log = rows[2:]
    assert header[0] == "generation id"
    prompts = [row[header.index("prompt")] for row in log]
    assert prompts == ["a red fox", "'=HYPERLINK(1)"]  # nothing before the redeem; no formula injection
    assert log[0][header.index("discord message id")] == "42"


def test_dispute_evidence_export_needs_admin_rights(client, disputed):
    url = reverse("admin:storefront_dispute_generation_log", args=[disputed.pk])
    assert client.get(url).status_code == 302  # to the login page
    staff = get_user_model().objects.create_user("helper", "h@example.com", "pw", is_staff=True)
    client.force_login(staff)
    assert client.get(url).status_code == 403  # staff without the dispute view permission
