"""Reads of generations that several callers share: a member's history (the bot's /history), and the admin's
money dashboard and its CSV export."""

from dataclasses import dataclass
from datetime import date, datetime

from django.db.models import Count, QuerySet, Sum
from django.db.models.functions import TruncDate

from discordbot.models import Generation
from vouchers.selectors import ledger_history


@dataclass(frozen=True)
class HistoryEntry:
    delta: int
    kind: str  # the ledger kind's label
    memo: str
    created_at: datetime
    prompt: str | None  # for an image charge or refund
    message_url: str | None  # the image message, once delivered


def member_history(*, discord_user_id: int, limit: int = 10) -> list[HistoryEntry]:
    """The member's latest credit movements, newest first."""
    entries = ledger_history(discord_user_id=discord_user_id, limit=limit)
    generations = Generation.objects.in_bulk({entry.generation_id for entry in entries if entry.generation_id})
    history = []
    for entry in entries:
        generation = generations.get(entry.generation_id)
        history.append(
            HistoryEntry(
                delta=entry.delta,
                kind=entry.get_kind_display(),
                memo=entry.memo,
                created_at=entry.created_at,
                prompt=generation.prompt if generation else None,
                message_url=generation.message_url if generation else None,
            )
        )
    return history


@dataclass(frozen=True)
class ImageFigures:
    """Image requests made in a period (by request time)."""

    requested: int
    by_status: dict[str, int]
    delivered: int
    delivered_credits: int  # credits spent on images that were delivered
    # (size, quality) -> delivered images, most requested first
    by_size_quality: list[tuple[str, str, int]]
    # LATER (issue 10, with issue 7/8): what the image service charged per image (from its reported usage and a
    # price table), total image cost and the margin against revenue.


def image_figures(*, start: datetime, end: datetime) -> ImageFigures:
    generations = Generation.objects.filter(created_at__gte=start, created_at__lt=end)
    by_status = {r["status"]: r["n"] for r in generations.values("status").annotate(n=Count("id"))}
    delivered = generations.filter(status=Generation.Status.SUCCEEDED)
    shapes = delivered.values("size", "quality").annotate(n=Count("id")).order_by("-n", "size", "quality")
    return ImageFigures(
        requested=sum(by_status.values()),
        by_status=by_status,
        delivered=by_status.get(Generation.Status.SUCCEEDED, 0),
        delivered_credits=delivered.aggregate(s=Sum("cost"))["s"] or 0,
        by_size_quality=[(r["size"] or "-", r["quality"] or "-", r["n"]) for r in shapes],
    )


def images_delivered_daily(*, start: datetime, end: datetime) -> dict[date, int]:
    rows = (
        Generation.objects.filter(created_at__gte=start, created_at__lt=end, status=Generation.Status.SUCCEEDED)
        .annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(n=Count("id"))
    )
    return {r["day"]: r["n"] for r in rows}


def generations_in_period(*, start: datetime, end: datetime) -> QuerySet[Generation]:
    """Generations requested in the period, oldest first (for the CSV export)."""
    return (
        Generation.objects.filter(created_at__gte=start, created_at__lt=end)
        .select_related("account")
        .order_by("created_at", "id")
    )
