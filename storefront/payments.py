"""Payments backends: where Checkout Sessions are created and where the truth about a payment is read.

Two backends share one small interface, so checkout and fulfilment are the same code whichever is in use:

- `StripeBackend` talks to Stripe (or, with `STRIPE_API_BASE`, to stripe-mock or a test fake) through a
  `stripe.StripeClient` with a bounded timeout and retry count.
- `TestModeBackend` (`PAYMENTS_BACKEND=test`, DEBUG only) never leaves the process: its "checkout page" is a
  local, clearly labelled page, and the state of a session is read back from the order itself.

Neither backend touches the database inside a transaction; callers must not hold one open around them.
"""

import hashlib
import logging
import secrets
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

import stripe
from django.conf import settings
from django.urls import reverse

from storefront.errors import CheckoutError
from storefront.models import Order, Refund

logger = logging.getLogger(__name__)

TEST_SESSION_PREFIX = "cs_localtest_"
# Seconds either side of an order's creation in which its Checkout Session must have been created.
SESSION_SEARCH_SLACK = 15 * 60
PROVIDER_DOWN = (
    "We couldn't reach the payment provider just now. You have not been charged; please try again in a minute."
)


@dataclass(frozen=True)
class CheckoutSession:
    """What we need to know about a Checkout Session, from whichever backend."""

    id: str
    url: str
    status: str  # open | complete | expired
    payment_status: str  # paid | unpaid | no_payment_required
    # Our order, from the session's metadata, which only an API call with our key can set. Never from
    # client_reference_id: a Payment Link on the same Stripe account takes that from its URL.
    order_id: int | None
    payment_intent_id: str = ""
    email: str = ""
    mode: str = "payment"
    amount_total: int | None = None
    currency: str = ""
    created: int = 0
    # Before discounts and tax, and the two adjustments (Checkout's `total_details`), all in minor units.
    amount_subtotal: int | None = None
    amount_discount: int = 0
    amount_tax: int = 0

    @property
    def is_paid(self) -> bool:
        return self.payment_status == "paid"


@dataclass(frozen=True)
class RefundInfo:
    """One refund of a charge, as Stripe reports it."""

    id: str
    amount: int
    status: str  # pending | requires_action | succeeded | failed | canceled


class PaymentsBackend(Protocol):
    def session_create(self, *, order: Order, success_url: str, cancel_url: str) -> CheckoutSession: ...

    def session_retrieve(self, *, session_id: str) -> CheckoutSession: ...

    def session_for_payment(self, *, payment_intent_id: str) -> CheckoutSession | None: ...

    def sessions_for_order(self, *, order: Order) -> list[CheckoutSession]: ...

    def refunds_for_charge(self, *, charge_id: str) -> list[RefundInfo]: ...

    def refund_create(self, *, order: Order, amount: int, key: str, metadata: dict[str, str]) -> RefundInfo: ...


def _describe(exc: stripe.StripeError) -> str:
    """What went wrong, for the log, without Stripe's message (it can quote a session id back to us)."""
    return f"{type(exc).__name__} (HTTP {exc.http_status}, code {exc.code or '-'}, request {exc.request_id or '-'})"


def _order_id(raw: object) -> int | None:
    text = str(raw) if raw is not None else ""
    return int(text) if text.isdigit() and 0 < len(text) < 19 else None


def idempotency_key(order: Order) -> str:
    """One key per order, so a retried create (ours or stripe-python's) returns the same session.

    The creation time is part of it because order ids restart when a database is recreated (a developer's
    fresh SQLite file against the same Stripe test account), and Stripe remembers keys for 24 hours.
    """
    return f"checkout-order-{order.pk}-{int(order.created_at.timestamp() * 1_000_000)}"


def refund_idempotency_key(order: Order, *, nth: int, amount: int) -> str:
    """One key per (order, n-th refund of it, amount): a double click (the same form sent twice) refunds once.

    `nth` is how many refunds the order had when the operator's form was shown, so a deliberate second refund
    of the same amount later gets a key of its own; the creation time is there for the reason given above.
    """
    return f"refund-order-{order.pk}-{int(order.created_at.timestamp() * 1_000_000)}-{nth}-{amount}"


# What Stripe's refusals of a refund mean, in words an operator can act on (Stripe's own message quotes ids).
_REFUND_REFUSALS = {
    "amount_too_large": "Stripe refused: that is more than is left to refund on this payment.",
    "charge_already_refunded": "Stripe refused: this payment has already been refunded in full.",
    "charge_disputed": "Stripe refused: this payment is disputed; answer the dispute instead of refunding.",
    "resource_missing": "Stripe does not know this payment (is the key for the right account and mode?).",
    "idempotency_error": (
        "This refund was already asked for with different details; reload the order and check its refunds."
    ),
}


@lru_cache(maxsize=8)
def _stripe_client(api_key: str, api_base: str, timeout: float, retries: int) -> stripe.StripeClient:
    # Cached per configuration: the client keeps its HTTP connections (one session per thread) between calls.
    return stripe.StripeClient(
        api_key,
        base_addresses={"api": api_base} if api_base else None,
        max_network_retries=retries,
        http_client=stripe.new_default_http_client(timeout=timeout),
    )


def checkout_session_options(*, order: Order) -> dict[str, Any]:
    """The operator's Checkout options (STRIPE_CHECKOUT_* settings) and the shop's text, as Session parameters.

    Kept apart from the parameters that carry the order (amount, ids, metadata): these only change what the
    buyer sees and what Stripe sends them. Every key is one stripe-python's `SessionCreateParams` types allow.
    """
    terms, refunds = f"{settings.SITE_URL}{reverse('terms')}", f"{settings.SITE_URL}{reverse('refunds')}"
    where = "go straight to your Discord account" if order.discord_user_id else "come as a voucher code"
    submit = f"Your {order.credits} image credits for {settings.SHOP_NAME} {where} as soon as the payment clears."
    if settings.SUPPORT_CONTACT:
        submit += f" Questions: {settings.SUPPORT_CONTACT}."
    options: dict[str, Any] = {"custom_text": {"submit": {"message": submit[:1200]}}}
    if settings.STRIPE_CHECKOUT_PROMOTION_CODES:
        options["allow_promotion_codes"] = True
    if settings.STRIPE_CHECKOUT_AUTOMATIC_TAX:
        options["automatic_tax"] = {"enabled": True}
    if settings.STRIPE_CHECKOUT_INVOICE:
        invoice_data: dict[str, Any] = {
            "description": f"{order.pack.name}: {order.credits} image credits (order #{order.pk})"[:500],
            "metadata": {"order_id": str(order.pk)},
        }
        if settings.SUPPORT_CONTACT:
            invoice_data["footer"] = f"Questions: {settings.SUPPORT_CONTACT}"[:5000]
        options["invoice_creation"] = {"enabled": True, "invoice_data": invoice_data}
    if settings.STRIPE_CHECKOUT_TERMS_CONSENT:
        # Stripe also needs the terms URL in its dashboard (Settings > Public details) for this.
        options["consent_collection"] = {"terms_of_service": "required"}
        options["custom_text"]["terms_of_service_acceptance"] = {
            "message": f"I agree to the [terms of service]({terms}) and the [refund policy]({refunds})."
        }
    return options


class StripeBackend:
    """Stripe Checkout, in payment mode, with price data taken from the order."""

    def _client(self) -> stripe.StripeClient:
        if not settings.STRIPE_SECRET_KEY:
            logger.error("PAYMENTS_BACKEND is 'stripe' but STRIPE_SECRET_KEY is empty.")
            raise CheckoutError("Payments are not available right now.", http_status=503)
        return _stripe_client(
            settings.STRIPE_SECRET_KEY,
            settings.STRIPE_API_BASE,
            float(settings.STRIPE_TIMEOUT_SECONDS),
            int(settings.STRIPE_MAX_NETWORK_RETRIES),
        )

    def session_create(self, *, order: Order, success_url: str, cancel_url: str) -> CheckoutSession:
        params: dict[str, Any] = {
            "mode": "payment",
            "line_items": [
                {
                    "quantity": 1,
                    "price_data": {
                        "currency": order.currency,
                        "unit_amount": order.amount_cents,
                        "product_data": {"name": f"{order.pack.name}: {order.credits} image credits"},
                    },
                }
            ],
            "client_reference_id": str(order.pk),
            "metadata": {"order_id": str(order.pk)},
            # Also on the payment, so an operator can trace a payment to its order in Stripe's dashboard.
            "payment_intent_data": {"metadata": {"order_id": str(order.pk)}},
            "success_url": success_url,
            "cancel_url": cancel_url,
            **checkout_session_options(order=order),
        }
        try:
            session = self._client().v1.checkout.sessions.create(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": idempotency_key(order)},
            )
        except stripe.StripeError as exc:
            logger.warning("Stripe refused or failed a Checkout Session for order %s: %s", order.pk, _describe(exc))
            raise CheckoutError(PROVIDER_DOWN, http_status=502) from exc
        return self._parse(session)

    def session_retrieve(self, *, session_id: str) -> CheckoutSession:
        try:
            session = self._client().v1.checkout.sessions.retrieve(session_id)
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404:
                raise CheckoutError("We don't know that checkout.", http_status=404) from exc
            logger.warning("Stripe refused to retrieve a Checkout Session: %s", _describe(exc))
            raise CheckoutError(PROVIDER_DOWN, http_status=502) from exc
        except stripe.StripeError as exc:
            logger.warning("Could not retrieve a Checkout Session: %s", _describe(exc))
            raise CheckoutError(PROVIDER_DOWN, http_status=502) from exc
        return self._parse(session)

    def session_for_payment(self, *, payment_intent_id: str) -> CheckoutSession | None:
        """The Checkout Session that created a PaymentIntent, or None when no session of this account did."""
        try:
            page = self._client().v1.checkout.sessions.list(params={"payment_intent": payment_intent_id, "limit": 1})
        except stripe.StripeError as exc:
            logger.warning("Could not look up the session of a payment: %s", _describe(exc))
            raise CheckoutError(PROVIDER_DOWN, http_status=502) from exc
        return self._parse(page.data[0]) if page.data else None

    def sessions_for_order(self, *, order: Order) -> list[CheckoutSession]:
        """The Checkout Sessions whose metadata names this order (for an order whose session was never recorded).

        Stripe cannot filter sessions by metadata (`checkout.sessions.list` filters by created, status, customer,
        payment intent or link; there is no `search` for sessions), so this lists those created around the
        order's own creation (a session is created within seconds of its order, retries included) and matches
        our metadata.
        """
        created = int(order.created_at.timestamp())
        params = {
            "created": {"gte": created - SESSION_SEARCH_SLACK, "lte": created + SESSION_SEARCH_SLACK},
            "limit": 100,
        }
        found = []
        try:
            page = self._client().v1.checkout.sessions.list(params=params)  # type: ignore[arg-type]
            for session in page.auto_paging_iter():
                parsed = self._parse(session)
                if parsed.order_id == order.pk:
                    found.append(parsed)
        except stripe.StripeError as exc:
            logger.warning("Could not list Checkout Sessions for order %s: %s", order.pk, _describe(exc))
            raise CheckoutError(PROVIDER_DOWN, http_status=502) from exc
        return found

    def refunds_for_charge(self, *, charge_id: str) -> list[RefundInfo]:
        """Every refund of a charge, fresh from Stripe (webhook payloads of charges no longer carry them)."""
        try:
            page = self._client().v1.refunds.list(params={"charge": charge_id, "limit": 100})
            refunds = [refund_info(r.to_dict()) for r in page.auto_paging_iter()]
        except stripe.StripeError as exc:
            logger.warning("Could not list the refunds of a charge: %s", _describe(exc))
            raise CheckoutError(PROVIDER_DOWN, http_status=502) from exc
        return [r for r in refunds if r is not None]

    def refund_create(self, *, order: Order, amount: int, key: str, metadata: dict[str, str]) -> RefundInfo:
        """Refund `amount` of the order's payment. The idempotency key makes a repeated request return the
        same refund (Stripe remembers keys for 24 hours) instead of refunding twice."""
        params = {"payment_intent": order.payment_intent_id, "amount": amount, "metadata": metadata}
        try:
            refund = self._client().v1.refunds.create(params=params, options={"idempotency_key": key})
        except (stripe.InvalidRequestError, stripe.IdempotencyError) as exc:
            logger.warning("Stripe refused a refund of order %s: %s", order.pk, _describe(exc))
            kind = "idempotency_error" if isinstance(exc, stripe.IdempotencyError) else exc.code
            message = _REFUND_REFUSALS.get(kind or "", "Stripe refused the refund; see the payment in Stripe.")
            raise CheckoutError(message, http_status=400) from exc
        except stripe.StripeError as exc:
            logger.warning("Could not refund order %s: %s", order.pk, _describe(exc))
            message = "Stripe could not be reached or failed; nothing is recorded here. Try again in a minute."
            raise CheckoutError(message, http_status=502) from exc
        info = refund_info(refund.to_dict())
        if info is None:
            raise CheckoutError("Stripe answered the refund with something unexpected.", http_status=502)
        return info

    @staticmethod
    def _parse(session: stripe.checkout.Session) -> CheckoutSession:
        # Stripe objects are not dicts (stripe 16); the plain dict is easier to read defensively.
        data = session.to_dict()
        details = data.get("customer_details") or {}
        metadata = data.get("metadata") or {}
        intent = data.get("payment_intent")
        if isinstance(intent, dict):  # expanded
            intent = intent.get("id")
        amount_total, amount_subtotal = data.get("amount_total"), data.get("amount_subtotal")
        currency = data.get("currency") or ""
        totals = data.get("total_details") or {}
        # Adaptive Pricing shows the buyer a local currency; what we priced is the conversion's source.
        conversion = data.get("currency_conversion") or {}
        if conversion.get("source_currency"):
            currency = conversion["source_currency"]
            amount_total, amount_subtotal = conversion.get("amount_total"), conversion.get("amount_subtotal")
            totals = conversion.get("total_details") or totals
        return CheckoutSession(
            id=data["id"],
            url=data.get("url") or "",
            status=data.get("status") or "",
            payment_status=data.get("payment_status") or "",
            order_id=_order_id(metadata.get("order_id")),
            payment_intent_id=intent or "",
            email=details.get("email") or data.get("customer_email") or "",
            mode=data.get("mode") or "",
            amount_total=amount_total if type(amount_total) is int else None,
            currency=currency.lower(),
            created=data.get("created") or 0,
            amount_subtotal=amount_subtotal if type(amount_subtotal) is int else None,
            amount_discount=totals.get("amount_discount") or 0,
            amount_tax=totals.get("amount_tax") or 0,
        )


def refund_info(data: dict[str, Any]) -> RefundInfo | None:
    """A refund object (from a list or an event payload) in the shape the services use; None if malformed."""
    refund_id, amount, status = data.get("id"), data.get("amount"), data.get("status")
    if not (isinstance(refund_id, str) and 0 < len(refund_id) <= 255 and type(amount) is int and amount >= 0):
        return None
    return RefundInfo(id=refund_id, amount=amount, status=status if isinstance(status, str) else "")


class TestModeBackend:
    """A local stand-in for Stripe Checkout: no keys, no network, no money. Works only with DEBUG on.

    A session is "paid" once the buyer pressed Pay on the test checkout page (which fulfils the order through
    the same code as Stripe's webhook), so the state of a session is simply read back from its order.
    """

    def session_create(self, *, order: Order, success_url: str, cancel_url: str) -> CheckoutSession:
        session_id = TEST_SESSION_PREFIX + secrets.token_urlsafe(24)
        url = reverse("checkout_test", kwargs={"session_id": session_id})
        return CheckoutSession(id=session_id, url=url, status="open", payment_status="unpaid", order_id=order.pk)

    def session_retrieve(self, *, session_id: str) -> CheckoutSession:
        order = Order.objects.filter(stripe_session_id=session_id).first()
        if order is None:
            raise CheckoutError("We don't know that checkout.", http_status=404)
        paid = order.status in (Order.Status.PAID, Order.Status.REFUNDED)
        return self._session(order, paid=paid)

    def session_for_payment(self, *, payment_intent_id: str) -> CheckoutSession | None:
        """Test-mode payments are never refunded by Stripe; a paid order already carries its payment id."""
        return None

    def sessions_for_order(self, *, order: Order) -> list[CheckoutSession]:
        return []  # a test-mode session is recorded on its order when it is made, in the same process

    def refunds_for_charge(self, *, charge_id: str) -> list[RefundInfo]:
        return []

    def refund_create(self, *, order: Order, amount: int, key: str, metadata: dict[str, str]) -> RefundInfo:
        """A local refund: no money moves. Its id is derived from the key, so a repeat is the same refund; like
        Stripe, it refuses more than is left of the payment."""
        refund_id = "re_localtest_" + hashlib.sha256(key.encode()).hexdigest()[:24]
        existing = Refund.objects.filter(stripe_refund_id=refund_id).first()
        if existing is not None:
            return RefundInfo(id=refund_id, amount=existing.amount, status=existing.status)
        if order.status not in (Order.Status.PAID, Order.Status.REFUNDED) or not order.payment_intent_id:
            raise CheckoutError("This order was never paid; there is nothing to refund.", http_status=400)
        if amount > order.amount_cents - order.amount_refunded:
            raise CheckoutError(_REFUND_REFUSALS["amount_too_large"].replace("Stripe", "Test mode"), http_status=400)
        return RefundInfo(id=refund_id, amount=amount, status="succeeded")

    def session_paid(self, *, order: Order, email: str = "") -> CheckoutSession:
        """The session as the test checkout page's Pay button leaves it: complete and paid."""
        return self._session(order, paid=True, email=email)

    @staticmethod
    def _session(order: Order, *, paid: bool, email: str = "") -> CheckoutSession:
        status = "expired" if order.status == Order.Status.EXPIRED else ("complete" if paid else "open")
        return CheckoutSession(
            id=order.stripe_session_id or "",
            url=reverse("checkout_test", kwargs={"session_id": order.stripe_session_id}),
            status=status,
            payment_status="paid" if paid else "unpaid",
            order_id=order.pk,
            payment_intent_id=f"pi_localtest_{order.pk}" if paid else "",
            email=email or order.email,
            mode="payment",
            amount_total=order.amount_cents,
            currency=order.currency,
            amount_subtotal=order.amount_cents,
        )


def payments_test_mode() -> bool:
    """The test-mode backend is selected and allowed (DEBUG on)."""
    return settings.PAYMENTS_BACKEND == "test" and settings.DEBUG


def payments_backend() -> PaymentsBackend:
    """The configured backend. A test-mode backend outside DEBUG is refused here, not only by check --deploy."""
    if settings.PAYMENTS_BACKEND == "stripe":
        return StripeBackend()
    if settings.PAYMENTS_BACKEND == "test":
        if not settings.DEBUG:
            logger.error("PAYMENTS_BACKEND is 'test' but DEBUG is off: refusing to hand out free vouchers.")
            raise CheckoutError("Payments are not available right now.", http_status=503)
        return TestModeBackend()
    logger.error("Unknown PAYMENTS_BACKEND %r (expected 'stripe' or 'test').", settings.PAYMENTS_BACKEND)
    raise CheckoutError("Payments are not available right now.", http_status=503)
