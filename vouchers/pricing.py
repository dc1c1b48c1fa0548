"""The price of an image in credits, from `settings.GENERATION_COSTS` (size -> quality -> credits).

One table for everyone who quotes or charges a price: the bot charges from it (`discordbot.services`), and the
shop shows each pack in images by size and quality from it, so the two cannot disagree. Pure functions of the
settings; nothing here touches the database.
"""

from dataclasses import dataclass

from django.conf import settings

# Friendlier names for the sizes the bot offers; any other size is shown as written.
SIZE_LABELS = {"1024x1024": "Square", "1536x1024": "Landscape", "1024x1536": "Portrait"}


@dataclass(frozen=True)
class SizePrices:
    """One size's row of the table: credits per image at each quality, in the table's order."""

    size: str
    label: str
    costs: tuple[tuple[str, int], ...]  # (quality, credits)


def price_table() -> list[SizePrices]:
    """Every (size, quality) on offer with its price in credits, in the order of GENERATION_COSTS.

    Entries that are not a positive integer are left out: the bot refuses them as "not on offer".
    """
    costs: dict[str, dict[str, int]] = settings.GENERATION_COSTS
    rows = []
    for size, qualities in costs.items():
        offered = tuple((q, c) for q, c in qualities.items() if type(c) is int and c > 0)
        if offered:
            rows.append(SizePrices(size=size, label=SIZE_LABELS.get(size, size.replace("x", "×")), costs=offered))
    return rows


def price_qualities() -> list[str]:
    """The qualities on offer across all sizes, in first-seen order (the columns of a price grid)."""
    seen: dict[str, None] = {}
    for row in price_table():
        for quality, _ in row.costs:
            seen.setdefault(quality, None)
    return list(seen)


def images_for_credits(*, credits: int) -> list[tuple[SizePrices, dict[str, int]]]:
    """How many whole images `credits` buys at each size and quality: [(row, {quality: images})]."""
    return [(row, {quality: credits // cost for quality, cost in row.costs}) for row in price_table()]


def price_range() -> tuple[int, int]:
    """The cheapest and dearest image, in credits."""
    costs = [cost for row in price_table() for _, cost in row.costs]
    return (min(costs), max(costs)) if costs else (0, 0)
