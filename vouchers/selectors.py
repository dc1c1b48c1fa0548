"""Reads that several callers share (the bot's /balance and /history, the admin, the audit)."""

from dataclasses import dataclass
from datetime import date, datetime

from django.db import connection
from django.db.models import Count, Func, QuerySet, Sum
from django.db.models.functions import Substr, TruncDate

from vouchers.models import CreditAccount, LedgerEntry, Voucher


def utc_day(field: str) -> Func:
    """The UTC day of a datetime column, for grouping by day in SQL (read the values back with `as_day`).

    On SQLite, Django's TruncDate calls a Python function for every row (most of a 365-day dashboard's time);
    the stored text starts with the UTC day (USE_TZ stores UTC as "YYYY-MM-DD HH:MM:SS"), so its first ten
    characters group the same rows in C. PostgreSQL truncates natively.
    """
    return Substr(field, 1, 10) if connection.vendor == "sqlite" else TruncDate(field)


def as_day(value: date | str) -> date:
    return value if isinstance(value, date) else date.fromisoformat(value)


def account_balance(*, discord_user_id: int) -> int:
    """The member's balance; 0 for a member who has no account yet."""
    balance = CreditAccount.objects.filter(discord_user_id=discord_user_id).values_list("balance", flat=True).first()
    return balance or 0


def account_owed(*, discord_user_id: int) -> int:
    """Credits the member owes: what refunds or chargebacks could not take back yet (paid first from new credits)."""
    owed = CreditAccount.objects.filter(discord_user_id=discord_user_id).values_list("owed", flat=True).first()
    return owed or 0


def ledger_history(*, discord_user_id: int, limit: int = 10) -> list[LedgerEntry]:
    """The member's most recent credit movements, newest first."""
    return list(
        LedgerEntry.objects.filter(account__discord_user_id=discord_user_id)
        .select_related("voucher")
        .order_by("-created_at", "-id")[:limit]
    )


# --- Figures for the money dashboard (periods are half-open: start <= t < end) ----------------------------


@dataclass(frozen=True)
class KindTotal:
    kind: str
    label: str
    entries: int
    credits: int  # signed sum of deltas


@dataclass(frozen=True)
class CreditFigures:
    """What happened to credits in a period, and what is owed now. All counts are credits (non-negative)."""

    sold: int  # redeemed from vouchers that were paid for
    gifted: int  # redeemed from vouchers an operator issued
    granted: int
    charged: int  # taken for image requests
    refunded: int  # given back for images that were not delivered
    clawed_back: int  # taken back after a payment was refunded
    by_kind: list[KindTotal]  # every kind in the period, including kinds this summary does not name
    outstanding: int  # now: the sum of all balances, spendable by members
    owed: int  # now: what refunds and chargebacks could not take back yet (sum of `CreditAccount.owed`)
    unredeemed: int  # now: credits on active vouchers, sold or given but not yet redeemed

    @property
    def spent(self) -> int:
        """Charged for images minus what failed images gave back."""
        return self.charged - self.refunded


def credit_figures(*, start: datetime, end: datetime) -> CreditFigures:
    entries = LedgerEntry.objects.filter(created_at__gte=start, created_at__lt=end)
    by_kind_rows = entries.values("kind").annotate(n=Count("id"), total=Sum("delta")).order_by("kind")
    labels = dict(LedgerEntry.Kind.choices)
    by_kind = [
        KindTotal(r["kind"], str(labels.get(r["kind"], r["kind"])), r["n"], r["total"] or 0) for r in by_kind_rows
    ]
    totals = {k.kind: k.credits for k in by_kind}
    redeemed = entries.filter(kind=LedgerEntry.Kind.REDEEM)
    sold = redeemed.filter(voucher__order__isnull=False).aggregate(s=Sum("delta"))["s"] or 0
    return CreditFigures(
        sold=sold,
        gifted=totals.get(LedgerEntry.Kind.REDEEM, 0) - sold,
        granted=totals.get(LedgerEntry.Kind.GRANT, 0),
        charged=-totals.get(LedgerEntry.Kind.GENERATE, 0),
        refunded=totals.get(LedgerEntry.Kind.REFUND, 0),
        clawed_back=-totals.get(LedgerEntry.Kind.CLAWBACK, 0),
        by_kind=by_kind,
        **_balances(),
        unredeemed=Voucher.objects.filter(status=Voucher.Status.ACTIVE).aggregate(s=Sum("credits"))["s"] or 0,
    )


def _balances() -> dict[str, int]:
    sums = CreditAccount.objects.aggregate(balance=Sum("balance"), owed=Sum("owed"))
    return {"outstanding": sums["balance"] or 0, "owed": sums["owed"] or 0}


def credits_spent_daily(*, start: datetime, end: datetime) -> dict[date, int]:
    """Credits charged for images minus those refunded, per day (UTC), for days that had any."""
    rows = (
        LedgerEntry.objects.filter(
            created_at__gte=start, created_at__lt=end, kind__in=[LedgerEntry.Kind.GENERATE, LedgerEntry.Kind.REFUND]
        )
        .annotate(day=utc_day("created_at"))
        .values("day")
        .annotate(total=Sum("delta"))
    )
    return {as_day(r["day"]): -r["total"] for r in rows}


def ledger_in_period(*, start: datetime, end: datetime) -> QuerySet[LedgerEntry]:
    """Every ledger entry in the period, oldest first (for the CSV export)."""
    return (
        LedgerEntry.objects.filter(created_at__gte=start, created_at__lt=end)
        .select_related("account", "voucher")
        .order_by("created_at", "id")
    )
