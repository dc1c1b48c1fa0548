"""Reads the storefront's views share."""

from fractions import Fraction

from storefront.models import CreditPack, Order


def packs_for_sale() -> list[CreditPack]:
    """Active packs in display order; the cheapest per image is flagged `best_value` when there is a choice."""
    packs = list(CreditPack.objects.filter(active=True))
    for pack in packs:
        pack.best_value = False
    if len(packs) > 1 and len({p.currency for p in packs}) == 1:
        best = min(packs, key=lambda p: (Fraction(p.price_cents, p.credits), -p.credits))
        best.best_value = True
    return packs


def order_by_session(*, session_id: str) -> Order | None:
    if not session_id or len(session_id) > 255:
        return None
    return Order.objects.select_related("pack").filter(stripe_session_id=session_id).first()
