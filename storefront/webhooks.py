"""Stripe webhook events: which service each type calls, and how every event is processed exactly once.

Acknowledge, then process. The view has verified the signature on the raw body; `acknowledge` stores the event
(unique by id) in one short transaction and the view answers 200 as soon as that commits. Stripe gets its 2xx
in milliseconds, and no Stripe call or email holds a web thread. A redelivery of a stored event answers 200 and
does nothing. The work happens in `process`, run by the processor threads of a web worker
(storefront/eventqueue.py): a conditional UPDATE claims the event, the handler runs, the event is marked
processed; a failure keeps its error on the record and the event is tried again later with a growing delay.

Handlers are not wrapped in one outer transaction: fulfilment retrieves the session from Stripe (a network
call, never made inside a transaction) and every service keeps its own writes short and atomic. That is safe
because every handler is idempotent, so a retry after a half-finished attempt (or a takeover of an attempt
whose process was killed) does what is left, once.
"""

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings

from storefront.errors import CheckoutError
from storefront.payments import refund_info
from storefront.services import (
    DisputeInfo,
    order_dispute_update,
    order_fulfill,
    order_mark_expired,
    order_mark_failed,
    order_refund_update,
    order_refunds_sync,
    stripe_event_claim,
    stripe_event_failed,
    stripe_event_record,
    stripe_event_succeeded,
    stripe_events_due,
)

logger = logging.getLogger(__name__)


def _checkout_paid_maybe(session: dict[str, Any]) -> None:
    try:
        order_fulfill(session_id=session["id"])
    except CheckoutError as exc:
        # 404: a session that is not ours (another integration on the same Stripe account): nothing to do.
        # 409: it names our order but did not pay for it; kept on the order for an operator. Retrying can't help.
        if exc.http_status not in (404, 409):
            raise
        logger.warning("Webhook for a Checkout Session that fulfils none of our orders (%s).", exc.http_status)


def _checkout_expired(session: dict[str, Any]) -> None:
    order_mark_expired(session_id=session["id"])


def _checkout_failed(session: dict[str, Any]) -> None:
    order_mark_failed(session_id=session["id"])


def _id_of(value: object) -> str:
    if isinstance(value, dict):  # expanded
        value = value.get("id")
    return value if isinstance(value, str) and len(value) <= 255 else ""


def _charge_refunded(charge: dict[str, Any]) -> None:
    # Fires for partial refunds too; the refunds themselves are listed from Stripe (idempotent per refund id).
    order_refunds_sync(payment_intent_id=_id_of(charge.get("payment_intent")), charge_id=_id_of(charge.get("id")))


def _refund_changed(refund: dict[str, Any]) -> None:
    info = refund_info(refund)
    if info is None:
        raise ValueError("refund object without id, amount or status")
    order_refund_update(payment_intent_id=_id_of(refund.get("payment_intent")), refund=info)


def _dispute_changed(dispute: dict[str, Any]) -> None:
    due = (dispute.get("evidence_details") or {}).get("due_by")
    amount = dispute.get("amount")
    info = DisputeInfo(
        id=_id_of(dispute.get("id")),
        payment_intent_id=_id_of(dispute.get("payment_intent")),
        status=str(dispute.get("status") or ""),
        reason=str(dispute.get("reason") or ""),
        amount=amount if type(amount) is int and amount >= 0 else 0,
        currency=str(dispute.get("currency") or ""),
        evidence_due_by=due if type(due) is int else None,
    )
    if not info.id or not info.status:
        raise ValueError("dispute object without id or status")
    order_dispute_update(dispute=info)


HANDLERS: dict[str, Callable[[dict[str, Any]], None]] = {
    # Both fulfil through the same idempotent function: completed may arrive unpaid (a delayed payment
    # method), and the two may arrive in either order; the session retrieved from Stripe decides.
    "checkout.session.completed": _checkout_paid_maybe,
    "checkout.session.async_payment_succeeded": _checkout_paid_maybe,
    "checkout.session.async_payment_failed": _checkout_failed,
    "checkout.session.expired": _checkout_expired,
    "charge.refunded": _charge_refunded,
    # A refund's later life: it may fail (bank account closed) or be canceled; its clawback is given back.
    "charge.refund.updated": _refund_changed,
    "refund.created": _refund_changed,
    "refund.updated": _refund_changed,
    "refund.failed": _refund_changed,
    # Every dispute event carries the dispute's current status, which decides: freeze, give back, or final.
    "charge.dispute.created": _dispute_changed,
    "charge.dispute.updated": _dispute_changed,
    "charge.dispute.funds_withdrawn": _dispute_changed,
    "charge.dispute.funds_reinstated": _dispute_changed,
    "charge.dispute.closed": _dispute_changed,
}


def acknowledge(*, event_id: str, event_type: str, data_object: dict[str, Any]) -> bool:
    """Store one verified event before the 2xx. True when it is new and a processor should run it now."""
    return stripe_event_record(
        event_id=event_id, event_type=event_type, payload=data_object, handled=event_type in HANDLERS
    )


def event_lease() -> timedelta:
    """How long a claim holds an event: longer than any handler (a few Stripe calls at their worst, and an email)."""
    return timedelta(seconds=settings.STRIPE_EVENT_LEASE_SECONDS)


def process(*, event_id: str, now: datetime | None = None) -> str:
    """Claim one stored event and run its handler: "processed", "failed", or "" when it was not ours to run
    (processed already, held by another processor, or waiting for its retry delay)."""
    event = stripe_event_claim(event_id=event_id, lease=event_lease(), now=now)
    if event is None:
        return ""
    handler = HANDLERS.get(event.type)
    if handler is not None:
        try:
            handler(event.payload)
        except Exception as exc:  # any failure: keep it, try again later
            logger.exception(
                "Stripe event %s (%s) failed (attempt %s); it will be retried.", event_id, event.type, event.attempts
            )
            stripe_event_failed(event_id=event_id, error=exc, claimed_until=event.claimed_until)
            return "failed"
    stripe_event_succeeded(event_id=event_id)
    return "processed"


def process_due(*, now: datetime | None = None, limit: int = 100) -> dict[str, str]:
    """Process every event due now, one after the other (tests, and `manage.py processstripeevents`)."""
    return {event_id: process(event_id=event_id, now=now) for event_id in stripe_events_due(now=now, limit=limit)}
