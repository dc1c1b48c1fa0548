"""The price list as members read it: size and quality names, and what each costs (settings.GENERATION_COSTS)."""

from django.conf import settings

from discordbot.replies import plural

QUALITY_ORDER = ("low", "medium", "high", "xhigh", "max")


def size_name(size: str) -> str:
    width, _, height = size.partition("x")
    if not (width.isdigit() and height.isdigit()):
        return size.title()  # e.g. "auto"
    shape = "Square" if width == height else "Landscape" if int(width) > int(height) else "Portrait"
    return f"{shape} {width}\N{MULTIPLICATION SIGN}{height}"


def qualities() -> list[str]:
    found = {quality for options in settings.GENERATION_COSTS.values() for quality in options}
    return sorted(found, key=lambda q: (QUALITY_ORDER.index(q) if q in QUALITY_ORDER else 99, q))


def cost_range(costs: list[int]) -> str:
    low, high = min(costs), max(costs)
    return plural(low) if low == high else f"{low}-{plural(high)}"


def size_choice_names() -> dict[str, str]:
    """size -> "Square 1024×1024 · 1-3 credits" (the cost depends on the quality too)."""
    return {
        size: f"{size_name(size)} \N{MIDDLE DOT} {cost_range(list(options.values()))}"
        for size, options in settings.GENERATION_COSTS.items()
    }


def quality_choice_names() -> dict[str, str]:
    """quality -> "High · 3-4 credits" (the cost depends on the size too)."""
    names = {}
    for quality in qualities():
        costs = [options[quality] for options in settings.GENERATION_COSTS.values() if quality in options]
        names[quality] = f"{quality.title()} \N{MIDDLE DOT} {cost_range(costs)}"
    return names


def price_table() -> str:
    """A monospaced table: one row per size, one column per quality."""
    columns = qualities()
    rows = [["Size", *(q.title() for q in columns)]]
    for size, options in settings.GENERATION_COSTS.items():
        rows.append([size_name(size), *(str(options.get(q, "-")) for q in columns)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    return "```\n" + "\n".join(line.rstrip() for line in lines) + "\n```"
