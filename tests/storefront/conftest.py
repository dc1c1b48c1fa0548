"""Storefront fixtures: the fake Stripe API, Stripe-style webhook signing, small builders."""

import json
import secrets
import time
from pathlib import Path
from typing import Any

import pytest
import stripe
from django.conf import settings as django_settings
from django.test import Client

from storefront.models import CreditPack, Order
from tests.storefront.fake_stripe import FakeStripe

SCREENSHOT_DIR = Path(django_settings.BASE_DIR) / "test-artifacts" / "screenshots"
_screenshots: list[Path] = []


@pytest.fixture(autouse=True)
def _no_rate_limits(settings) -> None:
    """Every test client is 127.0.0.1: rate limits are off unless a test turns them on (test_rate_limits.py)."""
    from django.core.cache import cache

    settings.CHECKOUT_RATE_LIMIT = "0/60"
    settings.SUCCESS_PAGE_RATE_LIMIT = "0/60"
    cache.clear()


# --- the fake Stripe API --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _fake_stripe_server():
    server = FakeStripe(api_key=django_settings.STRIPE_SECRET_KEY).start()
    yield server
    server.stop()


@pytest.fixture
def fake_stripe(_fake_stripe_server, settings) -> FakeStripe:
    """stripe-python pointed at the fake over HTTP, with a short timeout and no retries unless a test asks."""
    _fake_stripe_server.reset()
    settings.PAYMENTS_BACKEND = "stripe"
    settings.STRIPE_API_BASE = _fake_stripe_server.url
    settings.STRIPE_TIMEOUT_SECONDS = 1.0
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    yield _fake_stripe_server
    _fake_stripe_server.reset()


# --- builders -------------------------------------------------------------------------------------------


def make_pack(**fields: Any) -> CreditPack:
    values = {"name": "Creator", "credits": 150, "price_cents": 1200, "currency": "usd", "sort_order": 1}
    values.update(fields)
    return CreditPack.objects.create(**values)


def make_order(*, pack: CreditPack | None = None, **fields: Any) -> Order:
    pack = pack or make_pack()
    values = {"credits": pack.credits, "amount_cents": pack.price_cents, "currency": pack.currency}
    values.update(fields)
    if values.get("status") in ("paid", "refunded"):
        # A paid order was paid its amount, as fulfilment records it (auditcredits checks it).
        values.setdefault("amount_paid", values["amount_cents"])
        values.setdefault("currency_paid", values["currency"])
    return Order.objects.create(pack=pack, **values)


@pytest.fixture
def no_packs(db) -> None:
    """Start from an empty pack table (the seeding migration's packs are there in `db` tests)."""
    CreditPack.objects.all().delete()


@pytest.fixture
def pack(db) -> CreditPack:
    return make_pack()


def start_checkout(client: Client, pack: CreditPack, **extra: str) -> Order:
    """POST /checkout/ as the pack list's form does; returns the new order (with its session id)."""
    response = client.post("/checkout/", {"pack": pack.pk, **extra})
    assert response.status_code == 303, response.content.decode()[:500]
    return Order.objects.order_by("-pk").first()


# --- Stripe-style webhook deliveries --------------------------------------------------------------------


def event_body(event_type: str, obj: dict[str, Any], *, event_id: str | None = None) -> str:
    return json.dumps(
        {
            "id": event_id or f"evt_test_{secrets.token_hex(12)}",
            "object": "event",
            "api_version": stripe.api_version,
            "created": int(time.time()),
            "livemode": False,
            "pending_webhooks": 1,
            "type": event_type,
            "data": {"object": obj},
        }
    )


def sign(body: str, *, secret: str | None = None, timestamp: int | None = None) -> str:
    """The Stripe-Signature header exactly as Stripe computes it: HMAC-SHA256 of f"{t}.{body}"."""
    return stripe.WebhookSignature.generate_signature_header(
        body, secret if secret is not None else django_settings.STRIPE_WEBHOOK_SECRET, timestamp=timestamp
    )


def deliver(client: Client, body: str | bytes, signature: str | None = "sign", *, process: bool = True):
    """POST a webhook; `signature="sign"` signs the body correctly, None sends no header at all.

    The webhook only stores the event (acknowledge-then-process); with `process` the events due are then run here,
    as a web worker's processor thread would (the suite starts no processor threads: STRIPE_EVENT_THREADS=0).
    """
    headers = {}
    if signature == "sign":
        signature = sign(body if isinstance(body, str) else body.decode())
    if signature is not None:
        headers["HTTP_STRIPE_SIGNATURE"] = signature
    response = client.post("/stripe/webhook/", data=body, content_type="application/json", **headers)
    if process:
        process_events()
    return response


def process_events(*, after: float = 0) -> dict[str, str]:
    """Run the stored events due now (or `after` seconds from now: a retry whose delay has passed)."""
    from datetime import timedelta

    from django.utils import timezone

    from storefront import webhooks

    return webhooks.process_due(now=timezone.now() + timedelta(seconds=after))


def charge_refunded_event(fake_stripe: FakeStripe, session_id: str, **event: Any) -> str:
    """`charge.refunded` as Stripe sends it after a refund: the charge with its cumulative amount_refunded."""
    return event_body("charge.refunded", fake_stripe.charge_of(session_id), **event)


def refund_event(refund: dict[str, Any], event_type: str = "charge.refund.updated", **event: Any) -> str:
    return event_body(event_type, refund, **event)


def dispute_event(dispute: dict[str, Any], event_type: str = "charge.dispute.created", **event: Any) -> str:
    return event_body(event_type, dispute, **event)


# --- screenshots, listed at the end of the run ------------------------------------------------------------


def screenshot_path(name: str) -> Path:
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOT_DIR / f"{name}.png"
    _screenshots.append(path)
    print(f"screenshot: {path}")
    return path


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    existing = [p for p in _screenshots if p.exists()]
    if existing:
        terminalreporter.section("storefront screenshots")
        for path in existing:
            terminalreporter.write_line(str(path))
