"""POST /stripe/webhook/ with real Stripe-style signatures, against the fake Stripe API for session lookups."""

import json
import time

import pytest
from django.core import mail

from storefront.models import Order, StripeEvent
from storefront.services import stripe_event_retry_delay
from storefront.tokens import buy_token_make
from tests.storefront.conftest import (
    charge_refunded_event,
    deliver,
    event_body,
    process_events,
    sign,
    start_checkout,
)
from vouchers.models import CreditAccount, LedgerEntry, Voucher
from vouchers.services import voucher_redeem

pytestmark = pytest.mark.django_db


def snapshot() -> tuple:
    """Everything a webhook could write."""
    return (
        list(StripeEvent.objects.values_list("event_id", "processed_at", "error", "attempts")),
        list(Order.objects.values_list("pk", "status", "payment_intent_id", "email", "paid_at")),
        list(Voucher.objects.values_list("pk", "status", "refunded_at")),
        list(LedgerEntry.objects.values_list("pk")),
        list(CreditAccount.objects.values_list("pk", "balance")),
    )


@pytest.fixture
def paid_order(client, fake_stripe, pack) -> Order:
    """An order whose Checkout Session the fake Stripe now reports paid (no webhook delivered yet)."""
    order = start_checkout(client, pack)
    fake_stripe.mark_paid(order.stripe_session_id, email="buyer@example.com")
    return order


def completed(order: Order, fake_stripe, **event) -> str:
    return event_body("checkout.session.completed", fake_stripe.sessions[order.stripe_session_id], **event)


# --- signature and shape: refused with 400, nothing written ---------------------------------------------


def test_forged_signature_is_refused_and_writes_nothing(client, fake_stripe, paid_order):
    body = completed(paid_order, fake_stripe)
    header = sign(body)
    tampered = body.replace('"livemode": false', '"livemode": true')
    before = snapshot()

    response = deliver(client, tampered, signature=header)

    assert response.status_code == 400
    assert snapshot() == before
    assert fake_stripe.calls("GET") == []


def test_signature_with_the_wrong_secret_is_refused(client, fake_stripe, paid_order):
    body = completed(paid_order, fake_stripe)
    before = snapshot()

    response = deliver(client, body, signature=sign(body, secret="whsec_someone_else"))

    assert response.status_code == 400
    assert snapshot() == before


def test_stale_signature_is_refused(client, fake_stripe, paid_order):
    body = completed(paid_order, fake_stripe)
    before = snapshot()

    response = deliver(client, body, signature=sign(body, timestamp=int(time.time()) - 301))

    assert response.status_code == 400
    assert snapshot() == before


def test_signature_just_inside_tolerance_is_accepted(client, fake_stripe, paid_order):
    body = completed(paid_order, fake_stripe)

    response = deliver(client, body, signature=sign(body, timestamp=int(time.time()) - 240))

    assert response.status_code == 200
    assert Voucher.objects.filter(order=paid_order).exists()


@pytest.mark.parametrize("header", [None, "", "garbage", "t=notanumber,v1=abc", "t=123", "v1=deadbeef"])
def test_missing_or_garbled_signature_header_is_refused(client, fake_stripe, paid_order, header):
    before = snapshot()

    response = deliver(client, completed(paid_order, fake_stripe), signature=header)

    assert response.status_code == 400
    assert snapshot() == before


@pytest.mark.parametrize(
    "body",
    [
        "{not json",
        "",
        "[]",
        '"just a string"',
        "null",
        json.dumps({"object": "event", "type": "checkout.session.completed"}),  # no id
        json.dumps({"id": "evt_1", "object": "event", "data": {"object": {}}}),  # no type
        json.dumps({"id": "evt_1", "object": "event", "type": "checkout.session.completed"}),  # no data
        json.dumps({"id": "evt_1", "object": "event", "type": "charge.refunded", "data": {"object": "x"}}),
        json.dumps({"id": 5, "object": "event", "type": "charge.refunded", "data": {"object": {}}}),
        json.dumps({"id": "e" * 300, "object": "event", "type": "charge.refunded", "data": {"object": {}}}),
    ],
)
def test_malformed_body_with_valid_signature_is_refused(client, fake_stripe, paid_order, body):
    before = snapshot()

    response = deliver(client, body)

    assert response.status_code == 400
    assert snapshot() == before


def test_non_utf8_body_is_refused(client, fake_stripe, paid_order):
    response = deliver(client, b"\xff\xfe{}", signature="t=1,v1=00")

    assert response.status_code == 400
    assert not StripeEvent.objects.exists()


def test_webhook_refuses_everything_when_no_secret_is_configured(client, fake_stripe, paid_order, settings):
    """An empty secret must not mean "skip verification" (nor "anything signed with an empty key")."""
    settings.STRIPE_WEBHOOK_SECRET = ""
    body = completed(paid_order, fake_stripe)
    before = snapshot()

    response = deliver(client, body, signature=sign(body, secret=""))

    assert response.status_code == 400
    assert snapshot() == before


def test_webhook_only_accepts_post(client, fake_stripe):
    assert client.get("/stripe/webhook/").status_code == 405


# --- the handlers ---------------------------------------------------------------------------------------


def test_completed_paid_session_issues_one_voucher_and_records_the_event(
    client, fake_stripe, paid_order, django_capture_on_commit_callbacks, assert_audit_clean
):
    body = completed(paid_order, fake_stripe, event_id="evt_paid_1")

    with django_capture_on_commit_callbacks(execute=True):
        response = deliver(client, body)

    assert response.status_code == 200
    paid_order.refresh_from_db()
    voucher = Voucher.objects.get(order=paid_order)
    assert (paid_order.status, voucher.credits, voucher.status) == ("paid", 150, "active")
    assert paid_order.email == "buyer@example.com"
    assert paid_order.payment_intent_id.startswith("pi_fake_")
    assert paid_order.paid_at is not None
    event = StripeEvent.objects.get()
    assert (event.event_id, event.type, event.attempts, event.error) == (
        "evt_paid_1",
        "checkout.session.completed",
        1,
        "",
    )
    assert event.processed_at is not None
    # The session was looked up at Stripe, not taken from the event body.
    assert [c.path for c in fake_stripe.calls("GET")] == [f"/v1/checkout/sessions/{paid_order.stripe_session_id}"]
    (email,) = mail.outbox
    assert email.to == ["buyer@example.com"]
    assert voucher.code in email.body
    assert f"/redeem code:{voucher.code}" in email.body
    assert voucher.code in email.alternatives[0][0]
    assert_audit_clean()


def test_event_body_claiming_paid_is_not_trusted(client, fake_stripe, pack):
    """Stripe says unpaid; an event body saying paid changes nothing: fulfilment asks Stripe itself."""
    order = start_checkout(client, pack)
    fake_stripe.mark_complete_unpaid(order.stripe_session_id)
    forged_view = {**fake_stripe.sessions[order.stripe_session_id], "payment_status": "paid"}

    response = deliver(client, event_body("checkout.session.completed", forged_view))

    assert response.status_code == 200
    order.refresh_from_db()
    assert order.status == "pending"
    assert not Voucher.objects.exists()


def test_completed_unpaid_session_is_acknowledged_without_voucher(client, fake_stripe, pack):
    order = start_checkout(client, pack)
    fake_stripe.mark_complete_unpaid(order.stripe_session_id)

    response = deliver(client, completed(order, fake_stripe))

    assert response.status_code == 200
    order.refresh_from_db()
    assert order.status == "pending"
    assert not Voucher.objects.exists()
    assert StripeEvent.objects.get().processed_at is not None


def test_async_payment_succeeded_after_unpaid_completed_issues_the_voucher(client, fake_stripe, pack):
    order = start_checkout(client, pack)
    fake_stripe.mark_complete_unpaid(order.stripe_session_id)
    assert deliver(client, completed(order, fake_stripe)).status_code == 200

    fake_stripe.mark_paid(order.stripe_session_id)
    session = fake_stripe.sessions[order.stripe_session_id]
    response = deliver(client, event_body("checkout.session.async_payment_succeeded", session))

    assert response.status_code == 200
    order.refresh_from_db()
    assert order.status == "paid"
    assert Voucher.objects.filter(order=order).count() == 1


def test_async_payment_succeeded_before_completed_still_one_voucher(client, fake_stripe, paid_order):
    session = fake_stripe.sessions[paid_order.stripe_session_id]
    assert deliver(client, event_body("checkout.session.async_payment_succeeded", session)).status_code == 200
    assert deliver(client, event_body("checkout.session.completed", session)).status_code == 200

    assert Voucher.objects.filter(order=paid_order).count() == 1
    assert StripeEvent.objects.filter(processed_at__isnull=False).count() == 2


def test_async_payment_failed_marks_the_order_failed(client, fake_stripe, pack, assert_audit_clean):
    order = start_checkout(client, pack)
    session = fake_stripe.mark_complete_unpaid(order.stripe_session_id)

    response = deliver(client, event_body("checkout.session.async_payment_failed", session))

    assert response.status_code == 200
    order.refresh_from_db()
    assert order.status == "failed"
    assert not Voucher.objects.exists()
    assert_audit_clean()


def test_expired_session_marks_a_pending_order_expired(client, fake_stripe, pack):
    order = start_checkout(client, pack)
    session = fake_stripe.mark_expired(order.stripe_session_id)

    response = deliver(client, event_body("checkout.session.expired", session))

    assert response.status_code == 200
    order.refresh_from_db()
    assert order.status == "expired"


def test_expired_event_never_unpays_a_paid_order(client, fake_stripe, paid_order):
    session = fake_stripe.sessions[paid_order.stripe_session_id]
    assert deliver(client, event_body("checkout.session.completed", session)).status_code == 200

    response = deliver(client, event_body("checkout.session.expired", {**session, "status": "expired"}))

    assert response.status_code == 200
    paid_order.refresh_from_db()
    assert paid_order.status == "paid"
    assert Voucher.objects.get(order=paid_order).status == "active"


def test_paid_session_settles_an_order_marked_expired_earlier(client, fake_stripe, paid_order):
    """The money is real: a late payment still gets its voucher."""
    Order.objects.filter(pk=paid_order.pk).update(status="expired")

    assert deliver(client, completed(paid_order, fake_stripe)).status_code == 200

    paid_order.refresh_from_db()
    assert paid_order.status == "paid"
    assert Voucher.objects.filter(order=paid_order).count() == 1


def test_unknown_event_type_is_acknowledged_and_recorded(client, fake_stripe, paid_order):
    response = deliver(client, event_body("customer.created", {"id": "cus_1", "object": "customer"}))

    assert response.status_code == 200
    event = StripeEvent.objects.get()
    assert (event.type, event.processed_at is not None) == ("customer.created", True)
    assert not Voucher.objects.exists()
    assert fake_stripe.requests == fake_stripe.calls("POST")  # no session lookups


def test_session_that_is_not_ours_is_acknowledged(client, fake_stripe, pack):
    """Another integration on the same Stripe account: 200, so Stripe doesn't retry for three days."""
    order = start_checkout(client, pack)
    foreign = fake_stripe.foreign_session(amount=500, client_reference_id=str(order.pk + 1000))

    response = deliver(client, event_body("checkout.session.completed", foreign))

    assert response.status_code == 200
    assert not Voucher.objects.exists()


def test_session_naming_an_order_of_another_session_is_not_fulfilled(client, fake_stripe, pack):
    order = start_checkout(client, pack)
    other = {**fake_stripe.sessions[order.stripe_session_id], "id": "cs_test_other"}
    fake_stripe.sessions["cs_test_other"] = other
    fake_stripe.mark_paid("cs_test_other")

    response = deliver(client, event_body("checkout.session.completed", other))

    assert response.status_code == 200
    assert not Voucher.objects.exists()
    order.refresh_from_db()
    assert order.status == "pending"


# --- deduplication and retries --------------------------------------------------------------------------


def test_redelivery_of_a_processed_event_answers_200_and_does_nothing(client, fake_stripe, paid_order):
    body = completed(paid_order, fake_stripe, event_id="evt_dup")
    assert deliver(client, body).status_code == 200
    lookups = len(fake_stripe.calls("GET"))
    before = snapshot()

    response = deliver(client, body)

    assert response.status_code == 200
    assert snapshot() == before
    assert len(fake_stripe.calls("GET")) == lookups
    assert Voucher.objects.count() == 1


def test_failing_handler_is_acknowledged_keeps_its_error_and_the_retry_after_its_delay_processes_it(
    client, fake_stripe, paid_order, assert_audit_clean
):
    body = completed(paid_order, fake_stripe, event_id="evt_retry")
    fake_stripe.fail_next(500, method="GET", message="Stripe is having a bad day")

    first = deliver(client, body)

    assert first.status_code == 200  # stored: Stripe need not retry; our processor does
    event = StripeEvent.objects.get(event_id="evt_retry")
    assert event.processed_at is None and event.claimed_until is None
    assert "CheckoutError" in event.error and "Stripe is having a bad day" in event.error
    assert "sk_test" not in event.error
    assert 9 <= (event.next_attempt_at - event.received_at).total_seconds() <= 15  # the first retry delay
    assert not Voucher.objects.exists()
    paid_order.refresh_from_db()
    assert paid_order.status == "pending"

    assert deliver(client, body).status_code == 200  # Stripe's redelivery: a duplicate, nothing run
    event.refresh_from_db()
    assert (event.processed_at, event.attempts) == (None, 1)
    assert process_events(after=5) == {}  # still inside its retry delay

    assert process_events(after=11) == {"evt_retry": "processed"}
    event.refresh_from_db()
    assert event.processed_at is not None
    assert event.attempts == 2
    assert Voucher.objects.filter(order=paid_order).count() == 1
    assert_audit_clean()


def test_retry_delay_doubles_up_to_an_hour():
    assert [stripe_event_retry_delay(attempts=n).total_seconds() for n in (1, 2, 3, 4)] == [10, 20, 40, 80]
    assert stripe_event_retry_delay(attempts=50).total_seconds() == 3600


def test_stripe_timeout_during_processing_is_kept_for_a_retry(client, fake_stripe, paid_order, settings):
    settings.STRIPE_TIMEOUT_SECONDS = 0.3
    fake_stripe.hang_next(method="GET")

    response = deliver(client, completed(paid_order, fake_stripe))

    assert response.status_code == 200
    assert "APIConnectionError" in StripeEvent.objects.get().error
    assert not Voucher.objects.exists()
    assert list(process_events(after=11).values()) == ["processed"]
    assert Voucher.objects.count() == 1


# --- refunds --------------------------------------------------------------------------------------------


@pytest.fixture
def fulfilled_order(client, fake_stripe, paid_order) -> Order:
    assert deliver(client, completed(paid_order, fake_stripe)).status_code == 200
    paid_order.refresh_from_db()
    return paid_order


def full_refund(fake_stripe, order: Order, **event) -> str:
    fake_stripe.refund(order.stripe_session_id)
    return charge_refunded_event(fake_stripe, order.stripe_session_id, **event)


def test_refund_of_an_unredeemed_voucher_voids_it(client, fake_stripe, fulfilled_order, assert_audit_clean):
    response = deliver(client, full_refund(fake_stripe, fulfilled_order))

    assert response.status_code == 200
    fulfilled_order.refresh_from_db()
    voucher = Voucher.objects.get(order=fulfilled_order)
    assert (fulfilled_order.status, fulfilled_order.amount_refunded) == ("refunded", 1200)
    assert (voucher.status, voucher.refunded_at is not None) == ("void", True)
    assert not LedgerEntry.objects.exists()
    assert_audit_clean()


def test_refund_of_a_redeemed_voucher_claws_back_what_is_left(client, fake_stripe, fulfilled_order, assert_audit_clean):
    voucher = Voucher.objects.get(order=fulfilled_order)
    voucher_redeem(code=voucher.code, discord_user_id=777)

    response = deliver(client, full_refund(fake_stripe, fulfilled_order))

    assert response.status_code == 200
    account = CreditAccount.objects.get(discord_user_id=777)
    clawback = LedgerEntry.objects.get(kind="clawback")
    assert (clawback.delta, clawback.voucher_id, account.balance) == (-150, voucher.pk, 0)
    assert f"Order #{fulfilled_order.pk} refunded" in clawback.memo
    assert_audit_clean()


def test_refund_redelivered_as_a_new_event_claws_back_once(client, fake_stripe, fulfilled_order, assert_audit_clean):
    voucher = Voucher.objects.get(order=fulfilled_order)
    voucher_redeem(code=voucher.code, discord_user_id=777)
    body = full_refund(fake_stripe, fulfilled_order)

    assert deliver(client, body).status_code == 200
    assert deliver(client, body.replace('"id": "evt_', '"id": "evt_again_', 1)).status_code == 200

    assert LedgerEntry.objects.filter(kind="clawback").count() == 1
    assert_audit_clean()


def test_refund_of_a_charge_that_is_not_ours_is_acknowledged(client, fake_stripe, fulfilled_order):
    body = event_body(
        "charge.refunded", {"id": "ch_x", "object": "charge", "refunded": True, "payment_intent": "pi_other"}
    )

    assert deliver(client, body).status_code == 200
    assert Voucher.objects.get(order=fulfilled_order).status == "active"


def test_refund_before_fulfilment_fulfils_then_refunds_and_a_late_completion_changes_nothing(
    client, fake_stripe, paid_order, assert_audit_clean
):
    session = fake_stripe.sessions[paid_order.stripe_session_id]
    early = full_refund(fake_stripe, paid_order, event_id="evt_refund_early")

    assert deliver(client, early).status_code == 200
    lookups = [c for c in fake_stripe.calls("GET") if c.path == "/v1/checkout/sessions"]
    assert [c.params for c in lookups] == [{"payment_intent": session["payment_intent"], "limit": "1"}]
    paid_order.refresh_from_db()
    assert paid_order.status == "refunded"
    assert Voucher.objects.get(order=paid_order).status == "void"

    assert deliver(client, completed(paid_order, fake_stripe)).status_code == 200  # arrives late
    paid_order.refresh_from_db()
    assert paid_order.status == "refunded"
    assert Voucher.objects.filter(order=paid_order).count() == 1
    assert Voucher.objects.get(order=paid_order).status == "void"
    assert_audit_clean()


def test_refund_lookup_failure_is_retried_by_the_processor(client, fake_stripe, paid_order, assert_audit_clean):
    early = full_refund(fake_stripe, paid_order, event_id="evt_refund_early_2")
    fake_stripe.fail_next(500, method="GET")  # the client makes no retries in these tests

    assert deliver(client, early).status_code == 200
    paid_order.refresh_from_db()
    assert paid_order.status == "pending"
    assert process_events(after=11) == {"evt_refund_early_2": "processed"}  # the retry
    paid_order.refresh_from_db()
    assert paid_order.status == "refunded"
    assert_audit_clean()


def test_refund_list_failure_is_retried_and_the_retry_claws_back(
    client, fake_stripe, fulfilled_order, assert_audit_clean
):
    body = full_refund(fake_stripe, fulfilled_order)
    fake_stripe.fail_next(503, method="GET")

    assert deliver(client, body).status_code == 200
    assert Voucher.objects.get(order=fulfilled_order).status == "active"
    assert list(process_events(after=11).values()) == ["processed"]
    assert Voucher.objects.get(order=fulfilled_order).status == "void"
    assert_audit_clean()


def test_success_page_after_refund_says_so(client, fake_stripe, fulfilled_order):
    deliver(client, full_refund(fake_stripe, fulfilled_order))

    page = client.get("/checkout/success/", {"session_id": fulfilled_order.stripe_session_id}).content.decode()

    assert "refunded" in page
    assert Voucher.objects.filter(order=fulfilled_order).count() == 1


def test_order_for_discord_member_is_redeemed_to_them_on_payment(client, fake_stripe, pack, assert_audit_clean):
    order = start_checkout(client, pack, **{"for": buy_token_make(discord_user_id=4242)})
    fake_stripe.mark_paid(order.stripe_session_id)

    assert deliver(client, completed(order, fake_stripe)).status_code == 200

    voucher = Voucher.objects.get(order=order)
    account = CreditAccount.objects.get(discord_user_id=4242)
    assert (voucher.status, voucher.redeemed_by_id, account.balance) == ("redeemed", account.pk, 150)
    assert_audit_clean()
