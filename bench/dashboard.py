"""How long the money dashboard takes to compute, against the cheapest possible read of the same tables.

Seeds a history spread evenly over a year (orders, ledger entries, generations; `--rows` ledger entries, with a
fifth as many generations and a tenth as many orders) into a fresh database, then times, best of `--repeat`:

- baseline: `COUNT(*)` of the ledger, orders and generations (one scan each, nothing else);
- dashboard: every figure and daily series the page shows (the selectors it calls), for 30 and 365 days;
- CSV: the ledger export for 30 days, streamed to nowhere.

Printed side by side with the ratio to the baseline, so the number stays meaningful on a slower machine.

    .venv/bin/python bench/dashboard.py [--rows 10000 100000] [--repeat 5] [--database-url URL]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
YEAR_END = datetime(2026, 12, 1, tzinfo=UTC)


def setup_django(database_url: str) -> None:
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "storefront.settings",
            "DEBUG": "false",
            "SECRET_KEY": "bench-only-not-a-secret",
            "DATABASE_URL": database_url,
            "LOG_LEVEL": "WARNING",
        }
    )
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def seed(rows: int) -> None:
    from discordbot.models import Generation
    from storefront.models import CreditPack, Order
    from vouchers.models import CreditAccount, LedgerEntry

    pack = CreditPack.objects.create(name="Bench", credits=150, price_cents=1200)
    accounts = CreditAccount.objects.bulk_create(
        [CreditAccount(discord_user_id=10**17 + i, balance=10**9) for i in range(max(rows // 100, 1))]
    )
    step = timedelta(days=365) / rows
    with own_timestamps(Order, Generation, LedgerEntry):
        Order.objects.bulk_create(
            [
                Order(
                    pack=pack,
                    credits=150,
                    amount_cents=1200,
                    currency="usd",
                    status="paid",
                    created_at=YEAR_END - step * i * 10,
                    paid_at=YEAR_END - step * i * 10,
                )
                for i in range(rows // 10)
            ],
            batch_size=5000,
        )
        sizes = [("1024x1024", "medium", 1), ("1536x1024", "high", 4), ("1024x1536", "medium", 2)]
        Generation.objects.bulk_create(
            [
                Generation(
                    account=accounts[i % len(accounts)],
                    prompt="bench",
                    size=sizes[i % 3][0],
                    quality=sizes[i % 3][1],
                    cost=sizes[i % 3][2],
                    status="succeeded" if i % 10 else "refunded",
                    created_at=YEAR_END - step * i * 5,
                )
                for i in range(rows // 5)
            ],
            batch_size=5000,
        )
        entries = []
        for i in range(rows):
            kind, delta = ("generate", -1) if i % 3 else ("redeem", 150)
            account = accounts[i % len(accounts)]
            entries.append(
                LedgerEntry(account=account, delta=delta, kind=kind, memo="bench", created_at=YEAR_END - step * i)
            )
        LedgerEntry.objects.bulk_create(entries, batch_size=5000)


@contextmanager
def own_timestamps(*models):
    """Let the seed set `created_at` itself (auto_now_add would stamp every row with now). Bench only."""
    fields = [model._meta.get_field("created_at") for model in models]
    for field in fields:
        field.auto_now_add = False
    try:
        yield
    finally:
        for field in fields:
            field.auto_now_add = True


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--database-url", default="", help="an empty database (default: a fresh SQLite file)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: measure one size in this process
    args = parser.parse_args()

    if args.one:
        setup_django(args.database_url)
        print(json.dumps(measure(args.one, args.repeat)))
        return
    if args.database_url and len(args.rows) > 1:
        sys.exit("With --database-url, measure one size per run (the database is not emptied between sizes).")
    results = []
    for rows in args.rows:
        url = args.database_url or f"sqlite:///{tempfile.mkdtemp(prefix='bench-dashboard-')}/db.sqlite3"
        out = subprocess.run(
            [sys.executable, __file__, "--one", str(rows), "--repeat", str(args.repeat), "--database-url", url],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        results.append((rows, *json.loads(out.strip().splitlines()[-1])))
    print(f"database: {'PostgreSQL' if args.database_url.startswith('postgres') else 'SQLite (WAL, file)'}; "
          f"best of {args.repeat}; history spread over 365 days")  # fmt: skip
    print("baseline: one SUM per table over the period; page: every figure and daily series the dashboard shows")
    print(f"{'ledger rows':>12} {'30 d base ms':>13} {'30 d page ms':>13} {'x base':>7} {'365 d base ms':>14} "
          f"{'365 d page ms':>14} {'x base':>7} {'CSV 30 d ms':>12}")  # fmt: skip
    for rows, base_m, month, base_y, year, export in results:
        print(
            f"{rows:>12,} {base_m * 1000:>13.1f} {month * 1000:>13.1f} {month / base_m:>7.1f} {base_y * 1000:>14.1f} "
            f"{year * 1000:>14.1f} {year / base_y:>7.1f} {export * 1000:>12.1f}"
        )


def measure(rows: int, repeat: int) -> tuple[float, float, float, float, float]:
    from django.db import connection
    from django.db.models import Sum

    from discordbot import selectors as images
    from discordbot.models import Generation
    from storefront import selectors as shop
    from storefront.dashboard import Period, _ledger
    from storefront.models import Order
    from vouchers import selectors as credits
    from vouchers.models import LedgerEntry

    seed(rows)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")

    def baseline(days: int):
        """One aggregate per table over the period: the least the page must read."""
        period = Period(YEAR_END.date() - timedelta(days=days), YEAR_END.date() - timedelta(days=1))

        def run() -> None:
            kw = {"created_at__gte": period.start, "created_at__lt": period.end}
            LedgerEntry.objects.filter(**kw).aggregate(s=Sum("delta"))
            Order.objects.filter(paid_at__gte=period.start, paid_at__lt=period.end).aggregate(s=Sum("amount_cents"))
            Generation.objects.filter(**kw).aggregate(s=Sum("cost"))

        return run

    def figures(days: int):
        period = Period(YEAR_END.date() - timedelta(days=days), YEAR_END.date() - timedelta(days=1))

        def run() -> None:
            kw = {"start": period.start, "end": period.end}
            shop.revenue_figures(**kw), shop.revenue_daily(**kw)
            credits.credit_figures(**kw), credits.credits_spent_daily(**kw)
            images.image_figures(**kw), images.images_delivered_daily(**kw)

        return run

    class Anyone:
        class user:  # noqa: N801 - stands in for request.user
            @staticmethod
            def has_perm(perm: str) -> bool:
                return True

    def export() -> None:
        period = Period(YEAR_END.date() - timedelta(days=30), YEAR_END.date() - timedelta(days=1))
        for _ in _ledger(Anyone, period):
            pass

    return (
        best(baseline(30), repeat),
        best(figures(30), repeat),
        best(baseline(365), repeat),
        best(figures(365), repeat),
        best(export, repeat),
    )


if __name__ == "__main__":
    main()
