"""Fulfil only what was paid for (issue 7, finding 3), and no orphans: `reconcileorders` against the fake Stripe.

Finding 3: an order whose session was never recorded was fulfilled by a $1 Checkout Session of another
integration (a Payment Link with ?client_reference_id=N): 400 credits and the code on the success page.
"""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from storefront.models import Order, StripeEvent
from tests.storefront.conftest import deliver, event_body, make_pack, start_checkout
from vouchers.models import Voucher

pytestmark = pytest.mark.django_db


@pytest.fixture
def studio(db):
    return make_pack(name="Studio", credits=400, price_cents=2800)


def unrecorded_order(client, fake_stripe, pack, *, lost_response: bool) -> Order:
    """POST /checkout/ where Stripe fails to answer: the order stays pending without a session.

    `lost_response`: Stripe created the session but its answer was lost (so a real session with our metadata
    exists); otherwise Stripe never created one.
    """
    if lost_response:
        fake_stripe.drop_response_next(method="POST")
    else:
        fake_stripe.hang_next(method="POST")
    response = client.post("/checkout/", {"pack": pack.pk})
    assert response.status_code == 502
    order = Order.objects.get()
    assert (order.status, order.stripe_session_id) == ("pending", None)
    return order


def completed(session: dict) -> str:
    return event_body("checkout.session.completed", session)


# --- finding 3: someone else's session ---------------------------------------------------------------------


def test_attack_foreign_one_dollar_session_naming_an_unrecorded_order_gets_nothing(
    client, fake_stripe, studio, assert_audit_clean
):
    order = unrecorded_order(client, fake_stripe, studio, lost_response=False)
    foreign = fake_stripe.foreign_session(amount=100, client_reference_id=str(order.pk))

    assert deliver(client, completed(foreign)).status_code == 200
    page = client.get("/checkout/success/", {"session_id": foreign["id"]})

    assert page.status_code == 404
    assert not Voucher.objects.exists()
    order.refresh_from_db()
    assert (order.status, order.stripe_session_id) == ("pending", None)
    assert StripeEvent.objects.get().processed_at is not None  # acknowledged: Stripe stops retrying
    assert_audit_clean()


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"amount": 100}, "session amount is 100, order amount 2800"),
        ({"amount": 2800, "currency": "eur"}, "session currency is eur, order currency usd"),
        ({"amount": 2800, "mode": "subscription"}, "session mode is subscription, not payment"),
    ],
    ids=["amount", "currency", "mode"],
)
def test_session_with_our_metadata_that_did_not_pay_the_order_issues_nothing_and_is_recorded(
    client, fake_stripe, studio, fields, problem, assert_audit_clean
):
    """E.g. an operator's Payment Link carrying order_id metadata: the order keeps the reason, Stripe gets 200."""
    order = unrecorded_order(client, fake_stripe, studio, lost_response=False)
    session = fake_stripe.foreign_session(metadata={"order_id": str(order.pk)}, **fields)

    assert deliver(client, completed(session)).status_code == 200

    order.refresh_from_db()
    assert order.status == "pending"
    assert order.problem == problem
    assert not Voucher.objects.exists()
    assert_audit_clean()


def test_our_session_whose_answer_was_lost_is_fulfilled_by_its_webhook(client, fake_stripe, studio, assert_audit_clean):
    order = unrecorded_order(client, fake_stripe, studio, lost_response=True)
    (session,) = fake_stripe.sessions.values()
    paid = fake_stripe.mark_paid(session["id"])

    assert deliver(client, completed(paid)).status_code == 200

    order.refresh_from_db()
    assert (order.status, order.stripe_session_id, order.amount_paid) == ("paid", session["id"], 2800)
    assert Voucher.objects.get(order=order).credits == 400
    assert_audit_clean()


def test_a_buyer_email_longer_than_the_order_keeps_never_stops_fulfilment(client, fake_stripe, studio):
    order = start_checkout(client, studio)
    fake_stripe.mark_paid(order.stripe_session_id, email=("a" * 64 + "@" + "b" * 250 + ".example"))

    assert deliver(client, completed(fake_stripe.sessions[order.stripe_session_id])).status_code == 200

    order.refresh_from_db()
    assert (order.status, order.email) == ("paid", "")
    assert Voucher.objects.filter(order=order).exists()


# --- reconcileorders ---------------------------------------------------------------------------------------


def reconcile() -> str:
    out = StringIO()
    call_command("reconcileorders", stdout=out)
    return out.getvalue()


def age(order: Order, **delta) -> None:
    Order.objects.filter(pk=order.pk).update(created_at=timezone.now() - timedelta(**delta))


def test_reconcile_fulfils_a_paid_session_whose_answer_and_webhook_were_lost(
    client, fake_stripe, studio, assert_audit_clean
):
    order = unrecorded_order(client, fake_stripe, studio, lost_response=True)
    (session,) = fake_stripe.sessions.values()
    fake_stripe.mark_paid(session["id"])
    age(order, minutes=40)
    fake_stripe.age_session(session["id"], seconds=40 * 60)

    assert "1 paid, 0 expired" in reconcile()

    order.refresh_from_db()
    assert (order.status, order.stripe_session_id) == ("paid", session["id"])
    assert Voucher.objects.filter(order=order).count() == 1
    assert "Checked 0 order(s)" in reconcile()  # nothing left to do
    assert_audit_clean()


def test_reconcile_expires_an_order_stripe_never_made_a_session_for(client, fake_stripe, studio):
    order = unrecorded_order(client, fake_stripe, studio, lost_response=False)
    fake_stripe.foreign_session(amount=100, client_reference_id=str(order.pk))  # not ours: ignored
    age(order, minutes=40)

    assert "0 paid, 1 expired" in reconcile()

    order.refresh_from_db()
    assert order.status == "expired"
    lists = [c for c in fake_stripe.calls("GET") if c.path == "/v1/checkout/sessions"]
    assert lists and "created" in lists[0].params


def test_reconcile_never_settles_an_order_with_a_session_that_did_not_pay_for_it(client, fake_stripe, studio):
    order = unrecorded_order(client, fake_stripe, studio, lost_response=False)
    wrong = fake_stripe.foreign_session(amount=100, metadata={"order_id": str(order.pk)})
    fake_stripe.age_session(wrong["id"], seconds=40 * 60)
    age(order, minutes=40)

    assert "0 paid, 1 expired, 0 could not be checked" in reconcile()

    order.refresh_from_db()
    assert (order.status, order.stripe_session_id) == ("expired", None)
    assert order.problem == "session amount is 100, order amount 2800"
    assert not Voucher.objects.exists()


def test_reconcile_leaves_a_young_unrecorded_order_alone(client, fake_stripe, studio):
    order = unrecorded_order(client, fake_stripe, studio, lost_response=False)
    assert "Checked 0 order(s)" in reconcile()
    order.refresh_from_db()
    assert order.status == "pending"


@pytest.mark.parametrize("outcome", ["expired", "paid", "open"])
def test_reconcile_settles_pending_orders_past_checkouts_expiry(client, fake_stripe, studio, outcome):
    order = start_checkout(client, studio)
    if outcome == "expired":
        fake_stripe.mark_expired(order.stripe_session_id)
    elif outcome == "paid":
        fake_stripe.mark_paid(order.stripe_session_id)
    age(order, hours=25)

    reconcile()

    order.refresh_from_db()
    assert order.status == {"expired": "expired", "paid": "paid", "open": "pending"}[outcome]
    assert Voucher.objects.filter(order=order).exists() == (outcome == "paid")


def test_reconcile_with_stripe_down_says_so_and_exits_1(client, fake_stripe, studio):
    order = start_checkout(client, studio)
    age(order, hours=25)
    fake_stripe.fail_next(503, method="GET")

    with pytest.raises(CommandError, match="could not be checked") as error:
        call_command("reconcileorders", stdout=StringIO())

    assert error.value.returncode == 1
    order.refresh_from_db()
    assert order.status == "pending"
