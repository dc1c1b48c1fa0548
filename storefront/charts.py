"""Daily bar charts drawn on the server as inline SVG: no JavaScript, no external CDN, readable without colour.

Each bar carries a <title> (the browser's tooltip, and what a screen reader reads), and the chart a text summary.
"""

from collections.abc import Callable, Mapping
from datetime import date, timedelta

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

WIDTH, HEIGHT = 640, 150
TOP, BOTTOM, LEFT, RIGHT = 14, 22, 4, 4


def days(start: date, end: date) -> list[date]:
    """Every day from `start` to `end`, both included."""
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def daily_bars(
    values: Mapping[date, int], *, start: date, end: date, label: str, fmt: Callable[[int], str] = str
) -> SafeString:
    """An SVG bar per day from `start` to `end` (days missing from `values` are zero)."""
    span = days(start, end)
    series = [(day, values.get(day, 0)) for day in span]
    peak = max((v for _, v in series), default=0)
    total = sum(v for _, v in series)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(len(series), 1)
    bars = []
    for i, (day, value) in enumerate(series):
        h = 0 if peak <= 0 else max(value, 0) / peak * plot_h
        bars.append(
            (
                f"{LEFT + i * slot + slot * 0.1:.1f}",
                f"{TOP + plot_h - h:.1f}",
                f"{max(slot * 0.8, 1):.1f}",
                f"{h:.1f}",
                f"{day.isoformat()}: {fmt(value)}",
            )
        )
    rects = format_html_join(
        "", '<rect class="bar" x="{}" y="{}" width="{}" height="{}"><title>{}</title></rect>', bars
    )
    summary = f"{label}: {fmt(total)} in total, at most {fmt(peak)} a day, {start.isoformat()} to {end.isoformat()}"
    return format_html(
        '<figure class="chart"><svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="100%" '
        'role="img" aria-label="{summary}" preserveAspectRatio="none">'
        '<line class="axis" x1="{left}" y1="{base}" x2="{right}" y2="{base}"/>{rects}'
        '<text class="tick" x="{left}" y="{label_y}">{first}</text>'
        '<text class="tick" x="{right}" y="{label_y}" text-anchor="end">{last}</text>'
        '<text class="tick" x="{left}" y="10">max {peak}</text>'
        "</svg><figcaption>{summary}</figcaption></figure>",
        w=WIDTH,
        h=HEIGHT,
        left=LEFT,
        right=WIDTH - RIGHT,
        base=f"{TOP + plot_h:.1f}",
        rects=rects,
        label_y=HEIGHT - 6,
        first=start.isoformat(),
        last=end.isoformat(),
        peak=fmt(peak),
        summary=summary,
    )
