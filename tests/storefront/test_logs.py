"""Voucher codes, Checkout Session ids and /buy tokens never reach the logs (DESIGN.md invariant 8)."""

import io
import logging

import pytest
from django.conf import settings as django_settings

from storefront.logfilters import StripQueryStrings
from storefront.models import Order
from storefront.tokens import buy_token_make
from tests.storefront.conftest import charge_refunded_event, deliver, dispute_event, event_body, start_checkout
from vouchers.models import Voucher

pytestmark = pytest.mark.django_db


def test_a_whole_purchase_refund_and_dispute_log_no_code_session_id_or_token(client, fake_stripe, pack, caplog):
    caplog.set_level(logging.DEBUG)
    token = buy_token_make(discord_user_id=31337)
    order = start_checkout(client, pack, **{"for": token})
    fake_stripe.mark_paid(order.stripe_session_id)
    deliver(client, event_body("checkout.session.completed", fake_stripe.sessions[order.stripe_session_id]))
    client.get("/checkout/success/", {"session_id": order.stripe_session_id})
    client.get("/checkout/success/", {"session_id": "cs_test_unknown_to_us"})
    client.get("/checkout/cancel/", {"for": token})
    fake_stripe.refund(order.stripe_session_id, amount=100)
    deliver(client, charge_refunded_event(fake_stripe, order.stripe_session_id))
    deliver(client, dispute_event(fake_stripe.dispute(order.stripe_session_id)))
    fake_stripe.fail_next(404, method="GET")
    other = start_checkout(client, pack)
    client.get("/checkout/success/", {"session_id": other.stripe_session_id})  # Stripe answers "no such session"

    code = Voucher.objects.get(order=order).code
    assert caplog.records, "the flow logs something"
    text = caplog.text
    for secret in (code, order.stripe_session_id, other.stripe_session_id, token, "cs_test_unknown_to_us"):
        assert secret not in text
    assert Order.objects.get(pk=order.pk).status == "paid"


def test_request_lines_are_logged_without_their_query_strings():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(StripQueryStrings())
    logger = logging.getLogger("django.server.test")
    logger.addHandler(handler)
    try:
        logger.warning('"%s" %s %s', "GET /checkout/success/?session_id=cs_test_abc HTTP/1.1", 200, 512)
        logger.warning("GET /?for=eyJ0b2tlbiI6MX0:secret HTTP/1.1")
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue() == '"GET /checkout/success/ HTTP/1.1" 200 512\nGET / HTTP/1.1\n'


def test_the_console_handler_strips_query_strings_and_stripe_python_stays_quiet():
    console = django_settings.LOGGING["handlers"]["console"]
    assert "no_query_strings" in console["filters"]
    assert logging.getLogger("stripe").getEffectiveLevel() >= logging.WARNING
