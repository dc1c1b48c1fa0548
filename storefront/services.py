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
- Only what was paid for: the session must name the order in its metadata (which only our key can set) and
  its mode, amount and currency must match the order. A mismatch issues nothing and is kept on the order.
- Nothing paid is given away: every refund (per Stripe refund id) and every dispute takes back what the payment
  bought through `vouchers.services.voucher_claw_back`, and gives it back once if the refund fails or the
  dispute is won.
"""

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import EmailMultiAlternatives
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from storefront.context_processors import shop_context
from storefront.errors import CheckoutError
from storefront.models import CreditPack, Dispute, Order, Refund, StripeEvent
from storefront.payments import (
    CheckoutSession,
    RefundInfo,
    TestModeBackend,
    payments_backend,
    payments_test_mode,
    refund_idempotency_key,
)
from storefront.tokens import BuyTokenError, buy_token_open
from vouchers.errors import VoucherError
from vouchers.models import Voucher
from vouchers.services import (
    server_voucher_redeem,
    voucher_claw_back,
    voucher_claw_back_return,
    voucher_issue,
    voucher_redeem,
)

logger = logging.getLogger(__name__)

UNKNOWN_CHECKOUT = (
    "We don't know that checkout (yet). If you just paid, your voucher is emailed to you and shows here within a few"
    " minutes."
)
MISMATCH = "We couldn't match this payment to its order. Please contact support; nothing is lost."
# The longest email the order can keep (EmailField's default); a longer one is dropped, never fatal.
MAX_EMAIL_LENGTH = Order._meta.get_field("email").max_length
# A paid session may settle an order we had given up on (the money is real); never a refunded one.
_CLAIMABLE = (Order.Status.PENDING, Order.Status.EXPIRED, Order.Status.FAILED)
MAX_ERROR_TEXT = 4000
# Stripe Checkout Sessions expire 24 hours after creation unless told otherwise (we never set expires_at).
CHECKOUT_LIFETIME = timedelta(hours=24, minutes=30)
# An order with no session this long after it was created will never get one (see orders_reconcile).
ORPHAN_AFTER = timedelta(minutes=30)
RECONCILE_BATCH = 500


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


def order_create(
    *, pack_id: object, discord_user_id: int | None = None, discord_name: str = "", discord_guild_id: int | None = None
) -> Order:
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
        discord_guild_id=discord_guild_id if discord_user_id else None,
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
    discord_user_id, discord_name, discord_guild_id = None, "", None
    if buy_token:
        try:
            buy_for = buy_token_open(token=buy_token)
        except BuyTokenError as exc:
            raise CheckoutError(str(exc)) from exc
        discord_user_id, discord_name = buy_for.discord_user_id, buy_for.name
        discord_guild_id = buy_for.discord_guild_id
    order = order_create(
        pack_id=pack_id, discord_user_id=discord_user_id, discord_name=discord_name, discord_guild_id=discord_guild_id
    )
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


def order_success_lookup(*, session_id: str) -> Fulfilment:
    """The success page: our own records first, Stripe only for an order of ours still waiting for its payment.

    An id we never recorded costs no Stripe call (anyone can type one); a paid order's reload costs none either.
    A session we never recorded (its creation timed out) is settled by the webhook or `reconcileorders`.
    """
    order = Order.objects.filter(stripe_session_id=session_id).first() if isinstance(session_id, str) else None
    if order is None or not 0 < len(session_id) <= 255:
        raise CheckoutError(UNKNOWN_CHECKOUT, http_status=404)
    voucher = Voucher.objects.filter(order=order).first()
    if voucher is not None:
        return Fulfilment(order=order, voucher=voucher, issued_now=False)
    return order_fulfill(session_id=session_id)


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


class PaymentMismatch(CheckoutError):
    """A session names one of our orders but did not pay for it (amount, currency or mode differ)."""

    def __init__(self) -> None:
        super().__init__(MISMATCH, http_status=409)


def _order_for_session(session: CheckoutSession) -> Order:
    """Our order behind a session: named in its metadata (or, for an old session, recorded on the order)."""
    order = Order.objects.filter(pk=session.order_id).first() if session.order_id else None
    if order is None:
        order = Order.objects.filter(stripe_session_id=session.id).first()
    if order is None:
        raise CheckoutError(UNKNOWN_CHECKOUT, http_status=404)
    if order.stripe_session_id and order.stripe_session_id != session.id:
        logger.error("A Checkout Session names order %s, which belongs to another session.", order.pk)
        raise CheckoutError(UNKNOWN_CHECKOUT, http_status=404)
    return order


def session_payment_problem(*, session: CheckoutSession, order: Order) -> str:
    """Why this session did not pay for this order ("" when it did). Discounts and tax are Stripe's to add."""
    if session.mode != "payment":
        return f"session mode is {session.mode or 'missing'}, not payment"
    if session.currency != order.currency.lower():
        return f"session currency is {session.currency or 'missing'}, order currency {order.currency}"
    subtotal = session.amount_subtotal if session.amount_subtotal is not None else session.amount_total
    if subtotal != order.amount_cents:
        return f"session amount is {subtotal}, order amount {order.amount_cents}"
    net = order.amount_cents - session.amount_discount
    if session.amount_total not in (net, net + session.amount_tax):  # tax included in the price, or added
        return f"session total is {session.amount_total}, expected {net} (+ tax {session.amount_tax})"
    return ""


def _order_note_problem(*, order: Order, problem: str) -> None:
    Order.objects.filter(pk=order.pk).exclude(problem=problem).update(problem=problem, updated_at=timezone.now())
    logger.error("A payment naming order %s was not fulfilled: %s.", order.pk, problem)


def _fulfill(*, session: CheckoutSession) -> Fulfilment:
    order = _order_for_session(session)
    if not session.is_paid:
        if session.status == "expired":
            _order_expire(order_id=order.pk, session_id=session.id)
            order.refresh_from_db()
        return Fulfilment(order=order, voucher=Voucher.objects.filter(order=order).first(), issued_now=False)
    problem = session_payment_problem(session=session, order=order)
    if problem:
        _order_note_problem(order=order, problem=problem)
        raise PaymentMismatch()

    issued_now = False
    now = timezone.now()
    updates: dict = {
        "status": Order.Status.PAID,
        "paid_at": now,
        "updated_at": now,
        "amount_paid": order.amount_cents,
        "currency_paid": session.currency,
        "stripe_session_id": session.id,
    }
    if session.payment_intent_id:
        updates["payment_intent_id"] = session.payment_intent_id
    if session.email and len(session.email) <= MAX_EMAIL_LENGTH:
        updates["email"] = session.email
    elif session.email:
        # The voucher is still on the success page; never fail a paid order over an address we can't keep.
        logger.warning("Order %s: the buyer's email is too long to keep; no email is sent.", order.pk)
    # One short transaction: the claim, the voucher, the optional redeem. No network inside.
    with transaction.atomic():
        claimed = (
            Order.objects.filter(pk=order.pk, status__in=_CLAIMABLE)
            .filter(Q(stripe_session_id__isnull=True) | Q(stripe_session_id=session.id))
            .update(**updates)
        )
        if claimed:
            try:
                voucher = voucher_issue(credits=order.credits, order=order, note=f"Order #{order.pk}")
            except IntegrityError:
                # The order already has its voucher (an operator reset its status?): never a second one.
                logger.warning("Order %s was claimable but already had a voucher; keeping that one.", order.pk)
            else:
                issued_now = True
                if order.discord_guild_id:
                    _redeem_to_server(voucher=voucher, discord_guild_id=order.discord_guild_id)
                elif order.discord_user_id:
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


def _redeem_to_server(*, voucher: Voucher, discord_guild_id: int) -> None:
    """A `/server buy` order: credit the server's wallet straight away; if that fails, the voucher stays active
    (a manager can `/server redeem` it)."""
    try:
        with transaction.atomic():
            server_voucher_redeem(code=voucher.code, discord_guild_id=discord_guild_id)
    except VoucherError:
        logger.exception("Could not redeem order %s's voucher to its Discord server's wallet.", voucher.order_id)
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


def _order_expire(*, order_id: int, session_id: str) -> bool:
    """Expire a pending order whose session (recorded or not yet) expired unpaid."""
    return bool(
        Order.objects.filter(pk=order_id, status=Order.Status.PENDING)
        .filter(Q(stripe_session_id__isnull=True) | Q(stripe_session_id=session_id))
        .update(status=Order.Status.EXPIRED, updated_at=timezone.now())
    )


def order_mark_failed(*, session_id: str) -> bool:
    """A delayed payment (bank debit and the like) failed. Only a pending order changes."""
    return bool(
        Order.objects.filter(stripe_session_id=session_id, status=Order.Status.PENDING).update(
            status=Order.Status.FAILED, updated_at=timezone.now()
        )
    )


def _order_for_payment(*, payment_intent_id: str) -> Order | None:
    """Our paid order behind a PaymentIntent, fulfilling it first when its fulfilment has not landed yet.

    A refund or dispute can arrive before the order's fulfilment (its webhook failing, the buyer never back on
    the success page). Then the payment's Checkout Session is looked up at the backend and fulfilled first, so
    the refund or dispute finds the one voucher to act on, and a fulfilment arriving later has nothing left to do.
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
                if exc.http_status not in (404, 409):
                    raise
    if order is None:
        logger.warning("Refund or dispute of a payment that is not one of our orders; ignored.")
    return order


def _voucher_of(order: Order) -> Voucher:
    voucher = Voucher.objects.filter(order=order).first()
    if voucher is None:  # an unpaid order (a mismatched payment): refuse loudly; the event is retried; see admin
        raise CheckoutError(f"Order {order.pk} has no voucher to take back.", http_status=409)
    return voucher


def order_refunds_sync(*, payment_intent_id: str, charge_id: str) -> list[Refund]:
    """`charge.refunded` (full or partial): apply every refund of the charge, as Stripe lists them now."""
    order = _order_for_payment(payment_intent_id=payment_intent_id)
    if order is None or not charge_id:
        return []
    refunds = payments_backend().refunds_for_charge(charge_id=charge_id)
    return [order_refund_apply(order_id=order.pk, refund=refund) for refund in refunds]


def order_refund_update(*, payment_intent_id: str, refund: RefundInfo) -> Refund | None:
    """One refund changed (`charge.refund.updated`, `refund.*`): apply it, or give back its clawback if it failed."""
    order = _order_for_payment(payment_intent_id=payment_intent_id)
    if order is None:
        return None
    return order_refund_apply(order_id=order.pk, refund=refund)


def order_refund_apply(*, order_id: int, refund: RefundInfo) -> Refund:
    """Record one Stripe refund of an order and take back its share of the credits, once; give it back if it failed.

    Pro rata and cumulative: after refunds totalling R of an amount A, `floor(credits * R / A)` credits are
    taken in all (all of them once A is refunded). Each refund takes what brings the total there, so a refund
    redelivered, or delivered again inside `charge.refunded`, takes nothing more. A failed or canceled refund
    is final: it gives back exactly what its clawback took, once, and a late "succeeded" for it is ignored.
    The order row is locked first, so two refunds of one order are worked out one after the other.
    """
    failed = refund.status in Refund.FAILED_STATUSES
    with transaction.atomic():
        order = Order.objects.select_for_update().get(pk=order_id)
        record, _ = Refund.objects.get_or_create(
            stripe_refund_id=refund.id, defaults={"order": order, "amount": refund.amount, "status": refund.status}
        )
        if record.order_id != order.pk:
            raise CheckoutError(f"Refund {refund.id} belongs to another order.", http_status=409)
        if record.failed_at is not None:
            return record  # failed is final
        now = timezone.now()
        if failed:
            Refund.objects.filter(pk=record.pk).update(status=refund.status, failed_at=now)
            if record.applied_at is not None and record.credits:
                voucher_claw_back_return(cause=refund_cause(refund.id), memo=f"Refund of order #{order.pk} failed")
        elif record.applied_at is None:
            voucher = _voucher_of(order)
            in_force = Refund.objects.filter(order=order, failed_at__isnull=True)
            refunded = sum(in_force.values_list("amount", flat=True))
            taken = sum(in_force.exclude(pk=record.pk).values_list("credits", flat=True))
            target = order.credits if refunded >= order.amount_cents else order.credits * refunded // order.amount_cents
            credits = 0
            if target > taken:
                clawback = voucher_claw_back(
                    voucher_id=voucher.pk,
                    credits=target - taken,
                    cause=refund_cause(refund.id),
                    memo=f"Order #{order.pk} refunded ({refund.amount} of {order.amount_cents})",
                )
                credits = clawback.credits if clawback is not None else 0
            Refund.objects.filter(pk=record.pk).update(status=refund.status, credits=credits, applied_at=now)
        else:
            Refund.objects.filter(pk=record.pk).update(status=refund.status)
        refunded = sum(Refund.objects.filter(order=order, failed_at__isnull=True).values_list("amount", flat=True))
        status = order.status
        if order.status in (Order.Status.PAID, Order.Status.REFUNDED):
            status = Order.Status.REFUNDED if refunded >= order.amount_cents else Order.Status.PAID
        Order.objects.filter(pk=order.pk).update(amount_refunded=refunded, status=status, updated_at=now)
    record.refresh_from_db()
    logger.info("Order %s: refund %s is %s; %s credits taken back.", order.pk, record.pk, record.status, record.credits)
    return record


MAX_REFUND_REASON_LENGTH = 300


def order_refund(*, order_id: int, amount: int, reason: str, operator: str, refunds_seen: int) -> Refund:
    """An operator refunds `amount` (minor units) of an order: Stripe's refund API, then Stripe's own settlement.

    The refund is created at the payments backend with no transaction open, under an idempotency key derived
    from the order, the amount and `refunds_seen` (how many refunds the order had when the operator's form was
    shown), so the same form sent twice refunds once. What Stripe returns is then settled by
    `order_refund_apply`, the very function `charge.refunded` and `charge.refund.updated` call: the refund's id
    is recorded once, so the webhook that follows for it changes nothing. Refuses (writes nothing, calls
    nothing) an unpaid order, an amount outside what is left, or a missing reason.
    """
    reason = reason.strip() if isinstance(reason, str) else ""
    if not reason:
        raise CheckoutError("Say why: the reason is recorded with the refund.", http_status=400)
    if len(reason) > MAX_REFUND_REASON_LENGTH:
        raise CheckoutError(f"The reason is too long (at most {MAX_REFUND_REASON_LENGTH} characters).")
    order = Order.objects.filter(pk=order_id).first() if type(order_id) is int else None
    if order is None:
        raise CheckoutError("No such order.", http_status=404)
    if order.status not in (Order.Status.PAID, Order.Status.REFUNDED) or not order.payment_intent_id:
        raise CheckoutError("This order was never paid; there is nothing to refund.", http_status=400)
    left = order.amount_cents - order.amount_refunded
    if left <= 0:
        raise CheckoutError("This order has been refunded in full already.", http_status=400)
    if type(amount) is not int or not 0 < amount <= left:
        raise CheckoutError(f"The amount must be from 1 to {left} (what is left of the payment).", http_status=400)
    if type(refunds_seen) is not int or refunds_seen < 0:
        raise CheckoutError("Reload the order and try again.", http_status=400)
    key = refund_idempotency_key(order, nth=refunds_seen, amount=amount)
    metadata = {"order_id": str(order.pk), "operator": operator[:150], "reason": reason}
    refund = payments_backend().refund_create(order=order, amount=amount, key=key, metadata=metadata)
    logger.info("Order %s: refund %s of %s asked for by an operator.", order.pk, refund.id, refund.amount)
    return order_refund_apply(order_id=order.pk, refund=refund)


def refund_cause(refund_id: str) -> str:
    return f"refund {refund_id}"[:120]


def dispute_cause(dispute_id: str) -> str:
    return f"dispute {dispute_id}"[:120]


@dataclass(frozen=True)
class DisputeInfo:
    """A Stripe dispute object, as the webhook hands it over."""

    id: str
    payment_intent_id: str
    status: str
    reason: str
    amount: int
    currency: str
    evidence_due_by: int | None


def order_dispute_update(*, dispute: DisputeInfo) -> Dispute | None:
    """Any `charge.dispute.*` event: keep the dispute's record and act on its status.

    Open (any of Stripe's open or inquiry statuses): freeze what the payment bought, once: an unredeemed voucher
    is voided, a redeemed one's credits are taken back (what cannot be taken now is owed). Won (or an inquiry
    closed): give back exactly what was frozen, once. Lost: the freeze is final (frozen now if it never was).
    A closed status is final: a stale event of an earlier status arriving later changes nothing.
    """
    order = _order_for_payment(payment_intent_id=dispute.payment_intent_id)
    if order is None:
        return None
    closed = dispute.status in Dispute.RETURNING_STATUSES or dispute.status == "lost"
    due = datetime.fromtimestamp(dispute.evidence_due_by, tz=UTC) if dispute.evidence_due_by is not None else None
    with transaction.atomic():
        Order.objects.select_for_update().filter(pk=order.pk).first()  # one dispute event of an order at a time
        record, _ = Dispute.objects.get_or_create(
            stripe_dispute_id=dispute.id,
            defaults={
                "order": order,
                "status": dispute.status,
                "reason": dispute.reason[:64],
                "amount": dispute.amount,
                "currency": dispute.currency[:3],
                "evidence_due_by": due,
            },
        )
        if record.order_id != order.pk:
            raise CheckoutError(f"Dispute {dispute.id} belongs to another order.", http_status=409)
        now = timezone.now()
        if record.closed_at is None:
            Dispute.objects.filter(pk=record.pk).update(
                status=dispute.status,
                reason=dispute.reason[:64],
                amount=dispute.amount,
                evidence_due_by=due,
                closed_at=now if closed else None,
                updated_at=now,
            )
            record.refresh_from_db()
        state, frozen = record.credits_state, record.credits_frozen
        if record.status in Dispute.RETURNING_STATUSES:
            if state == Dispute.Credits.FROZEN:
                voucher_claw_back_return(
                    cause=dispute_cause(record.stripe_dispute_id), memo=f"Dispute of order #{order.pk} won"
                )
            if state in (Dispute.Credits.NONE, Dispute.Credits.FROZEN):
                state = Dispute.Credits.RETURNED
        elif state == Dispute.Credits.NONE:
            clawback = voucher_claw_back(
                voucher_id=_voucher_of(order).pk,
                credits=order.credits,
                cause=dispute_cause(record.stripe_dispute_id),
                memo=f"Order #{order.pk} disputed ({record.reason or 'no reason given'})",
            )
            frozen = clawback.credits if clawback is not None else 0
            state = Dispute.Credits.FINAL if record.status == "lost" else Dispute.Credits.FROZEN
        elif state == Dispute.Credits.FROZEN and record.status == "lost":
            state = Dispute.Credits.FINAL
        Dispute.objects.filter(pk=record.pk).update(credits_state=state, credits_frozen=frozen)
    record.refresh_from_db()
    logger.info("Order %s: dispute %s is %s; credits %s.", order.pk, record.pk, record.status, record.credits_state)
    return record


# --- Orphans: orders whose fate Stripe knows and we don't -----------------------------------------------


@dataclass(frozen=True)
class Reconciliation:
    checked: int
    paid: int
    expired: int
    problems: int


def orders_reconcile(*, now: datetime | None = None) -> Reconciliation:
    """Settle orders left behind: those without a recorded session, and pending ones past Checkout's expiry.

    For an order without a session, the sessions created around it that name it in their metadata are
    looked up at Stripe; a paid one fulfils the order, none (once no session can still appear) expires it.
    A pending order past Checkout's 24-hour expiry is settled from its own session. Safe to run at any time
    and from several places at once: everything it calls is idempotent. Network calls are made outside
    any transaction.
    """
    now = now or timezone.now()
    backend = payments_backend()
    checked = paid = expired = problems = 0
    # A session is created within the checkout request (bounded by the Stripe call budget), so an order with
    # no session after ORPHAN_AFTER will never get one.
    orphans = Order.objects.filter(
        status=Order.Status.PENDING, stripe_session_id__isnull=True, created_at__lt=now - ORPHAN_AFTER
    )
    stale = Order.objects.filter(
        status=Order.Status.PENDING, stripe_session_id__isnull=False, created_at__lt=now - CHECKOUT_LIFETIME
    )
    for order in list(orphans.order_by("pk")[:RECONCILE_BATCH]) + list(stale.order_by("pk")[:RECONCILE_BATCH]):
        checked += 1
        try:
            if order.stripe_session_id:
                sessions = [backend.session_retrieve(session_id=order.stripe_session_id)]
            else:
                sessions = []
                for session in backend.sessions_for_order(order=order):
                    problem = session_payment_problem(session=session, order=order)
                    if problem:  # names the order but did not pay for it: kept for an operator, never settles it
                        _order_note_problem(order=order, problem=problem)
                    else:
                        sessions.append(session)
                if len(sessions) == 1:  # found: from now on it is checked like any other order's session
                    Order.objects.filter(pk=order.pk, stripe_session_id__isnull=True).update(
                        stripe_session_id=sessions[0].id, updated_at=timezone.now()
                    )
            outcome = None
            for session in sorted(sessions, key=lambda s: not s.is_paid):  # a paid one first
                outcome = _fulfill(session=session)
                if outcome.paid:
                    break
            if outcome is not None and outcome.paid:
                paid += 1
                continue
            if not sessions or all(s.status == "expired" for s in sessions):
                if Order.objects.filter(pk=order.pk, status=Order.Status.PENDING).update(
                    status=Order.Status.EXPIRED, updated_at=timezone.now()
                ):
                    expired += 1
        except CheckoutError as exc:
            problems += 1
            logger.warning("Could not reconcile order %s: %s", order.pk, exc.message)
    return Reconciliation(checked=checked, paid=paid, expired=expired, problems=problems)


# --- Stripe events: acknowledge, then process ---------------------------------------------------------

# The first retry of a failed event waits this long, each later one twice as long, up to STRIPE_EVENT_RETRY_MAX.
STRIPE_EVENT_RETRY_FIRST = timedelta(seconds=10)
STRIPE_EVENT_RETRY_MAX = timedelta(hours=1)


def stripe_event_record(*, event_id: str, event_type: str, payload: dict, handled: bool = True) -> bool:
    """Store a verified event, once, before the webhook answers 2xx. True when it is new (a processor must run it).

    A redelivery of a stored event writes nothing and returns False: it is processed (or being retried) already.
    An event of a type we do not handle is recorded as processed at once (the audit trail), with nothing to run.
    The insert commits before the caller answers, so an acknowledged event is never lost.
    """
    now = timezone.now()
    try:
        with transaction.atomic():
            StripeEvent.objects.create(
                event_id=event_id,
                type=event_type,
                payload=payload if handled else {},
                next_attempt_at=now if handled else None,
                processed_at=None if handled else now,
            )
    except IntegrityError:
        # A redelivery. An event an older release recorded unprocessed has no payload yet: it gets this one.
        # (Read first: a duplicate of a current event, the common case, then writes nothing at all.)
        legacy = StripeEvent.objects.filter(
            event_id=event_id, processed_at__isnull=True, claimed_until__isnull=True, next_attempt_at__isnull=True
        )
        if handled and payload and legacy.exists():
            return bool(legacy.update(payload=payload, next_attempt_at=now))
        return False
    return handled


def stripe_event_claim(*, event_id: str, lease: timedelta, now: datetime | None = None) -> StripeEvent | None:
    """Take one stored event for processing: a conditional UPDATE only one processor can win. None when not ours.

    Claimable: not processed, due (its retry delay is over), and not held, or held by a claim whose lease ran out
    (the process holding it crashed or was killed). The winner holds it until `now + lease`.
    """
    now = now or timezone.now()
    claimed = (
        StripeEvent.objects.filter(event_id=event_id, processed_at__isnull=True)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        .update(claimed_until=now + lease, attempts=F("attempts") + 1)
    )
    return StripeEvent.objects.filter(event_id=event_id).first() if claimed else None


def stripe_events_due(*, now: datetime | None = None, limit: int = 100) -> list[str]:
    """Ids of unprocessed events a processor may claim now, oldest first (what the processors' poll picks up)."""
    now = now or timezone.now()
    return list(
        StripeEvent.objects.filter(processed_at__isnull=True)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        .order_by("next_attempt_at", "pk")
        .values_list("event_id", flat=True)[:limit]
    )


def stripe_event_succeeded(*, event_id: str) -> None:
    StripeEvent.objects.filter(event_id=event_id, processed_at__isnull=True).update(
        processed_at=timezone.now(), claimed_until=None, next_attempt_at=None
    )


def stripe_event_retry_delay(*, attempts: int) -> timedelta:
    """How long after its `attempts`-th failed attempt an event is tried again: 10 s, 20 s, 40 s, ... at most 1 h."""
    return min(STRIPE_EVENT_RETRY_FIRST * 2 ** min(max(attempts - 1, 0), 20), STRIPE_EVENT_RETRY_MAX)


def stripe_event_failed(
    *, event_id: str, error: BaseException, claimed_until: datetime | None = None, now: datetime | None = None
) -> None:
    """Keep what went wrong (for the admin) and schedule the next attempt; the event stays unprocessed.

    `claimed_until` is the claim the failing attempt held: when another processor has taken the event over since
    (this attempt outlived its lease), its claim is left alone.
    """
    now = now or timezone.now()
    parts, exc = [], error
    while exc is not None and len(parts) < 4:
        parts.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ or exc.__context__
    events = StripeEvent.objects.filter(event_id=event_id, processed_at__isnull=True)
    if claimed_until is not None:
        events = events.filter(claimed_until=claimed_until)
    attempts = events.values_list("attempts", flat=True).first()
    if attempts is None:
        return
    events.update(
        error="\ncaused by ".join(parts)[:MAX_ERROR_TEXT],
        next_attempt_at=now + stripe_event_retry_delay(attempts=attempts),
        claimed_until=None,
    )


def stripe_events_retry_now(*, event_ids: list[str]) -> int:
    """An operator's "retry now": unprocessed events become due at once (their claim, if any, is left alone)."""
    return StripeEvent.objects.filter(event_id__in=event_ids, processed_at__isnull=True).update(
        next_attempt_at=timezone.now()
    )
