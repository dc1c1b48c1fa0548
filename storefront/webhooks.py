"""Stripe webhook events: which service each type calls, and the record that makes every event count once.

The view has already verified the signature on the raw body. Here each event id is recorded once (a unique
constraint); a delivery of an event already processed answers 200 and does nothing; a failing handler keeps
its error on the record and answers 500, so Stripe retries and the retry runs the handler again.

Handlers are not wrapped in one outer transaction: fulfilment retrieves the session from Stripe (a network
call, never made inside a transaction) and every service keeps its own writes short and atomic. That is safe
because every handler is idempotent, so a retry after a half-finished attempt does what is left, once.
"""

import logging
from collections.abc import Callable
from typing import Any

from django.http import HttpResponse

from storefront.errors import CheckoutError
from storefront.services import (
    order_fulfill,
    order_mark_expired,
    order_mark_failed,
    order_refund,
    stripe_event_claim,
    stripe_event_failed,
    stripe_event_succeeded,
)

logger = logging.getLogger(__name__)


def _checkout_paid_maybe(session: dict[str, Any]) -> None:
    try:
        order_fulfill(session_id=session["id"])
    except CheckoutError as exc:
        if exc.http_status != 404:
            raise
        # A session that is not ours (another integration on the same Stripe account): nothing to do.
        logger.warning("Webhook for Checkout Session %s, which is not one of our orders.", session["id"])


def _checkout_expired(session: dict[str, Any]) -> None:
    order_mark_expired(session_id=session["id"])


def _checkout_failed(session: dict[str, Any]) -> None:
    order_mark_failed(session_id=session["id"])


def _charge_refunded(charge: dict[str, Any]) -> None:
    intent = charge.get("payment_intent") or ""
    if isinstance(intent, dict):  # expanded
        intent = intent.get("id") or ""
    order_refund(
        payment_intent_id=intent,
        fully_refunded=charge.get("refunded") is True,
        memo=f"Stripe refund of charge {charge.get('id', '?')}",
    )


HANDLERS: dict[str, Callable[[dict[str, Any]], None]] = {
    # Both fulfil through the same idempotent function: completed may arrive unpaid (a delayed payment
    # method), and the two may arrive in either order; the session retrieved from Stripe decides.
    "checkout.session.completed": _checkout_paid_maybe,
    "checkout.session.async_payment_succeeded": _checkout_paid_maybe,
    "checkout.session.async_payment_failed": _checkout_failed,
    "checkout.session.expired": _checkout_expired,
    "charge.refunded": _charge_refunded,
}


def dispatch(*, event_id: str, event_type: str, data_object: dict[str, Any]) -> HttpResponse:
    """Process one verified event; the response tells Stripe whether to retry (only a 5xx does)."""
    if not stripe_event_claim(event_id=event_id, event_type=event_type):
        return HttpResponse("already processed", content_type="text/plain")
    handler = HANDLERS.get(event_type)
    if handler is not None:
        try:
            handler(data_object)
        except Exception as exc:  # any failure: keep it, let Stripe retry
            logger.exception("Stripe event %s (%s) failed; Stripe will retry it.", event_id, event_type)
            stripe_event_failed(event_id=event_id, error=exc)
            return HttpResponse("failed; retry", status=500, content_type="text/plain")
    stripe_event_succeeded(event_id=event_id)
    return HttpResponse("ok" if handler else "ignored", content_type="text/plain")
