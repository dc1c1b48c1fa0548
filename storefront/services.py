"""The shop's business rules: start a checkout, fulfil a paid order exactly once, settle expiries and refunds.

Views and webhook handlers only parse input and call one of these. The rules that keep a buyer whole:

- No transaction is ever open across a network call: an order is committed before Stripe is asked for a
  Checkout Session, and a session is retrieved from Stripe before the fulfilment transaction begins.
- Fulfilment trusts only what the payments backend says about the session (never the redirect, never an
  event body alone) and acts only when it is paid.
- Exactly one voucher per paid order, whatever the number, order or concurrency of callers: the order is
  claimed by one conditional UPDATE (pending/expired/failed -> paid) and the voucher is issued in the same
  short transaction, behind the unique `Voucher.order` one-to-one. Everyone who loses the claim reads the
  winner's voucher. Email goes out only after that transaction commits.
"""

import logging
from dataclasses import dataclass
from urllib.parse import urlencode

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import EmailMultiAlternatives
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.db.models import F
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from storefront.context_processors import shop_context
from storefront.errors import CheckoutError
from storefront.models import CreditPack, Order, StripeEvent
from storefront.payments import CheckoutSession, TestModeBackend, payments_backend, payments_test_mode
from storefront.tokens import BuyTokenError, buy_token_open
from vouchers.errors import VoucherError
from vouchers.models import Voucher
from vouchers.services import PaymentRefundOutcome, voucher_issue, voucher_payment_refunded, voucher_redeem

logger = logging.getLogger(__name__)

UNKNOWN_CHECKOUT = "We don't know that checkout. If you paid, your voucher is in your email."
# A paid session may settle an order we had given up on (the money is real); never a refunded one.
_CLAIMABLE = (Order.Status.PENDING, Order.Status.EXPIRED, Order.Status.FAILED)
MAX_ERROR_TEXT = 4000


@dataclass(frozen=True)
class CheckoutStart:
    order: Order
    url: str  # where to send the buyer: Stripe Checkout, or the local test-mode page


@dataclass(frozen=True)
class Fulfilment:
    """Where an order stands after a fulfilment attempt."""

    order: Order
    voucher: Voucher | None
    issued_now: bool  # this call issued the voucher (False for every repeat)

    @property
    def paid(self) -> bool:
        return self.voucher is not None

    @property
    def redeemed_to_discord(self) -> bool:
        return self.voucher is not None and self.voucher.status == Voucher.Status.REDEEMED


# --- Checkout -------------------------------------------------------------------------------------------


def order_create(*, pack_id: object, discord_user_id: int | None = None, discord_name: str = "") -> Order:
    """A pending order for one active pack, with its credits and price copied as they are now."""
    pk = str(pack_id).strip() if pack_id is not None else ""
    pack = CreditPack.objects.filter(pk=int(pk), active=True).first() if pk.isdigit() and len(pk) < 19 else None
    if pack is None:
        raise CheckoutError("That pack is not available any more. Please pick another one.")
    return Order.objects.create(
        pack=pack,
        credits=pack.credits,
        amount_cents=pack.price_cents,
        currency=pack.currency,
        discord_user_id=discord_user_id,
        discord_name=discord_name if discord_user_id else "",
    )


def checkout_session_create(*, order: Order, buy_token: str = "") -> str:
    """Ask the payments backend for a Checkout Session for a committed order; returns the URL to send the buyer.

    Called outside any transaction (it is a network call). On failure the order stays pending and unpaid, and
    the buyer can simply try again (a new order); a retry of this same call reuses the order's idempotency key.
    """
    success_url = f"{settings.SITE_URL}{reverse('checkout_success')}?session_id={{CHECKOUT_SESSION_ID}}"
    cancel_url = f"{settings.SITE_URL}{reverse('checkout_cancel')}"
    if buy_token:
        cancel_url += "?" + urlencode({"for": buy_token})
    session = payments_backend().session_create(order=order, success_url=success_url, cancel_url=cancel_url)
    Order.objects.filter(pk=order.pk, stripe_session_id__isnull=True).update(
        stripe_session_id=session.id, updated_at=timezone.now()
    )
    order.stripe_session_id = session.id
    return session.url


def checkout_start(*, pack_id: object, buy_token: str = "") -> CheckoutStart:
    """`POST /checkout/`: check the optional `/buy` token, create the order, then its Checkout Session."""
    discord_user_id, discord_name = None, ""
    if buy_token:
        try:
            buy_for = buy_token_open(token=buy_token)
        except BuyTokenError as exc:
            raise CheckoutError(str(exc)) from exc
        discord_user_id, discord_name = buy_for.discord_user_id, buy_for.name
    order = order_create(pack_id=pack_id, discord_user_id=discord_user_id, discord_name=discord_name)
    url = checkout_session_create(order=order, buy_token=buy_token)
    return CheckoutStart(order=order, url=url)


# --- Fulfilment -----------------------------------------------------------------------------------------


def order_fulfill(*, session_id: str) -> Fulfilment:
    """Fulfil the order behind a Checkout Session if, and only if, the payments backend says it is paid.

    The one fulfilment path, used by the webhook (completed, async_payment_succeeded) and the success page.
    Idempotent and safe under any concurrency; a repeat returns the voucher issued the first time.
    """
    if not isinstance(session_id, str) or not 0 < len(session_id) <= 255:
        raise CheckoutError(UNKNOWN_CHECKOUT, http_status=404)
    session = payments_backend().session_retrieve(session_id=session_id)
    return _fulfill(session=session)


def order_test_pay(*, session_id: str, email: str = "") -> Fulfilment:
    """The test-mode checkout page's Pay button: the same fulfilment, with a session the test backend says is paid.

    Only with `PAYMENTS_BACKEND=test` and DEBUG on; anything else is "not found".
    """
    if not payments_test_mode():
        raise CheckoutError(UNKNOWN_CHECKOUT, http_status=404)
    email = (email or "").strip()
    if email:
        try:
            validate_email(email)
        except ValidationError:
            raise CheckoutError("That email address doesn't look right.") from None
    order = Order.objects.filter(stripe_session_id=session_id).first() if session_id else None
    if order is None:
        raise CheckoutError(UNKNOWN_CHECKOUT, http_status=404)
    return _fulfill(session=TestModeBackend().session_paid(order=order, email=email))


def _order_for_session(session: CheckoutSession) -> Order:
    order = Order.objects.filter(pk=session.order_id).first() if session.order_id else None
    if order is None:
        order = Order.objects.filter(stripe_session_id=session.id).first()
    if order is None:
        raise CheckoutError(UNKNOWN_CHECKOUT, http_status=404)
    if order.stripe_session_id and order.stripe_session_id != session.id:
        # Another integration on the same Stripe account may reuse client_reference_id values.
        logger.error("Session %s names order %s, which belongs to another session.", session.id, order.pk)
        raise CheckoutError(UNKNOWN_CHECKOUT, http_status=404)
    return order


def _fulfill(*, session: CheckoutSession) -> Fulfilment:
    order = _order_for_session(session)
    if not session.is_paid:
        if session.status == "expired":
            order_mark_expired(session_id=session.id)
            order.refresh_from_db()
        return Fulfilment(order=order, voucher=Voucher.objects.filter(order=order).first(), issued_now=False)

    issued_now = False
    now = timezone.now()
    updates: dict = {"status": Order.Status.PAID, "paid_at": now, "updated_at": now}
    if session.payment_intent_id:
        updates["payment_intent_id"] = session.payment_intent_id
    if session.email:
        updates["email"] = session.email
    if not order.stripe_session_id:
        updates["stripe_session_id"] = session.id
    # One short transaction: the claim, the voucher, the optional redeem. No network inside.
    with transaction.atomic():
        claimed = Order.objects.filter(pk=order.pk, status__in=_CLAIMABLE).update(**updates)
        if claimed:
            try:
                voucher = voucher_issue(credits=order.credits, order=order, note=f"Order #{order.pk}")
            except IntegrityError:
                # The order already has its voucher (an operator reset its status?): never a second one.
                logger.warning("Order %s was claimable but already had a voucher; keeping that one.", order.pk)
            else:
                issued_now = True
                if order.discord_user_id:
                    _redeem_to_buyer(voucher=voucher, discord_user_id=order.discord_user_id)
                order_id = order.pk
                transaction.on_commit(lambda: voucher_email_send(order_id=order_id), robust=True)
    order.refresh_from_db()
    voucher = Voucher.objects.filter(order=order).first()
    if issued_now:
        logger.info("Order %s paid: voucher issued (%s credits).", order.pk, order.credits)
    return Fulfilment(order=order, voucher=voucher, issued_now=issued_now)


def _redeem_to_buyer(*, voucher: Voucher, discord_user_id: int) -> None:
    """A `/buy` order: credit the member straight away. If that fails, the voucher stays active to redeem by hand."""
    try:
        with transaction.atomic():
            voucher_redeem(code=voucher.code, discord_user_id=discord_user_id)
    except VoucherError:
        logger.exception("Could not redeem order %s's voucher to its Discord member.", voucher.order_id)
    voucher.refresh_from_db()


def voucher_email_send(*, order_id: int) -> bool:
    """Email the buyer their voucher (after the fulfilment commits). False when there is no address."""
    order = Order.objects.select_related("voucher", "pack").get(pk=order_id)
    if not order.email:
        return False
    voucher = order.voucher
    context = {
        "order": order,
        "voucher": voucher,
        "redeemed_to_discord": voucher.status == Voucher.Status.REDEEMED,
        "success_url": f"{settings.SITE_URL}{reverse('checkout_success')}?"
        + urlencode({"session_id": order.stripe_session_id}),
        "site_url": settings.SITE_URL,
        "legal_urls": {kind: f"{settings.SITE_URL}{reverse(kind)}" for kind in ("terms", "privacy", "refunds")},
        **shop_context(),
    }
    subject = render_to_string("emails/voucher_subject.txt", context).strip()
    message = EmailMultiAlternatives(
        subject=subject,
        body=render_to_string("emails/voucher.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[order.email],
    )
    message.attach_alternative(render_to_string("emails/voucher.html", context), "text/html")
    message.send()
    return True


def order_mark_expired(*, session_id: str) -> bool:
    """The Checkout Session expired unpaid. Only a pending order changes; a paid one never goes back."""
    return bool(
        Order.objects.filter(stripe_session_id=session_id, status=Order.Status.PENDING).update(
            status=Order.Status.EXPIRED, updated_at=timezone.now()
        )
    )


def order_mark_failed(*, session_id: str) -> bool:
    """A delayed payment (bank debit and the like) failed. Only a pending order changes."""
    return bool(
        Order.objects.filter(stripe_session_id=session_id, status=Order.Status.PENDING).update(
            status=Order.Status.FAILED, updated_at=timezone.now()
        )
    )


def order_refund(*, payment_intent_id: str, fully_refunded: bool, memo: str = "") -> PaymentRefundOutcome | None:
    """A charge was refunded: mark its order refunded and void its voucher, or claw back what is left of it.

    Only full refunds change anything; a partial refund is a goodwill gesture the operator settles by hand.
    Idempotent (the voucher's `refunded_at` is claimed once). None when there was nothing to do.

    A refund can arrive before the order's fulfilment landed (its webhook failing, the buyer never back on the
    success page). Then the payment's Checkout Session is looked up at the backend and fulfilled first, so the
    order ends refunded with its one voucher void, and a fulfilment arriving later finds nothing left to do.
    """
    if not payment_intent_id:
        return None
    order = Order.objects.filter(payment_intent_id=payment_intent_id).first()
    if order is None:
        session = payments_backend().session_for_payment(payment_intent_id=payment_intent_id)
        if session is not None and session.is_paid:
            try:
                order = _fulfill(session=session).order
            except CheckoutError as exc:
                if exc.http_status != 404:
                    raise
    if order is None:
        logger.warning("Refund for payment %s, which is not one of our orders; ignored.", payment_intent_id)
        return None
    if not fully_refunded:
        logger.warning("Order %s was partially refunded; its voucher is left as it is.", order.pk)
        return None
    with transaction.atomic():
        Order.objects.filter(pk=order.pk, status=Order.Status.PAID).update(
            status=Order.Status.REFUNDED, updated_at=timezone.now()
        )
        voucher = Voucher.objects.filter(order=order).first()
        if voucher is None:  # cannot happen for a paid order; refuse loudly rather than half-refund
            raise CheckoutError(f"Order {order.pk} has no voucher to refund.", http_status=409)
        outcome = voucher_payment_refunded(voucher_id=voucher.pk, memo=memo or f"Order #{order.pk} refunded")
    logger.info("Order %s refunded: %s", order.pk, outcome)
    return outcome


# --- Stripe events --------------------------------------------------------------------------------------


def stripe_event_claim(*, event_id: str, event_type: str) -> bool:
    """Record one delivery of an event. False when it was processed before: the caller answers 200, does nothing.

    An event whose earlier delivery failed (or is still running) is processed again: every handler is
    idempotent, and this is how Stripe's retries repair a failure.
    """
    event, _ = StripeEvent.objects.get_or_create(event_id=event_id, defaults={"type": event_type})
    if event.processed_at is not None:
        return False
    StripeEvent.objects.filter(pk=event.pk).update(attempts=F("attempts") + 1)
    return True


def stripe_event_succeeded(*, event_id: str) -> None:
    StripeEvent.objects.filter(event_id=event_id, processed_at__isnull=True).update(processed_at=timezone.now())


def stripe_event_failed(*, event_id: str, error: BaseException) -> None:
    """Keep what went wrong (for the admin); the event stays unprocessed so Stripe's retry runs it again."""
    parts, exc = [], error
    while exc is not None and len(parts) < 4:
        parts.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ or exc.__context__
    StripeEvent.objects.filter(event_id=event_id).update(error="\ncaused by ".join(parts)[:MAX_ERROR_TEXT])
