"""POST /checkout/ against a fake Stripe API over HTTP: the session we ask for, and every way Stripe can fail."""

import time

import pytest
from django.core import signing

from storefront.models import Order
from storefront.payments import StripeBackend, idempotency_key
from storefront.tokens import BUY_TOKEN_SALT, buy_token_make
from tests.storefront.conftest import make_order, make_pack, start_checkout

pytestmark = pytest.mark.django_db


def test_checkout_creates_order_and_stripe_session_and_answers_303_to_stripe(client, fake_stripe, pack):
    response = client.post("/checkout/", {"pack": pack.pk})

    order = Order.objects.get()
    session = fake_stripe.sessions[order.stripe_session_id]
    assert response.status_code == 303
    assert response["Location"] == session["url"]
    assert (order.status, order.credits, order.amount_cents, order.currency) == ("pending", 150, 1200, "usd")
    assert order.discord_user_id is None

    (call,) = fake_stripe.calls("POST")
    params = call.params
    assert params["mode"] == "payment"
    assert params["line_items"] == [
        {
            "quantity": "1",
            "price_data": {
                "currency": "usd",
                "unit_amount": "1200",
                "product_data": {"name": "Creator: 150 image credits"},
            },
        }
    ]
    assert params["client_reference_id"] == str(order.pk)
    assert params["metadata"] == {"order_id": str(order.pk)}
    assert params["payment_intent_data"] == {"metadata": {"order_id": str(order.pk)}}
    assert params["success_url"] == "http://127.0.0.1:8000/checkout/success/?session_id={CHECKOUT_SESSION_ID}"
    assert params["cancel_url"] == "http://127.0.0.1:8000/checkout/cancel/"
    assert call.headers["idempotency-key"] == idempotency_key(order)
    assert call.headers["idempotency-key"].startswith(f"checkout-order-{order.pk}-")
    assert call.headers["authorization"] == "Bearer sk_test_fake_key_for_tests"


def test_checkout_copies_price_at_purchase_time(client, fake_stripe, pack):
    order = start_checkout(client, pack)
    pack.price_cents = 9900
    pack.credits = 1
    pack.save()

    order.refresh_from_db()
    assert (order.credits, order.amount_cents) == (150, 1200)


@pytest.mark.parametrize("pack_value", ["", "abc", "999999", "-1", "1e3", "9" * 40])
def test_checkout_refuses_unknown_pack_without_order_or_stripe_call(client, fake_stripe, pack, pack_value):
    response = client.post("/checkout/", {"pack": pack_value})

    assert response.status_code == 400
    assert "not available" in response.content.decode()
    assert not Order.objects.exists()
    assert fake_stripe.requests == []


def test_checkout_refuses_inactive_pack(client, fake_stripe):
    retired = make_pack(active=False)

    response = client.post("/checkout/", {"pack": retired.pk})

    assert response.status_code == 400
    assert not Order.objects.exists()


def test_checkout_by_get_leads_back_to_the_packs_and_buys_nothing(client, fake_stripe, pack):
    response = client.get("/checkout/", {"pack": pack.pk})

    assert (response.status_code, response["Location"]) == (303, "/")
    assert client.put("/checkout/").status_code == 405
    assert not Order.objects.exists()
    assert fake_stripe.requests == []


def test_checkout_with_buy_token_ties_order_to_discord_member(client, fake_stripe, pack):
    token = buy_token_make(discord_user_id=123456789012345678)

    order = start_checkout(client, pack, **{"for": token})

    assert order.discord_user_id == 123456789012345678
    (call,) = fake_stripe.calls("POST")
    assert call.params["cancel_url"].startswith("http://127.0.0.1:8000/checkout/cancel/?for=")


@pytest.mark.parametrize(
    "token, problem",
    [
        ("garbage", "not valid"),
        (signing.dumps({"discord_user_id": 5}, salt="another.salt"), "not valid"),
        (signing.dumps({"discord_user_id": "5"}, salt=BUY_TOKEN_SALT), "not valid"),
    ],
)
def test_checkout_refuses_bad_buy_token(client, fake_stripe, pack, token, problem):
    response = client.post("/checkout/", {"pack": pack.pk, "for": token})

    assert response.status_code == 400
    assert problem in response.content.decode()
    assert not Order.objects.exists()
    assert fake_stripe.requests == []


def test_checkout_refuses_expired_buy_token(client, fake_stripe, pack, monkeypatch):
    token = buy_token_make(discord_user_id=42)
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 2 * 3600)  # signing reads time.time()

    response = client.post("/checkout/", {"pack": pack.pk, "for": token})

    assert response.status_code == 400
    assert "expired" in response.content.decode()
    assert not Order.objects.exists()


@pytest.mark.parametrize("status", [402, 400, 401])
def test_stripe_client_error_shows_friendly_page_and_leaves_order_pending(client, fake_stripe, pack, status):
    fake_stripe.fail_next(status, message="Secret internal detail sk_test_fake_key_for_tests")

    response = client.post("/checkout/", {"pack": pack.pk})

    page = response.content.decode()
    assert response.status_code == 502
    assert "You have not been charged" in page
    assert "sk_test" not in page and "internal detail" not in page
    order = Order.objects.get()
    assert (order.status, order.stripe_session_id) == ("pending", None)
    assert len(fake_stripe.calls("POST")) == 1  # a 4xx is never retried


def test_stripe_500_is_retried_with_the_same_idempotency_key(client, fake_stripe, pack, settings):
    settings.STRIPE_MAX_NETWORK_RETRIES = 1
    fake_stripe.fail_next(500)

    response = client.post("/checkout/", {"pack": pack.pk})

    order = Order.objects.get()
    assert response.status_code == 303
    first, second = fake_stripe.calls("POST")
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"] == idempotency_key(order)
    assert list(fake_stripe.sessions) == [order.stripe_session_id]


def test_stripe_down_shows_friendly_page(client, fake_stripe, pack):
    fake_stripe.fail_next(500, times=5)

    response = client.post("/checkout/", {"pack": pack.pk})

    assert response.status_code == 502
    assert Order.objects.get().stripe_session_id is None


def test_stripe_timeout_is_bounded_and_friendly(client, fake_stripe, pack, settings):
    settings.STRIPE_TIMEOUT_SECONDS = 0.3
    fake_stripe.hang_next()

    started = time.monotonic()
    response = client.post("/checkout/", {"pack": pack.pk})

    assert time.monotonic() - started < 3
    assert response.status_code == 502
    assert "try again" in response.content.decode()
    assert Order.objects.get().status == "pending"


def test_stripe_unreachable_is_friendly(client, fake_stripe, pack, settings):
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"  # discard port: connection refused

    response = client.post("/checkout/", {"pack": pack.pk})

    assert response.status_code == 502


def test_same_order_asked_twice_gets_the_same_session(fake_stripe, pack):
    """A lost response retried by us (not only by stripe-python) cannot create a second session."""
    order = make_order(pack=pack)
    backend = StripeBackend()
    urls = dict(success_url="https://shop.test/s", cancel_url="https://shop.test/c")

    first = backend.session_create(order=order, **urls)
    second = backend.session_create(order=order, **urls)

    assert first.id == second.id
    assert len(fake_stripe.sessions) == 1


def test_two_orders_get_two_sessions(client, fake_stripe, pack):
    """A double click makes two orders with two sessions; the buyer can pay only the one they land on."""
    start_checkout(client, pack)
    start_checkout(client, pack)

    keys = {call.headers["idempotency-key"] for call in fake_stripe.calls("POST")}
    assert len(keys) == 2
    assert len(fake_stripe.sessions) == 2


def test_missing_stripe_key_is_friendly(client, fake_stripe, pack, settings):
    settings.STRIPE_SECRET_KEY = ""

    response = client.post("/checkout/", {"pack": pack.pk})

    assert response.status_code == 503
    assert fake_stripe.requests == []
