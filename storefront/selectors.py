"""Reads the storefront's views share."""

from dataclasses import dataclass, field
from datetime import date, datetime
from fractions import Fraction

from django.db import connection
from django.db.models import Count, F, QuerySet, Sum
from django.urls import reverse
from django.utils.safestring import SafeString

from storefront.legal import DEFAULT_BODIES, DEFAULT_TITLES, legal_fill, legal_render
from storefront.models import CreditPack, Dispute, LegalPage, Order, Refund, SampleImage
from vouchers.models import Voucher
from vouchers.pricing import images_for_credits
from vouchers.selectors import as_day, utc_day


def packs_for_sale() -> list[CreditPack]:
    """Active packs in display order, each with `images`: what it buys by size and quality (the bot's prices).

    The cheapest per credit is flagged `best_value` when there is a choice.
    """
    packs = list(CreditPack.objects.filter(active=True))
    for pack in packs:
        pack.best_value = False
        pack.images = images_for_credits(credits=pack.credits)
    if len(packs) > 1 and len({p.currency for p in packs}) == 1:
        best = min(packs, key=lambda p: (Fraction(p.price_cents, p.credits), -p.credits))
        best.best_value = True
    return packs


def pack_list_version() -> tuple:
    """Everything of the database the pack list shows, as plain values (its cache key).

    The full rows of the active packs and of the active gallery images (without their bytes): any change an
    operator makes to either, in any process, gives another value. One plain query, run on every request, so
    it skips the ORM's per-row work.
    """
    pack, sample = CreditPack._meta.db_table, SampleImage._meta.db_table
    sql = (
        f"SELECT 'p', id, name, credits, price_cents, currency, sort_order, '', 0 FROM {pack} WHERE active "
        f"UNION ALL SELECT 's', id, digest, width, height, prompt, sort_order, size || '/' || quality, 0 "
        f"FROM {sample} WHERE active ORDER BY 1, 2"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return tuple(cursor.fetchall())


def order_by_session(*, session_id: str) -> Order | None:
    if not session_id or len(session_id) > 255:
        return None
    return Order.objects.select_related("pack").filter(stripe_session_id=session_id).first()


@dataclass(frozen=True)
class LegalPageView:
    kind: str
    title: str
    html: SafeString
    updated_at: datetime | None


def legal_page(*, kind: LegalPage.Kind) -> LegalPageView:
    """The operator's wording for a legal page, or the default when the row was deleted or left empty."""
    page = LegalPage.objects.filter(kind=kind).first()
    title = (page.title.strip() if page else "") or DEFAULT_TITLES[kind]
    body = (page.body if page else "").strip() or DEFAULT_BODIES[kind]
    return LegalPageView(
        kind=kind,
        title=legal_fill(title),
        html=legal_render(legal_fill(body)),
        updated_at=page.updated_at if page and page.body.strip() else None,
    )


@dataclass(frozen=True)
class GallerySample:
    url: str
    prompt: str
    size: str
    quality: str
    width: int
    height: int


def gallery_for_display() -> list[GallerySample]:
    """The active sample images, in order, without their bytes (the page links to each)."""
    rows = SampleImage.objects.filter(active=True).values_list(
        "pk", "digest", "prompt", "size", "quality", "width", "height"
    )
    return [
        GallerySample(
            url=reverse("gallery_image", kwargs={"pk": pk, "digest": digest}),
            prompt=prompt,
            size=size,
            quality=quality,
            width=width,
            height=height,
        )
        for pk, digest, prompt, size, quality, width, height in rows
    ]


def gallery_image(*, pk: int, digest: str) -> SampleImage | None:
    # The digest in the URL is what makes it findable; inactive images stay viewable for the admin preview.
    return SampleImage.objects.filter(pk=pk, digest=digest).first()


# --- Figures for the money dashboard (periods are half-open: start <= t < end) ----------------------------


@dataclass(frozen=True)
class RevenueFigures:
    """One currency's money in a period, in integer minor units.

    Refunds are Stripe refunds (partial ones included) counted on the day they were applied here; a refund that
    later failed or was canceled is left out, since the money came back. Disputes count on the day they were
    opened, and on the day they closed (won or lost). Net is revenue minus refunds minus disputes lost: an open
    dispute's money is held by the bank, not yet gone, and a won one comes back.
    """

    currency: str
    paid_orders: int
    revenue_cents: int  # orders paid in the period, at their purchase amount
    refunds: int = 0  # Stripe refunds applied in the period (not failed)
    refunds_cents: int = 0
    refunded_orders: int = 0  # orders with at least one such refund
    disputes_opened: int = 0
    disputes_opened_cents: int = 0
    disputes_lost: int = 0
    disputes_lost_cents: int = 0
    disputes_won: int = 0
    disputes_won_cents: int = 0

    @property
    def net_cents(self) -> int:
        return self.revenue_cents - self.refunds_cents - self.disputes_lost_cents


def revenue_figures(*, start: datetime, end: datetime) -> list[RevenueFigures]:
    """Revenue, refunds, disputes and net per currency (see `RevenueFigures` for what counts when)."""
    money: dict[str, dict[str, int]] = {}

    def add(rows, n: str, total: str) -> None:
        for row in rows:
            money.setdefault(row["currency"], {}).update({n: row["n"], total: row["total"] or 0})

    add(
        Order.objects.filter(paid_at__gte=start, paid_at__lt=end)
        .values("currency")
        .annotate(n=Count("id"), total=Sum("amount_cents")),
        "paid_orders",
        "revenue_cents",
    )
    refunds = Refund.objects.filter(applied_at__gte=start, applied_at__lt=end, failed_at__isnull=True)
    add(
        refunds.values(currency=F("order__currency")).annotate(n=Count("id"), total=Sum("amount")),
        "refunds",
        "refunds_cents",
    )
    for row in refunds.values(currency=F("order__currency")).annotate(n=Count("order_id", distinct=True)):
        money[row["currency"]]["refunded_orders"] = row["n"]
    disputes = Dispute.objects.values("currency").annotate(n=Count("id"), total=Sum("amount"))
    add(disputes.filter(created_at__gte=start, created_at__lt=end), "disputes_opened", "disputes_opened_cents")
    closed = disputes.filter(closed_at__gte=start, closed_at__lt=end)
    add(closed.filter(status="lost"), "disputes_lost", "disputes_lost_cents")
    add(closed.filter(status__in=Dispute.RETURNING_STATUSES), "disputes_won", "disputes_won_cents")
    return [
        RevenueFigures(currency=currency, **{"paid_orders": 0, "revenue_cents": 0, **m})
        for currency, m in sorted(money.items())
    ]


def revenue_daily(*, start: datetime, end: datetime) -> dict[str, dict[date, int]]:
    """Revenue in minor units per currency and day (UTC), for days that had any."""
    rows = (
        Order.objects.filter(paid_at__gte=start, paid_at__lt=end)
        .annotate(day=utc_day("paid_at"))
        .values("currency", "day")
        .annotate(total=Sum("amount_cents"))
    )
    daily: dict[str, dict[date, int]] = {}
    for row in rows:
        daily.setdefault(row["currency"], {})[as_day(row["day"])] = row["total"]
    return daily


def orders_in_period(*, start: datetime, end: datetime) -> QuerySet[Order]:
    """Orders created in the period, oldest first, with their pack and voucher (for the CSV export)."""
    return (
        Order.objects.filter(created_at__gte=start, created_at__lt=end)
        .select_related("pack", "voucher")
        .order_by("created_at", "id")
    )


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
