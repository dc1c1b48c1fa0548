"""The shop's contributions to `auditcredits`: paid orders, their vouchers, what refunds and disputes took back."""

from datetime import datetime

from django.db.models import F, Q
from django.db.models.functions import Lower

from storefront.models import Dispute, Order, Refund
from storefront.services import dispute_cause, refund_cause
from vouchers.audit import audit_check, moved_since
from vouchers.models import Clawback, Voucher

_PAID = (Order.Status.PAID, Order.Status.REFUNDED)


def _orders(since: datetime | None):
    """Every order, or those changed since `since` (every service that changes an order sets its updated_at)."""
    return Order.objects.all() if since is None else Order.objects.filter(updated_at__gte=since)


@audit_check("each paid order has exactly one voucher")
def _paid_orders_have_one_voucher(since: datetime | None = None) -> list[str]:
    # In SQL, returning only the orders that break it (a voucher's order is one-to-one, so at most one each).
    problems = []
    paid = Q(status__in=_PAID)
    orders = _orders(since)
    for pk, status in orders.filter(paid, voucher__isnull=True).values_list("pk", "status"):
        problems.append(f"order {pk}: {status} with 0 vouchers")
    mismatched = orders.filter(paid, voucher__isnull=False).exclude(voucher__credits=F("credits"))
    for pk, worth, credits in mismatched.values_list("pk", "voucher__credits", "credits"):
        problems.append(f"order {pk}: voucher worth {worth}, order {credits}")
    for pk, status in orders.filter(~paid, voucher__isnull=False).values_list("pk", "status"):
        problems.append(f"order {pk}: {status} but has a voucher")
    return problems


@audit_check("every paid order was paid its amount")
def _paid_orders_paid_their_amount(since: datetime | None = None) -> list[str]:
    wrong = (
        _orders(since)
        .filter(status__in=_PAID)
        .annotate(sold_in=Lower("currency"))
        .filter(Q(amount_paid__isnull=True) | ~Q(amount_paid=F("amount_cents")) | ~Q(currency_paid=F("sold_in")))
    )
    return [
        f"order {pk}: sold for {amount} {currency}, but the payment recorded is {paid} {paid_currency or '?'}"
        for pk, amount, currency, paid, paid_currency in wrong.values_list(
            "pk", "amount_cents", "currency", "amount_paid", "currency_paid"
        )
    ]


def _in_force(voucher: Voucher) -> list[Clawback]:
    return [c for c in voucher.clawbacks.all() if c.status != Clawback.Status.RETURNED]


def _left_spendable(voucher: Voucher) -> int:
    """Credits of this voucher not covered by a clawback in force (0 when it is void and was never redeemed)."""
    clawbacks = _in_force(voucher)
    if voucher.status == Voucher.Status.VOID and voucher.redeemed_by_id is None:
        return 0
    if voucher.status == Voucher.Status.ACTIVE:
        return voucher.credits - sum(c.credits for c in clawbacks)
    return voucher.credits - sum(c.taken + c.owed for c in clawbacks if c.status == Clawback.Status.TAKEN)


@audit_check("no refunded or disputed purchase left spendable credits")
def _refunds_and_disputes_took_back(since: datetime | None = None) -> list[str]:
    problems = []
    window = Q()
    if since is not None:  # orders changed, refunded or disputed in the window, or whose voucher's credits moved
        window = (
            Q(updated_at__gte=since)
            | Q(pk__in=Refund.objects.filter(created_at__gte=since).values("order_id"))
            | Q(pk__in=Dispute.objects.filter(updated_at__gte=since).values("order_id"))
            | Q(voucher__in=moved_since(since).filter(voucher__isnull=False).values("voucher_id"))
        )
    orders = (
        Order.objects.filter(window, status__in=_PAID)
        .filter(Q(pk__in=Refund.objects.values("order_id")) | Q(pk__in=Dispute.objects.values("order_id")))
        .select_related("voucher")
        .prefetch_related("refunds", "disputes", "voucher__clawbacks")
    )
    for order in orders:
        voucher = order.voucher
        refunded = sum(r.amount for r in order.refunds.all() if r.failed_at is None)
        if order.amount_refunded != refunded:
            problems.append(
                f"order {order.pk}: records {order.amount_refunded} refunded, its refunds sum to {refunded}"
            )
        held = any(d.credits_state in (Dispute.Credits.FROZEN, Dispute.Credits.FINAL) for d in order.disputes.all())
        if held or refunded >= order.amount_cents:
            due = order.credits
        else:
            due = order.credits * refunded // order.amount_cents
        left = _left_spendable(voucher)
        if left > order.credits - due:
            problems.append(
                f"order {order.pk}: {left} of its {order.credits} credits spendable, max {order.credits - due}"
            )
        causes = {c.cause: c for c in voucher.clawbacks.all()}
        for refund in order.refunds.all():
            clawback = causes.get(refund_cause(refund.stripe_refund_id))
            if refund.credits and (clawback is None or clawback.credits != refund.credits):
                problems.append(f"refund {refund.stripe_refund_id}: {refund.credits} credits without its clawback")
            elif refund.failed_at and clawback is not None and clawback.status != Clawback.Status.RETURNED:
                problems.append(f"refund {refund.stripe_refund_id} failed but its clawback was not given back")
    return problems


@audit_check("every dispute's credits are frozen, returned or final")
def _disputes_settled() -> list[str]:
    problems = []
    causes = {c.cause: c for c in Clawback.objects.filter(cause__startswith="dispute ")}
    for dispute in Dispute.objects.all():
        clawback = causes.get(dispute_cause(dispute.stripe_dispute_id))
        state = dispute.credits_state
        if dispute.status in Dispute.RETURNING_STATUSES:
            wanted = Dispute.Credits.RETURNED
        elif dispute.status == "lost":
            wanted = Dispute.Credits.FINAL
        else:
            wanted = Dispute.Credits.FROZEN
        if state != wanted:
            problems.append(f"dispute {dispute.stripe_dispute_id}: {dispute.status}, but its credits are '{state}'")
        elif clawback is not None and (clawback.status == Clawback.Status.RETURNED) != (state == wanted == "returned"):
            problems.append(
                f"dispute {dispute.stripe_dispute_id}: credits {state}, but its clawback is {clawback.status}"
            )
        elif clawback is None and dispute.credits_frozen:
            problems.append(f"dispute {dispute.stripe_dispute_id}: froze {dispute.credits_frozen} without a clawback")
    return problems
