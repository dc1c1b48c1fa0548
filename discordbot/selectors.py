"""Reads of generations that several callers share: a member's history (the bot's /history), and the admin's
money dashboard and its CSV export."""

from dataclasses import dataclass
from datetime import UTC, date, datetime

from django.conf import settings
from django.db.models import Count, Q, QuerySet, Sum
from django.utils import timezone

from discordbot.models import Generation
from vouchers.selectors import as_day, ledger_history, utc_day


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
    # What the image service charged (micro-dollars) for the period's generations that have a figure, whether
    # delivered or not (a refunded image may still have been made and billed).
    spend_micros: int = 0
    spend_reported: int = 0  # generations with a figure
    spend_not_reported: int = 0  # generations without one (not made yet, failed before the service, or unreported)
    delivered_not_reported: int = 0  # delivered images without a figure: the cost above is short by theirs

    @property
    def spend_per_delivered_micros(self) -> int | None:
        return self.spend_micros // self.delivered if self.delivered else None


def image_figures(*, start: datetime, end: datetime) -> ImageFigures:
    generations = Generation.objects.filter(created_at__gte=start, created_at__lt=end)
    by_status = {r["status"]: r["n"] for r in generations.values("status").annotate(n=Count("id"))}
    delivered = generations.filter(status=Generation.Status.SUCCEEDED)
    shapes = delivered.values("size", "quality").annotate(n=Count("id")).order_by("-n", "size", "quality")
    unreported = Q(image_spend_micros__isnull=True)
    spend = generations.aggregate(
        micros=Sum("image_spend_micros"),
        reported=Count("id", filter=~unreported),
        not_reported=Count("id", filter=unreported),
        delivered_not_reported=Count("id", filter=unreported & Q(status=Generation.Status.SUCCEEDED)),
    )
    return ImageFigures(
        spend_micros=spend["micros"] or 0,
        spend_reported=spend["reported"],
        spend_not_reported=spend["not_reported"],
        delivered_not_reported=spend["delivered_not_reported"],
        requested=sum(by_status.values()),
        by_status=by_status,
        delivered=by_status.get(Generation.Status.SUCCEEDED, 0),
        delivered_credits=delivered.aggregate(s=Sum("cost"))["s"] or 0,
        by_size_quality=[(r["size"] or "-", r["quality"] or "-", r["n"]) for r in shapes],
    )


def images_delivered_daily(*, start: datetime, end: datetime) -> dict[date, int]:
    rows = (
        Generation.objects.filter(created_at__gte=start, created_at__lt=end, status=Generation.Status.SUCCEEDED)
        .annotate(day=utc_day("created_at"))
        .values("day")
        .annotate(n=Count("id"))
    )
    return {as_day(r["day"]): r["n"] for r in rows}


def generations_in_period(*, start: datetime, end: datetime) -> QuerySet[Generation]:
    """Generations requested in the period, oldest first (for the CSV export)."""
    return (
        Generation.objects.filter(created_at__gte=start, created_at__lt=end)
        .select_related("account")
        .order_by("created_at", "id")
    )


MICROS_PER_DOLLAR = 1_000_000


@dataclass(frozen=True)
class SpendToday:
    """Today's (UTC) recorded image spend against the optional daily budget (`IMAGE_SPEND_DAILY_BUDGET_USD`)."""

    micros: int
    budget_micros: int | None  # None: no guard

    @property
    def reached(self) -> bool:
        return self.budget_micros is not None and self.micros >= self.budget_micros


def spend_today() -> SpendToday:
    """What the image service charged for generations requested since midnight UTC, and the budget.

    A generation counts on the day it was requested (its figure arrives seconds later); generations without a
    reported figure count as nothing, so the guard can only be late by what is still unreported.
    """
    budget = settings.IMAGE_SPEND_DAILY_BUDGET_USD
    budget_micros = None if budget is None else int(budget * MICROS_PER_DOLLAR)
    midnight = timezone.now().astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    spent = Generation.objects.filter(created_at__gte=midnight).aggregate(s=Sum("image_spend_micros"))["s"] or 0
    return SpendToday(micros=spent, budget_micros=budget_micros)
