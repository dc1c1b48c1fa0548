"""The price list as members read it: size and quality names, and what each costs, from the one price table
(`vouchers.pricing`, which the shop quotes from too)."""

from discordbot.replies import plural
from vouchers.pricing import price_qualities, price_table


def size_name(size: str) -> str:
    width, _, height = size.partition("x")
    if not (width.isdigit() and height.isdigit()):
        return size.title()  # e.g. "auto"
    shape = "Square" if width == height else "Landscape" if int(width) > int(height) else "Portrait"
    return f"{shape} {width}\N{MULTIPLICATION SIGN}{height}"


def cost_range(costs: list[int]) -> str:
    low, high = min(costs), max(costs)
    return plural(low) if low == high else f"{low}-{plural(high)}"


def size_choice_names() -> dict[str, str]:
    """size -> "Square 1024×1024 · 1-3 credits" (the cost depends on the quality too)."""
    return {
        row.size: f"{size_name(row.size)} \N{MIDDLE DOT} {cost_range([cost for _, cost in row.costs])}"
        for row in price_table()
    }


def quality_choice_names() -> dict[str, str]:
    """quality -> "High · 3-4 credits" (the cost depends on the size too)."""
    rows = [dict(row.costs) for row in price_table()]
    names = {}
    for quality in price_qualities():
        costs = [costs[quality] for costs in rows if quality in costs]
        names[quality] = f"{quality.title()} \N{MIDDLE DOT} {cost_range(costs)}"
    return names


def price_table_text() -> str:
    """The shared price table (vouchers.pricing) as a monospaced block: one row per size, one column per quality."""
    columns = price_qualities()
    rows = [["Size", *(q.title() for q in columns)]]
    for row in price_table():
        costs = dict(row.costs)
        rows.append([size_name(row.size), *(str(costs.get(q, "-")) for q in columns)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    return "```\n" + "\n".join(line.rstrip() for line in lines) + "\n```"
