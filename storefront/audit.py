"""The shop's contributions to `auditcredits`: paid orders and their vouchers."""

from django.db.models import Count

from storefront.models import Order
from vouchers.audit import audit_check


@audit_check("each paid order has exactly one voucher")
def _paid_orders_have_one_voucher() -> list[str]:
    problems = []
    paid = (Order.Status.PAID, Order.Status.REFUNDED)
    for order in Order.objects.annotate(n=Count("voucher")).select_related("voucher"):
        if order.status in paid:
            if order.n != 1:
                problems.append(f"order {order.pk}: {order.status} with {order.n} vouchers")
            elif order.voucher.credits != order.credits:
                problems.append(f"order {order.pk}: voucher worth {order.voucher.credits}, order {order.credits}")
            elif order.status == Order.Status.REFUNDED and order.voucher.refunded_at is None:
                problems.append(f"order {order.pk}: refunded but its voucher was not settled")
        elif order.n:
            problems.append(f"order {order.pk}: {order.status} but has a voucher")
    return problems
