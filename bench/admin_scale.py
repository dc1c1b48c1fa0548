"""The admin and the audit at a year's scale: every admin list and change page, the searches operators type, the
money dashboard and `manage.py auditcredits`, at 100,000 and 1,000,000 ledger rows side by side.

The database is the seeded year of bench/seed_year.py (cached under bench/.cache/ after the first run): 100,000
ledger rows / 20,000 generations is the baseline the 1,000,000 / 200,000 figures are read against. Each size runs in
its own process with production settings (DEBUG off, file SQLite in WAL mode, or PostgreSQL with --database-url),
logged in as a superuser with Django's test Client. Each page is timed best (and median) of --repeat requests; its
query count comes from one more request under CaptureQueriesContext. The pages are found from
admin.site._registry: each model's changelist, and the change page of one object (for accounts, the member with
the most ledger rows). `auditcredits` runs in a fresh process each time: wall time and peak RSS (ru_maxrss).

    .venv/bin/python bench/admin_scale.py [--sizes 100000:20000 1000000:200000] [--repeat 3]
    .venv/bin/python bench/admin_scale.py --sizes 1000000:200000 \
        --database-url postgres://postgres@127.0.0.1:5432/adminscale
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.seed_year import YEAR_END, seeded_sqlite, setup_django  # noqa: E402
from bench.table import Row  # noqa: E402

TABLE_ORDER = 30
TARGET_MS = 300
SIZES = [(100_000, 20_000), (1_000_000, 200_000)]
QUICK_SIZES = [(2_000, 400), (20_000, 4_000)]


def pages() -> list[tuple[str, str]]:
    """(label, URL) of every page measured, found from the admin registry and the seeded data."""
    from django.contrib import admin
    from django.db.models import Count
    from django.urls import NoReverseMatch, reverse

    from vouchers.models import CreditAccount, LedgerEntry, Voucher

    found: list[tuple[str, str]] = []
    biggest = (
        LedgerEntry.objects.values("account_id").annotate(n=Count("id")).order_by("-n").values_list("account_id", "n")
    )[:1]
    big_id, big_rows = biggest[0]
    big = CreditAccount.objects.get(pk=big_id)
    for model, _admin in sorted(admin.site._registry.items(), key=lambda kv: kv[0]._meta.label):
        opts = model._meta
        name = f"{opts.app_label}_{opts.model_name}"
        try:
            found.append((f"{opts.verbose_name_plural} list", reverse(f"admin:{name}_changelist")))
        except NoReverseMatch:
            continue
        obj = big if model is CreditAccount else model._default_manager.order_by("-pk").first()
        if obj is not None:
            label = "account page (biggest member)" if model is CreditAccount else f"{opts.verbose_name} page"
            found.append((label, reverse(f"admin:{name}_change", args=[obj.pk])))
    print(f"biggest member: {big_rows:,} ledger rows", file=sys.stderr)
    discord_id = str(big.discord_user_id)
    voucher = Voucher.objects.filter(status="redeemed", order__isnull=False).order_by("-pk").first()
    url = reverse
    found += [
        ("ledger of the biggest member (filtered list)", url("admin:vouchers_ledgerentry_changelist")
         + f"?account__id__exact={big.pk}"),
        ("search ledger by Discord id", url("admin:vouchers_ledgerentry_changelist") + f"?q={discord_id}"),
        ("search ledger by voucher code", url("admin:vouchers_ledgerentry_changelist") + f"?q={voucher.code}"),
        ("search accounts by Discord id", url("admin:vouchers_creditaccount_changelist") + f"?q={discord_id}"),
        ("search accounts by name", url("admin:vouchers_creditaccount_changelist") + "?q=member1234"),
        ("search accounts by email", url("admin:vouchers_creditaccount_changelist") + "?q=buyer77%40example.com"),
        ("search generations by Discord id", url("admin:discordbot_generation_changelist") + f"?q={discord_id}"),
        ("search generations by prompt", url("admin:discordbot_generation_changelist") + "?q=ramen"),
        ("search vouchers by code", url("admin:vouchers_voucher_changelist") + f"?q={voucher.code}"),
        ("search vouchers by Discord id", url("admin:vouchers_voucher_changelist") + f"?q={discord_id}"),
        ("search orders by Discord id", url("admin:storefront_order_changelist") + f"?q={discord_id}"),
        ("search orders by email", url("admin:storefront_order_changelist") + "?q=buyer77%40example.com"),
        ("search orders by voucher code", url("admin:storefront_order_changelist") + f"?q={voucher.code}"),
        ("search disputes by order id", url("admin:storefront_dispute_changelist") + f"?q={voucher.order_id}"),
        ("generations filtered by status", url("admin:discordbot_generation_changelist") + "?status__exact=failed"),
        ("dashboard (30 days)", url("admin:dashboard")),
        ("dashboard (365 days)", url("admin:dashboard") + "?start=2025-12-01&end=2026-11-30"),
    ]  # fmt: skip
    return found


def measure_pages(repeat: int) -> dict:
    """In this process (Django set up on the seeded database):
    {label: [best ms, median ms, queries, HTTP status, best CPU ms]}. CPU time (the process's own, SQLite's work
    included) is what the page costs when the machine is not shared; wall time is what it took here."""
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    if not (Path(settings.STATIC_ROOT) / "staticfiles.json").exists():
        call_command("collectstatic", interactive=False, verbosity=0)
    user = get_user_model().objects.filter(username="bench-admin").first()
    if user is None:
        user = get_user_model().objects.create_superuser("bench-admin", "bench@example.com", "bench-only")
    client = Client()
    client.force_login(user)
    results = {}
    for label, url in pages():
        client.get(url)  # warm: templates, the page cache of the database file
        times, cpu = [], []
        for _ in range(repeat):
            started, used = time.perf_counter(), time.process_time()
            response = client.get(url)
            times.append((time.perf_counter() - started) * 1000)
            cpu.append((time.process_time() - used) * 1000)
        with CaptureQueriesContext(connection) as queries:
            client.get(url)
        results[label] = [
            min(times),
            statistics.median(times),
            len(queries.captured_queries),
            response.status_code,
            min(cpu),
        ]
    return results


def measure_audit(database_url: str, repeat: int) -> dict:
    """`auditcredits` in a fresh process, full and `--since` the last 30 days of the seeded year: best wall and CPU
    seconds, the RSS of the process with Django loaded, and its peak RSS (MiB)."""
    code = (
        "import resource, sys, time; sys.path.insert(0, {root!r}); "
        "from bench.seed_year import setup_django; setup_django({url!r}); "
        "import io; from django.core.management import call_command; "
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; t = time.perf_counter(); c = time.process_time(); "
        "call_command('auditcredits', *{args!r}, stdout=io.StringIO()); "
        "print('AUDIT', time.perf_counter() - t, time.process_time() - c, base, "
        "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    out = {}
    window = (YEAR_END - timedelta(days=30)).date().isoformat()
    for name, args in [("full", []), ("--since 30 days", ["--since", window])]:
        runs = []
        for _ in range(repeat):
            proc = subprocess.run(
                [sys.executable, "-c", code.format(root=str(ROOT), url=database_url, args=args)],
                capture_output=True,
                text=True,
                cwd=ROOT,
            )
            line = next((x for x in proc.stdout.splitlines() if x.startswith("AUDIT ")), None)
            if line is None:
                raise SystemExit(f"auditcredits {args} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
            wall, cpu, base, peak = line.split()[1:]
            runs.append((float(wall), float(cpu), int(base) / 1024, int(peak) / 1024))
        out[name] = [min(r[0] for r in runs), min(r[1] for r in runs), max(r[2] for r in runs), max(r[3] for r in runs)]
    return out


def run_size(ledger_rows: int, generations: int, *, repeat: int, database_url: str, log=print) -> dict:
    if database_url:
        url = database_url
        subprocess.run(
            [sys.executable, str(ROOT / "bench" / "seed_year.py"), "--ledger-rows", str(ledger_rows),
             "--generations", str(generations), "--database-url", url, "--if-empty"], check=True, cwd=ROOT,
        )  # fmt: skip
    else:
        url = f"sqlite:///{seeded_sqlite(ledger_rows=ledger_rows, generations=generations, log=log)}"
    proc = subprocess.run(
        [sys.executable, __file__, "--one", url, "--repeat", str(repeat)], capture_output=True, text=True, cwd=ROOT
    )
    line = next((x for x in proc.stdout.splitlines() if x.startswith("PAGES ")), None)
    if line is None:
        raise SystemExit(f"measuring {ledger_rows} rows failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return {"pages": json.loads(line[6:]), "audit": measure_audit(url, repeat), "url": url}


def report(sizes, results, *, repeat: int, database: str) -> list[Row]:
    (small_rows, small_gens), (big_rows, big_gens) = sizes[0], sizes[-1]
    small, big = results[0], results[-1]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"database: {database}; production settings (DEBUG off); superuser via the test Client; "
          f"best of {repeat} requests per page (wall, and CPU of the process: SQLite's work included); "
          f"load average {load} on {os.cpu_count()} CPUs")  # fmt: skip
    head = f"{small_rows:,} rows ({small_gens:,} gen.)"
    tail = f"{big_rows:,} rows ({big_gens:,} gen.)"
    print(f"{'page':<52} {head:>30} {tail:>30} {'x cpu':>6}")
    print(f"{'':<52} {'wall ms / cpu ms / queries':>30} {'wall ms / cpu ms / queries':>30}")
    over_cpu, over_wall, most_queries = [], [], 0
    for label, (best, _median, queries, status, cpu) in big["pages"].items():
        b0 = small["pages"].get(label)
        before = f"{b0[0]:.0f} / {b0[4]:.0f} / {b0[2]}" if b0 else "-"
        flag = "" if status == 200 else f" (HTTP {status})"
        ratio = f"{cpu / b0[4]:.1f}" if b0 and b0[4] else "-"
        print(f"{label[:52]:<52} {before:>30} {f'{best:.0f} / {cpu:.0f} / {queries}':>30} {ratio:>6}{flag}")
        most_queries = max(most_queries, queries)
        if cpu > TARGET_MS:
            over_cpu.append(label)
        if best > TARGET_MS:
            over_wall.append(label)
    for name, (wall, cpu, _base, peak) in big["audit"].items():
        s0 = small["audit"][name]
        print(f"{'auditcredits ' + name + ' (wall s / cpu s / peak MiB)':<52} "
              f"{f'{s0[0]:.1f} / {s0[1]:.1f} / {s0[3]:.0f}':>30} {f'{wall:.1f} / {cpu:.1f} / {peak:.0f}':>30} "
              f"{cpu / s0[1] if s0[1] else 0:>6.1f}")  # fmt: skip
    print(f"(RSS of the audit process with Django loaded, before it starts: about {big['audit']['full'][2]:.0f} MiB)")
    print(f"pages over {TARGET_MS} ms of CPU at {big_rows:,} rows: {', '.join(over_cpu) or 'none'}")
    print(f"pages over {TARGET_MS} ms of wall time at {big_rows:,} rows (under load {load}): "
          f"{', '.join(over_wall) or 'none'}")  # fmt: skip

    settings = f"{database}, production settings, best of {repeat}, load {load}"
    pages_big, pages_small = big["pages"], small["pages"]
    slowest = max(pages_big, key=lambda k: pages_big[k][4])
    account = next(k for k in pages_big if k.startswith("account page"))
    small_account = next(k for k in pages_small if k.startswith("account page"))
    searches = {k: v for k, v in pages_big.items() if k.startswith("search")}
    slow_search = max(searches, key=lambda k: searches[k][4])
    full, full0 = big["audit"]["full"], small["audit"]["full"]
    since, since0 = big["audit"]["--since 30 days"], small["audit"]["--since 30 days"]
    return [
        Row(
            f"admin at {big_rows:,} ledger rows / {big_gens:,} generations: every list, change page, search and the "
            f"dashboard ({len(pages_big)} pages)",
            f"slowest {pages_big[slowest][4]:.0f} ms CPU ({slowest}); {len(over_cpu)} over {TARGET_MS} ms CPU; "
            f"at most {most_queries} queries",
            f"at {small_rows:,} rows: slowest {max(v[4] for v in pages_small.values()):.0f} ms CPU",
            settings,
        ),
        Row(
            f"biggest member's account page at {big_rows:,} rows (about a tenth of all ledger rows are theirs)",
            f"{pages_big[account][4]:.0f} ms CPU ({pages_big[account][0]:.0f} ms wall), "
            f"{pages_big[account][2]} queries",
            f"at {small_rows:,} rows: {pages_small[small_account][4]:.0f} ms CPU, "
            f"{pages_small[small_account][2]} queries",
            settings,
        ),
        Row(
            f"slowest admin search at {big_rows:,} rows",
            f"{searches[slow_search][4]:.0f} ms CPU ({slow_search})",
            f"at {small_rows:,} rows: {pages_small[slow_search][4]:.0f} ms CPU",
            settings,
        ),
        Row(
            f"`auditcredits` at {big_rows:,} rows: full pass; `--since` 30 days",
            f"{full[1]:.1f} s CPU ({full[0]:.1f} s wall), peak {full[3]:.0f} MiB; {since[1]:.1f} s CPU, "
            f"peak {since[3]:.0f} MiB",
            f"at {small_rows:,} rows: {full0[1]:.1f} s CPU, peak {full0[3]:.0f} MiB; {since0[1]:.1f} s CPU "
            f"(Django alone: {full[2]:.0f} MiB)",
            settings,
        ),
    ]


def measure(*, quick: bool) -> list[Row]:
    sizes = QUICK_SIZES if quick else SIZES
    repeat = 1 if quick else 3
    results = [run_size(rows, gens, repeat=repeat, database_url="", log=print) for rows, gens in sizes]
    return report(sizes, results, repeat=repeat, database="SQLite (file, WAL)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=[f"{r}:{g}" for r, g in SIZES], help="LEDGER_ROWS:GENERATIONS")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--database-url", default="", help="PostgreSQL (one size per database); default SQLite")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure the pages of this database here
    args = parser.parse_args()
    if args.one:
        setup_django(args.one)
        print("PAGES " + json.dumps(measure_pages(args.repeat)))
        return
    sizes = [tuple(int(x) for x in s.split(":")) for s in args.sizes]
    if args.database_url and len(sizes) != 1:
        sys.exit("With --database-url, measure one size (the database holds one seeded year).")
    results = [run_size(r, g, repeat=args.repeat, database_url=args.database_url) for r, g in sizes]
    database = "PostgreSQL" if args.database_url.startswith("postgres") else "SQLite (file, WAL)"
    if len(results) == 1:
        sizes, results = sizes * 2, results * 2
    report(sizes, results, repeat=args.repeat, database=database)


if __name__ == "__main__":
    main()
