"""The price of an image in credits, from `settings.GENERATION_COSTS` (size -> quality -> credits), plus
`settings.IMAGE_OPERATION_SURCHARGES` (operation -> credits added per image) for edits and variations.

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


# What a member can ask the image service for. A variation is an edit of one earlier result with its prompt.
IMAGE_OPERATIONS = ("generate", "edit", "variation")


def image_unit_cost(*, operation: str, size: str, quality: str) -> int:
    """Credits for one delivered image: GENERATION_COSTS[size][quality] plus the operation's surcharge.

    Raises ValueError for an operation, size or quality that is not on offer (callers turn it into their own
    domain error before anything is charged).
    """
    if operation not in IMAGE_OPERATIONS:
        raise ValueError(f"{operation!r} is not an image operation.")
    base = settings.GENERATION_COSTS.get(size, {}).get(quality)
    if type(base) is not int or base <= 0:
        raise ValueError(f"{size} at {quality} quality is not on offer.")
    surcharge = settings.IMAGE_OPERATION_SURCHARGES.get(operation, 0)
    if type(surcharge) is not int or surcharge < 0:
        raise ValueError(f"IMAGE_OPERATION_SURCHARGES[{operation!r}] must be a whole number of credits, 0 or more.")
    return base + surcharge


def image_cost(*, operation: str, size: str, quality: str, count: int, input_images: int = 0) -> int:
    """Credits for `count` images of one request, each charged alike (so a partial failure refunds exactly
    `image_unit_cost` per missing image).

    `input_images` is checked, not priced: a generation takes none, a variation exactly one (the earlier
    result), an edit 1-16 (the image API's limit). The surcharge per image covers the inputs.
    """
    max_count = settings.IMAGE_MAX_COUNT
    if type(count) is not int or not 1 <= count <= max_count:
        raise ValueError(f"count must be 1 to {max_count}.")
    allowed = {"generate": (0, 0), "variation": (1, 1), "edit": (1, 16)}.get(operation)
    if allowed is not None and not allowed[0] <= input_images <= allowed[1]:
        raise ValueError(f"{operation} takes {allowed[0]}-{allowed[1]} input images, not {input_images}.")
    return image_unit_cost(operation=operation, size=size, quality=quality) * count


def operation_surcharges() -> dict[str, int]:
    """Credits added per image for each operation, for /help and the option choices."""
    return {op: settings.IMAGE_OPERATION_SURCHARGES.get(op, 0) for op in IMAGE_OPERATIONS}
