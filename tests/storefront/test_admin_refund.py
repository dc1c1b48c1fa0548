"""Refunding an order from the admin: its own permission, Stripe's refund API (stripe-python against the fake
Stripe, which checks the parameters against stripe-python's own types), then the webhook's own settlement, once.

Attacks first: the webhook for the same refund redelivered after the admin settled it, a double submit, a
view-only user, more than is left, no reason, Stripe failing. `auditcredits` is clean after each.
"""

import pytest
from django.contrib.admin.models import LogEntry
from django.urls import reverse

from storefront.models import Order, Refund
from tests.storefront.conftest import charge_refunded_event, deliver, event_body, refund_event, start_checkout
from tests.vouchers.conftest import nothing_written
from vouchers.models import CreditAccount, LedgerEntry, Voucher
from vouchers.services import voucher_redeem

pytestmark = pytest.mark.django_db

MEMBER = 5_151_515_151


@pytest.fixture
def order(client, fake_stripe, pack) -> Order:
    """A fulfilled order for 150 credits at $12.00, its voucher redeemed by MEMBER."""
    order = start_checkout(client, pack)
    session = fake_stripe.mark_paid(order.stripe_session_id)
    assert deliver(client, event_body("checkout.session.completed", session)).status_code == 200
    order.refresh_from_db()
    assert (order.status, order.amount_cents, order.credits) == ("paid", 1200, 150)
    voucher_redeem(code=Voucher.objects.get(order=order).code, discord_user_id=MEMBER)
    return order


@pytest.fixture
def refunder(staff_login):
    return staff_login("storefront.view_order", "storefront.refund_order")


def refund_url(order: Order) -> str:
    return reverse("admin:storefront_order_refund", args=[order.pk])


def balance() -> tuple[int, int]:
    account = CreditAccount.objects.get(discord_user_id=MEMBER)
    return account.balance, account.owed


def refund_calls(fake_stripe) -> list:
    return fake_stripe.calls("POST", "/v1/refunds")


def form(refunder, order: Order, amount: str, memo: str = "buyer asked") -> dict:
    """The refund form as the page renders it (its hidden fields included), filled in."""
    page = refunder.get(refund_url(order))
    assert page.status_code == 200
    return {"amount": amount, "memo": memo, "refunds_seen": page.context["form"].initial["refunds_seen"]}


def test_full_refund_from_the_admin_then_the_webhook_redelivered_changes_nothing(
    client, fake_stripe, order, refunder, assert_audit_clean
):
    page = refunder.get(reverse("admin:storefront_order_change", args=[order.pk])).content.decode()
    assert refund_url(order) in page

    response = refunder.post(refund_url(order), form(refunder, order, "12.00", "duplicate purchase"))

    assert response.status_code == 302
    [call] = refund_calls(fake_stripe)
    assert call.params["payment_intent"] == order.payment_intent_id and call.params["amount"] == "1200"
    assert call.params["metadata"] == {"order_id": str(order.pk), "operator": "staff1", "reason": "duplicate purchase"}
    assert call.headers["idempotency-key"].startswith(f"refund-order-{order.pk}-")
    [refund] = Refund.objects.all()
    assert (refund.order_id, refund.amount, refund.status, refund.credits) == (order.pk, 1200, "succeeded", 150)
    assert refund.stripe_refund_id in fake_stripe.refunds
    order.refresh_from_db()
    assert (order.status, order.amount_refunded) == ("refunded", 1200)
    assert balance() == (0, 0)
    log = LogEntry.objects.get()
    assert log.user.username == "staff1" and "duplicate purchase" in log.change_message
    assert_audit_clean()

    # Stripe's own webhooks for this refund arrive after (and again): nothing changes.
    with nothing_written():
        for _ in range(2):
            assert deliver(client, charge_refunded_event(fake_stripe, order.stripe_session_id)).status_code == 200
        stripe_refund = fake_stripe.refunds[refund.stripe_refund_id]
        assert deliver(client, refund_event(stripe_refund)).status_code == 200
    assert Refund.objects.count() == 1 and len(refund_calls(fake_stripe)) == 1
    assert_audit_clean()


def test_partial_refund_takes_back_its_share_and_the_rest_can_be_refunded_later(
    client, fake_stripe, order, refunder, assert_audit_clean
):
    assert refunder.post(refund_url(order), form(refunder, order, "3.00")).status_code == 302
    assert balance() == (150 - 37, 0)  # floor(150 * 300 / 1200) = 37
    assert deliver(client, charge_refunded_event(fake_stripe, order.stripe_session_id)).status_code == 200
    assert balance() == (113, 0)

    # A second refund of the same amount, deliberately, from a fresh page: a refund of its own.
    assert refunder.post(refund_url(order), form(refunder, order, "3.00")).status_code == 302
    assert Refund.objects.count() == 2 and len(refund_calls(fake_stripe)) == 2
    assert balance() == (150 - 75, 0)  # floor(150 * 600 / 1200) = 75
    order.refresh_from_db()
    assert (order.status, order.amount_refunded) == ("paid", 600)
    assert_audit_clean()


def test_double_submit_refunds_once(fake_stripe, order, refunder, assert_audit_clean):
    data = form(refunder, order, "5.00")

    first = refunder.post(refund_url(order), data)
    second = refunder.post(refund_url(order), data)  # the same form, sent again

    assert (first.status_code, second.status_code) == (302, 302)
    assert len(fake_stripe.refunds) == 1  # Stripe replayed the first refund for the same idempotency key
    assert len({c.headers["idempotency-key"] for c in refund_calls(fake_stripe)}) == 1
    [refund] = Refund.objects.all()
    assert refund.amount == 500 and balance() == (150 - 62, 0)
    assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.CLAWBACK).count() == 1
    assert_audit_clean()


def test_double_submit_of_a_full_refund_refunds_once(fake_stripe, order, refunder, assert_audit_clean):
    data = form(refunder, order, "12.00")

    refunder.post(refund_url(order), data)
    second = refunder.post(refund_url(order), data, follow=True)

    assert "refunded in full" in str(list(second.context["messages"])[-1])
    assert len(fake_stripe.refunds) == 1 and Refund.objects.count() == 1
    assert_audit_clean()


def test_view_only_staff_gets_403_and_nothing_is_written_or_refunded(fake_stripe, order, staff_login, refunder):
    data = form(refunder, order, "12.00")
    viewer = staff_login("storefront.view_order", "vouchers.view_voucher", "storefront.resend_voucher_email")

    page = viewer.get(reverse("admin:storefront_order_change", args=[order.pk])).content.decode()
    with nothing_written():
        asked = viewer.get(refund_url(order))
        forged = viewer.post(refund_url(order), data)

    assert refund_url(order) not in page
    assert (asked.status_code, forged.status_code) == (403, 403)
    assert refund_calls(fake_stripe) == [] and not Refund.objects.exists() and not LogEntry.objects.exists()


@pytest.mark.parametrize("amount, memo", [("12.01", "too much"), ("0", "nothing"), ("-1", "negative"), ("5", " ")])
def test_bad_input_calls_nothing_and_writes_nothing(fake_stripe, order, refunder, amount, memo):
    with nothing_written():
        response = refunder.post(refund_url(order), form(refunder, order, amount, memo))

    assert response.status_code in (200, 400)
    assert refund_calls(fake_stripe) == [] and not Refund.objects.exists() and not LogEntry.objects.exists()


def test_more_than_stripe_has_left_is_refused_by_stripe_and_writes_nothing(
    client, fake_stripe, order, refunder, assert_audit_clean
):
    data = form(refunder, order, "10.00")
    fake_stripe.refund(order.stripe_session_id, amount=500)  # refunded in Stripe's dashboard; webhook not here yet

    with nothing_written():
        response = refunder.post(refund_url(order), data)

    assert response.status_code == 400
    assert "more than is left" in response.content.decode()
    assert len(fake_stripe.refunds) == 1 and not Refund.objects.exists()
    assert_audit_clean()


def test_stripe_down_records_nothing_and_a_retry_refunds_once(fake_stripe, order, refunder, settings):
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    data = form(refunder, order, "12.00")
    fake_stripe.fail_next(500, method="POST")

    with nothing_written():
        failed = refunder.post(refund_url(order), data)

    assert failed.status_code == 400 and "Try again" in failed.content.decode()
    assert refunder.post(refund_url(order), data).status_code == 302
    assert len(fake_stripe.refunds) == 1 and Refund.objects.get().credits == 150


def test_unpaid_order_has_nothing_to_refund(client, fake_stripe, pack, refunder):
    pending = start_checkout(client, pack)

    response = refunder.post(refund_url(pending), {"amount": "1", "memo": "x", "refunds_seen": "0"}, follow=True)

    assert "never paid" in str(list(response.context["messages"])[0])
    assert refund_calls(fake_stripe) == [] and not Refund.objects.exists()


def test_fake_stripe_refuses_what_stripe_refuses(fake_stripe, order):
    """The fake's own refusals, through stripe-python: unknown parameters, unknown payment, too much."""
    import stripe

    client = stripe.StripeClient(fake_stripe.api_key, base_addresses={"api": fake_stripe.url})
    intent = order.payment_intent_id
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        client.v1.refunds.create(params={"payment_intent": intent, "amount": 100, "refund_reason": "x"})  # type: ignore[typeddict-unknown-key]
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.refunds.create(params={"payment_intent": "pi_nope", "amount": 100})
    with pytest.raises(stripe.InvalidRequestError) as too_large:
        client.v1.refunds.create(params={"payment_intent": intent, "amount": 1201})
    client.v1.refunds.create(params={"payment_intent": intent})
    with pytest.raises(stripe.InvalidRequestError) as already:
        client.v1.refunds.create(params={"payment_intent": intent, "amount": 1})

    assert (unknown.value.code, missing.value.code) == ("parameter_unknown", "resource_missing")
    assert (too_large.value.code, already.value.code) == ("amount_too_large", "charge_already_refunded")


# --- the test-mode backend refunds locally, with the same rules ------------------------------------------------


@pytest.fixture
def test_mode_order(client, settings, pack) -> Order:
    settings.DEBUG = True
    settings.PAYMENTS_BACKEND = "test"
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"  # any call to "Stripe" would fail loudly
    order = start_checkout(client, pack)
    client.post(f"/checkout/test/{order.stripe_session_id}/", {"action": "pay", "email": "dev@example.com"})
    order.refresh_from_db()
    assert order.status == "paid" and order.payment_intent_id.startswith("pi_localtest_")
    voucher_redeem(code=Voucher.objects.get(order=order).code, discord_user_id=MEMBER)
    return order


def test_test_mode_refunds_locally_once_and_refuses_more_than_is_left(test_mode_order, refunder, assert_audit_clean):
    data = form(refunder, test_mode_order, "6.00")

    assert refunder.post(refund_url(test_mode_order), data).status_code == 302
    assert refunder.post(refund_url(test_mode_order), data).status_code == 302  # double submit
    [refund] = Refund.objects.all()
    assert refund.stripe_refund_id.startswith("re_localtest_") and (refund.amount, refund.credits) == (600, 75)
    assert balance() == (75, 0)

    with nothing_written():
        too_much = refunder.post(refund_url(test_mode_order), form(refunder, test_mode_order, "6.01"))
    assert too_much.status_code == 400
    assert refunder.post(refund_url(test_mode_order), form(refunder, test_mode_order, "6.00")).status_code == 302
    test_mode_order.refresh_from_db()
    assert (test_mode_order.status, Refund.objects.count(), balance()) == ("refunded", 2, (0, 0))
    assert_audit_clean()
