"""Ledgered debits per second near SQLite's limit, side by side in one run (issue 14, "Debits near the limit").

Two client processes (like a gunicorn worker and the bot) each spend 1 credit at a time from random accounts for
a fixed time, against one file SQLite database migrated and configured exactly as production configures it
(storefront.settings, DEBUG=false: WAL, synchronous=NORMAL, transaction_mode=IMMEDIATE, 20 s busy timeout,
writers queued on the file lock of storefront/sqlite_queued). Measured in the same run, in turns:

  service     `vouchers.services.credits_reserve` in-process: the product's ledgered debit
  2022-shape  the 2022 design: a Flask app served by a threaded werkzeug server in a subprocess; each debit opens
              a new HTTP connection and the app a new SQLite connection (the same UPDATE and ledger row)
  hand-sql    the same debit and ledger row in hand-written SQL (sqlite3 module, one connection per process,
              BEGIN IMMEDIATE ... COMMIT): what Python can do without Django
  bare-update `UPDATE ... SET balance = balance - 1 ... RETURNING balance`, autocommit, no ledger: SQLite's limit

and `service` again on PostgreSQL when it is reachable (or CI=true, which requires it). Each repetition runs
every mode once; the figures are the median of the repetitions (their range in brackets), latency percentiles
over every debit of the median repetition. After each mode the books are checked: balances == ledger sums
(for the ledgered modes) and nothing was lost.

    .venv/bin/python bench/ledger.py [--seconds 3] [--reps 3] [--procs 2] [--postgres URL] [--no-postgres]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.table import Row  # noqa: E402

TABLE_ORDER = 10
ACCOUNTS = 1000
START_BALANCE = 1_000_000
FIRST_ID = 10**17  # Discord-sized ids
SQLITE_MODES = ("service", "2022-shape", "hand-sql", "bare-update")
PG_URL_DEFAULT = "postgres://postgres@127.0.0.1:5432/ledgerperf_bench"
SETTINGS_NOTE = (
    "storefront.settings, DEBUG=false; SQLite file in WAL, synchronous=NORMAL, BEGIN IMMEDIATE, busy timeout 20 s, "
    "writers queued on a file lock; CONN_MAX_AGE=600"
)


def _django(database_url: str) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "storefront.settings"
    os.environ["DATABASE_URL"] = database_url
    os.environ["DEBUG"] = "false"
    os.environ.setdefault("SECRET_KEY", "bench-only-secret-key-" + "x" * 40)
    os.environ["LOG_LEVEL"] = "WARNING"
    import django

    django.setup()


# --- the 2022 shape: Flask + werkzeug, a new HTTP and SQLite connection per debit -----------------------------


def _sqlite_connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=20, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


DEBIT_SQL = (
    "UPDATE vouchers_creditaccount SET balance = balance - ?, updated_at = ? "
    "WHERE discord_user_id = ? AND balance >= ? RETURNING id"
)
ENTRY_SQL = (
    "INSERT INTO vouchers_ledgerentry (account_id, delta, kind, memo, created_at) "
    "VALUES (?, ?, 'generate', 'bench', ?) RETURNING id"
)


def _hand_debit(conn: sqlite3.Connection, uid: int) -> bool:
    now = time.strftime("%Y-%m-%d %H:%M:%S")
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute(DEBIT_SQL, (1, now, uid, 1)).fetchone()
        if row is not None:
            conn.execute(ENTRY_SQL, (row[0], -1, now)).fetchone()
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return row is not None


def _flask_server(db_path: str, port_queue: mp.Queue) -> None:
    import logging

    from flask import Flask, jsonify, request
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app = Flask("ledger2022")

    @app.post("/debit")
    def debit():
        conn = _sqlite_connect(db_path)  # the 2022 design: a new connection per request
        try:
            ok = _hand_debit(conn, int(request.form["user"]))
        finally:
            conn.close()
        return jsonify(ok=ok), 200 if ok else 402

    server = make_server("127.0.0.1", 0, app, threaded=True)
    port_queue.put(server.server_port)
    server.serve_forever()


# --- one client process ----------------------------------------------------------------------------------------


def _client(mode: str, target: str, seconds: float, ready: mp.Queue, go, out: mp.Queue) -> None:
    rng = random.Random(os.getpid())
    debit = _debit_function(mode, target)  # imports, Django set up and connected before the start
    latencies: list[float] = []
    failed = 0
    ready.put(os.getpid())
    go.wait()
    clock = time.perf_counter
    cpu_started = time.process_time()
    deadline = clock() + seconds
    while True:
        began = clock()
        if began >= deadline:
            break
        if not debit(FIRST_ID + rng.randrange(ACCOUNTS)):
            failed += 1
        latencies.append(clock() - began)
    out.put((len(latencies), failed, latencies, time.process_time() - cpu_started))


def _debit_function(mode: str, target: str):
    if mode == "service":
        _django(target)
        from django.db import connection

        from vouchers.services import credits_reserve

        connection.ensure_connection()

        def debit(uid: int) -> bool:
            credits_reserve(discord_user_id=uid, amount=1, memo="bench")
            return True

        return debit
    if mode == "2022-shape":
        import http.client
        from urllib.parse import urlencode

        port = int(target)

        def debit(uid: int) -> bool:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                conn.request(
                    "POST", "/debit", urlencode({"user": uid}), {"Content-Type": "application/x-www-form-urlencoded"}
                )
                response = conn.getresponse()
                response.read()
                return response.status == 200
            finally:
                conn.close()

        return debit
    conn = _sqlite_connect(target)
    if mode == "hand-sql":
        return lambda uid: _hand_debit(conn, uid)
    bare = (
        "UPDATE vouchers_creditaccount SET balance = balance - 1 "
        "WHERE discord_user_id = ? AND balance >= 1 RETURNING balance"
    )
    return lambda uid: conn.execute(bare, (uid,)).fetchone() is not None


# --- one database: reset, run each mode, check the books ------------------------------------------------------


def _reset() -> None:
    from django.db import connection

    from vouchers.models import CreditAccount, LedgerEntry

    with connection.cursor() as cur:  # the ledger is append-only through the ORM: a scratch database, raw SQL
        cur.execute(f"DELETE FROM {LedgerEntry._meta.db_table}")
        cur.execute(f"DELETE FROM {CreditAccount._meta.db_table}")
    CreditAccount.objects.bulk_create(
        [CreditAccount(discord_user_id=FIRST_ID + i, balance=START_BALANCE) for i in range(ACCOUNTS)]
    )
    connection.close()


def _books(ledgered: bool, done: int) -> str:
    from django.db.models import Sum

    from vouchers.models import CreditAccount, LedgerEntry

    spent = ACCOUNTS * START_BALANCE - CreditAccount.objects.aggregate(s=Sum("balance"))["s"]
    problems = []
    if spent != done:
        problems.append(f"{done - spent} debits lost")
    if ledgered:
        ledger = -(LedgerEntry.objects.aggregate(s=Sum("delta"))["s"] or 0)
        if ledger != spent:
            problems.append(f"ledger {ledger} != balances {spent}")
    return "; ".join(problems) or "books balance"


def _run_database(database_url: str, modes: tuple[str, ...], seconds: float, reps: int, procs: int, out) -> None:
    """In its own process (Django's settings are fixed once per process): every rep of every mode on one database."""
    _django(database_url)
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    db_path = connection.settings_dict["NAME"] if connection.vendor == "sqlite" else None
    connection.close()
    ctx = mp.get_context("spawn")
    results: dict[str, list[dict]] = {mode: [] for mode in modes}
    server = None
    port = None
    try:
        if "2022-shape" in modes:
            port_queue = ctx.Queue()
            server = ctx.Process(target=_flask_server, args=(str(db_path), port_queue), daemon=True)
            server.start()
            port = port_queue.get(timeout=60)
        for rep in range(reps):
            for mode in modes:
                _reset()
                target = {"service": database_url, "2022-shape": str(port)}.get(mode, str(db_path))
                queue, ready, go = ctx.Queue(), ctx.Queue(), ctx.Event()
                clients = [
                    ctx.Process(target=_client, args=(mode, target, seconds, ready, go, queue)) for _ in range(procs)
                ]
                for client in clients:
                    client.start()
                for _ in clients:
                    ready.get(timeout=120)
                go.set()  # every client starts together, set up and connected
                got = [queue.get(timeout=seconds + 120) for _ in clients]
                for client in clients:
                    client.join()
                done = sum(g[0] - g[1] for g in got)
                latencies = sorted(lat for g in got for lat in g[2])
                books = _books(mode in ("service", "2022-shape", "hand-sql"), done)
                entry = {
                    "rate": done / seconds,
                    "failed": sum(g[1] for g in got),
                    # CPU the client processes spent per debit: a figure the machine's load hardly moves
                    # (for the 2022 shape it leaves out the server's share).
                    "cpu_us": 1e6 * sum(g[3] for g in got) / max(1, sum(g[0] for g in got)),
                    "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else float("nan"),
                    "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)] if latencies else float("nan"),
                    "books": books,
                    "load": os.getloadavg()[0],
                }
                results[mode].append(entry)
                print(
                    f"  rep {rep + 1} {mode:<12} {entry['rate']:>8,.0f}/s  p50 {entry['p50_ms']:.2f} ms  "
                    f"p99 {entry['p99_ms']:.2f} ms  CPU {entry['cpu_us']:.0f} us/debit  "
                    f"{books}  load {entry['load']:.2f}",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        if server is not None:
            server.terminate()
            server.join()
    out.put(json.dumps(results))


def _measure_database(database_url: str, modes: tuple[str, ...], seconds: float, reps: int, procs: int) -> dict:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    runner = ctx.Process(target=_run_database, args=(database_url, modes, seconds, reps, procs, out))
    runner.start()
    results = json.loads(out.get(timeout=reps * len(modes) * (seconds + 150) + 120))
    runner.join()
    return results


def _summary(runs: list[dict]) -> dict:
    """The median repetition by rate, with the range of rates."""
    ordered = sorted(runs, key=lambda r: r["rate"])
    median = ordered[len(ordered) // 2]
    return dict(median, low=ordered[0]["rate"], high=ordered[-1]["rate"])


def _postgres_url(explicit: str | None) -> str | None:
    """The scratch PostgreSQL database to use, created if missing; None when PostgreSQL is not reachable."""
    url = explicit or os.environ.get("BENCH_PG_URL") or PG_URL_DEFAULT
    try:
        import psycopg

        base, _, name = url.rpartition("/")
        with psycopg.connect(f"{base}/postgres", autocommit=True, connect_timeout=3) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                conn.execute(f'CREATE DATABASE "{name}"')
        return url
    except Exception as exc:  # noqa: BLE001 - reported; CI=true turns it into a failure
        if os.environ.get("CI") == "true":
            raise SystemExit(f"PostgreSQL is required under CI=true: {exc}") from exc
        print(f"PostgreSQL not reachable ({type(exc).__name__}); its row is skipped", file=sys.stderr)
        return None


def _fmt(summary: dict) -> str:
    return f"{summary['rate']:,.0f}/s ({summary['low']:,.0f}-{summary['high']:,.0f})"


def measure(
    *,
    quick: bool,
    seconds: float | None = None,
    reps: int | None = None,
    procs: int = 2,
    postgres: str | None = None,
    use_postgres: bool = True,
) -> list[Row]:
    seconds = seconds or (1.0 if quick else 3.0)
    reps = reps or (1 if quick else 3)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp:
        sqlite = _measure_database(f"sqlite:///{tmp}/ledger.sqlite3", SQLITE_MODES, seconds, reps, procs)
    pg_url = _postgres_url(postgres) if use_postgres else None
    pg = _measure_database(pg_url, ("service",), seconds, reps, procs) if pg_url else None
    load = os.getloadavg()
    service = _summary(sqlite["service"])
    others = {mode: _summary(sqlite[mode]) for mode in SQLITE_MODES[1:]}
    ratio = {mode: service["rate"] / s["rate"] for mode, s in others.items()}
    share_of_hand_sql = 100 * service["rate"] / others["hand-sql"]["rate"]
    runs = f"{procs} processes, {seconds:g} s x {reps} reps, {ACCOUNTS} accounts, 1 credit per debit"
    load_note = f"load average {load_before[0]:.2f} before, {load[0]:.2f} after"
    books = {s["books"] for runs_ in sqlite.values() for s in runs_} | (
        {s["books"] for s in pg["service"]} if pg else set()
    )
    rows = [
        Row(
            what=f"ledgered debits/s, `credits_reserve` in-process, SQLite, {procs} processes",
            figure=(
                f"{_fmt(service)}, p50 {service['p50_ms']:.2f} ms, p99 {service['p99_ms']:.2f} ms; "
                f"{service['cpu_us']:.0f} us of client CPU per debit"
            ),
            beside=(
                f"2022 shape (Flask, new HTTP + SQLite connection per debit) {_fmt(others['2022-shape'])} "
                f"({ratio['2022-shape']:.1f}x), p99 {others['2022-shape']['p99_ms']:.1f} ms; "
                f"hand-written SQL {_fmt(others['hand-sql'])} ({share_of_hand_sql:.0f}% of it), "
                f"p99 {others['hand-sql']['p99_ms']:.1f} ms, {others['hand-sql']['cpu_us']:.0f} us CPU; "
                f"bare UPDATE ... RETURNING "
                f"{_fmt(others['bare-update'])}; books: {', '.join(sorted(books))}"
            ),
            settings=f"{SETTINGS_NOTE}; {runs}; {load_note}",
        )
    ]
    if pg:
        pg_service = _summary(pg["service"])
        rows.append(
            Row(
                what=f"ledgered debits/s, `credits_reserve` in-process, PostgreSQL, {procs} processes",
                figure=(
                    f"{_fmt(pg_service)}, p50 {pg_service['p50_ms']:.2f} ms, p99 {pg_service['p99_ms']:.2f} ms; "
                    f"{pg_service['cpu_us']:.0f} us of client CPU per debit"
                ),
                beside=f"SQLite in the same run {_fmt(service)}",
                settings=f"storefront.settings, DEBUG=false, PostgreSQL 15 on 127.0.0.1, CONN_MAX_AGE=600; {runs}",
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--postgres", help=f"a scratch PostgreSQL URL (default $BENCH_PG_URL or {PG_URL_DEFAULT})")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--only-sqlite-service", action="store_true", help="one mode alone (e.g. in an old checkout)")
    args = parser.parse_args()
    if args.only_sqlite_service:
        with tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp:
            got = _measure_database(f"sqlite:///{tmp}/l.sqlite3", ("service",), args.seconds, args.reps, args.procs)
        print(json.dumps(_summary(got["service"])))
        return
    from bench.table import machine

    print(f"{machine()}; load average {os.getloadavg()}", flush=True)
    print(f"settings: {SETTINGS_NOTE}", flush=True)
    for row in measure(
        quick=False,
        seconds=args.seconds,
        reps=args.reps,
        procs=args.procs,
        postgres=args.postgres,
        use_postgres=not args.no_postgres,
    ):
        print(f"\n{row.what}\n  {row.figure}\n  beside: {row.beside}\n  settings: {row.settings}")


if __name__ == "__main__":
    main()
