"""Reads the storefront's views share."""

from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction

from storefront.models import CreditPack, Dispute, Order
from vouchers.models import Voucher


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


@dataclass(frozen=True)
class GenerationLog:
    """The disputing member's generations since they redeemed the disputed voucher (empty if never redeemed)."""

    COLUMNS = (
        "generation id",
        "requested at (UTC)",
        "started at",
        "finished at",
        "status",
        "credits",
        "prompt",
        "size",
        "quality",
        "model",
        "discord channel id",
        "discord message id",
        "error",
    )

    discord_user_id: int | None
    redeemed_at: datetime | None
    rows: list[tuple] = field(default_factory=list)


def dispute_generation_log(*, dispute: Dispute) -> GenerationLog:
    voucher = Voucher.objects.filter(order_id=dispute.order_id).select_related("redeemed_by").first()
    if voucher is None or voucher.redeemed_by is None:
        return GenerationLog(discord_user_id=None, redeemed_at=None)
    # Through the account's reverse relation: the shop reads the bot's records without importing the bot.
    generations = voucher.redeemed_by.generations.filter(created_at__gte=voucher.redeemed_at).order_by("created_at")
    rows = [
        tuple(row)
        for row in generations.values_list(
            "pk",
            "created_at",
            "started_at",
            "finished_at",
            "status",
            "cost",
            "prompt",
            "size",
            "quality",
            "model",
            "channel_id",
            "message_id",
            "error",
        )
    ]
    return GenerationLog(
        discord_user_id=voucher.redeemed_by.discord_user_id, redeemed_at=voucher.redeemed_at, rows=rows
    )
