"""Per-client rate limits on POST /checkout/ and the success page, counted in the cache (locmem and Redis)."""

import os
import socket
import threading
import uuid

import pytest
from django.core.cache import cache
from django.test import Client

from storefront.models import Order
from tests.storefront.conftest import start_checkout

pytestmark = pytest.mark.django_db


def _redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(params=["locmem", "redis"])
def cache_backend(request, settings):
    if request.param == "redis":
        if not _redis_up():
            if os.environ.get("CI") == "true":
                raise RuntimeError("CI=true but Redis is not reachable at 127.0.0.1:6379")
            pytest.skip("Redis is not running at 127.0.0.1:6379")
        settings.CACHES = {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": "redis://127.0.0.1:6379/15",
                "KEY_PREFIX": f"test-{uuid.uuid4().hex}",
            }
        }
    cache.clear()
    return request.param


def test_checkout_posts_over_the_limit_get_429_and_create_nothing(client, fake_stripe, pack, settings, cache_backend):
    settings.CHECKOUT_RATE_LIMIT = "3/60"
    for _ in range(3):
        start_checkout(client, pack)

    response = client.post("/checkout/", {"pack": pack.pk})

    assert response.status_code == 429
    assert 0 < int(response["Retry-After"]) <= 60
    assert "Too many requests" in response.content.decode()
    assert Order.objects.count() == 3
    assert len(fake_stripe.calls("POST")) == 3
    other = Client(REMOTE_ADDR="10.0.0.2")
    assert other.post("/checkout/", {"pack": pack.pk}).status_code == 303  # someone else is not affected


@pytest.mark.django_db(transaction=True)
def test_limit_counts_concurrent_requests_exactly(fake_stripe, pack, settings, cache_backend):
    settings.CHECKOUT_RATE_LIMIT = "5/60"
    statuses: list[int] = []
    barrier = threading.Barrier(12)

    def post() -> None:
        from django.db import connections

        try:
            barrier.wait(timeout=10)
            statuses.append(Client().post("/checkout/", {"pack": pack.pk}).status_code)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=post) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(statuses) == [303] * 5 + [429] * 7


@pytest.mark.django_db(transaction=True)
def test_success_page_over_the_limit_gets_429_before_any_lookup(client, fake_stripe, pack, settings):
    settings.SUCCESS_PAGE_RATE_LIMIT = "2/60"
    order = start_checkout(client, pack)
    fake_stripe.mark_complete_unpaid(order.stripe_session_id)
    for _ in range(2):
        assert client.get("/checkout/success/", {"session_id": order.stripe_session_id}).status_code == 200

    response = client.get("/checkout/success/", {"session_id": order.stripe_session_id})

    assert response.status_code == 429
    assert len(fake_stripe.calls("GET")) == 2


def test_behind_a_trusted_proxy_the_forwarded_client_is_limited(client, fake_stripe, pack, settings):
    settings.CHECKOUT_RATE_LIMIT = "1/60"
    settings.TRUSTED_PROXY_COUNT = 1
    via_alb = {"REMOTE_ADDR": "10.0.0.1"}

    def post(forwarded: str) -> int:
        return client.post("/checkout/", {"pack": pack.pk}, HTTP_X_FORWARDED_FOR=forwarded, **via_alb).status_code

    assert post("203.0.113.7") == 303
    assert post("203.0.113.7") == 429
    # A client cannot dodge the limit by prepending its own X-Forwarded-For: the ALB appends the real address.
    assert post("198.51.100.9, 203.0.113.7") == 429
    assert post("203.0.113.8") == 303
