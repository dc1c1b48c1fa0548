"""How many credits per second can we decrement? Side by side, in one run, on one machine.

Answers the hobby project's "I have no clue how this would handle decrementing hundreds or thousands of credits
per second" with numbers. P worker processes (like gunicorn workers plus the bot) each spend one credit at a time
from random accounts for a fixed number of seconds, against one file-backed SQLite database configured as in
production (WAL, synchronous=NORMAL, IMMEDIATE), and optionally PostgreSQL:

  service      `credits_reserve`: conditional UPDATE + ledger row, one short transaction (what the product does)
  bare-update  the conditional UPDATE alone, no ledger (the cost of the audit trail)
  naive        read balance, then write balance-1 (what not to do): fast, and it loses updates

Prints debits/s, the ratio to `service`, and for each whether balances still equal their ledgers / how many
updates were lost.

    .venv/bin/python bench/credit_throughput.py [--seconds 3] [--procs 1 2 4] [--postgres URL]
"""

import argparse
import multiprocessing as mp
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ACCOUNTS = 1000
START_BALANCE = 1_000_000


def _setup_django(database_url: str) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ["DJANGO_SETTINGS_MODULE"] = "storefront.settings"
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("SECRET_KEY", "bench-only-secret-key")
    os.environ["LOG_LEVEL"] = "WARNING"
    import django

    django.setup()


def _worker(database_url: str, mode: str, seconds: float, start_at: float, result: "mp.Queue") -> None:
    _setup_django(database_url)
    from django.db import connection, transaction
    from django.db.models import F

    from vouchers.errors import InsufficientCredits
    from vouchers.models import CreditAccount
    from vouchers.services import credits_reserve

    ids = list(range(1, ACCOUNTS + 1))
    rng = random.Random(os.getpid())
    done = errors = 0
    while time.time() < start_at:
        time.sleep(0.001)
    deadline = start_at + seconds
    while time.time() < deadline:
        uid = rng.choice(ids)
        try:
            if mode == "service":
                credits_reserve(discord_user_id=uid, amount=1, memo="bench")
            elif mode == "bare-update":
                CreditAccount.objects.filter(discord_user_id=uid, balance__gte=1).update(balance=F("balance") - 1)
            else:  # naive: read, then write what we read minus one (a lost update waiting to happen)
                with transaction.atomic(durable=True) if connection.vendor == "postgresql" else _no_txn():
                    balance = CreditAccount.objects.values_list("balance", flat=True).get(discord_user_id=uid)
                    CreditAccount.objects.filter(discord_user_id=uid).update(balance=balance - 1)
            done += 1
        except InsufficientCredits:
            errors += 1
        except Exception as exc:  # e.g. "database is locked": counted, never hidden
            errors += 1
            print(f"  [{mode}] {type(exc).__name__}: {exc}", file=sys.stderr)
    connection.close()
    result.put((done, errors))


class _no_txn:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _reset(database_url: str) -> None:
    from django.core.management import call_command
    from django.db import connection

    from vouchers.models import CreditAccount, LedgerEntry

    call_command("migrate", verbosity=0)
    # The ledger is append-only through the ORM, so a scratch database is wiped with raw SQL.
    with connection.cursor() as cur:
        cur.execute(f"DELETE FROM {LedgerEntry._meta.db_table}")
        cur.execute(f"DELETE FROM {CreditAccount._meta.db_table}")
    CreditAccount.objects.bulk_create(
        [CreditAccount(discord_user_id=i, balance=START_BALANCE) for i in range(1, ACCOUNTS + 1)]
    )
    connection.close()


def _consistency(mode: str, done: int) -> str:
    from django.db.models import Sum

    from vouchers.models import CreditAccount, LedgerEntry

    spent = ACCOUNTS * START_BALANCE - CreditAccount.objects.aggregate(s=Sum("balance"))["s"]
    lost = done - spent
    if mode == "service":
        ledger = -(LedgerEntry.objects.aggregate(s=Sum("delta"))["s"] or 0)
        return f"ledger {'matches' if ledger == spent == done else 'MISMATCH'}; lost updates {lost}"
    return f"lost updates {lost}"


def run(database_url: str, label: str, seconds: float, procs_list: list[int]) -> None:
    _setup_django(database_url)
    ctx = mp.get_context("spawn")
    print(f"\n{label}: {seconds:g} s per cell, {ACCOUNTS} accounts, 1 credit per debit")
    print(f"{'procs':>5}  {'mode':<12} {'debits/s':>10} {'vs service':>10}  consistency")
    for procs in procs_list:
        rates: dict[str, float] = {}
        for mode in ("service", "bare-update", "naive"):
            _reset(database_url)
            queue = ctx.Queue()
            start_at = time.time() + 2.0  # let every process finish importing Django first
            workers = [
                ctx.Process(target=_worker, args=(database_url, mode, seconds, start_at, queue)) for _ in range(procs)
            ]
            for w in workers:
                w.start()
            results = [queue.get() for _ in workers]
            for w in workers:
                w.join()
            done = sum(r[0] for r in results)
            errors = sum(r[1] for r in results)
            rates[mode] = done / seconds
            ratio = rates[mode] / rates["service"] if rates["service"] else float("nan")
            note = _consistency(mode, done) + (f"; errors {errors}" if errors else "")
            print(f"{procs:>5}  {mode:<12} {rates[mode]:>10,.0f} {ratio:>9.2f}x  {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--postgres", help="also run against this PostgreSQL URL (a scratch database)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        targets = [(f"sqlite:///{tmp}/bench.sqlite3", "SQLite (WAL, synchronous=NORMAL, IMMEDIATE)")]
        if args.postgres:
            targets.append((args.postgres, "PostgreSQL"))
        for url, label in targets:
            # Django's settings are fixed once per process: each database gets a coordinator process of its own.
            coordinator = mp.get_context("spawn").Process(target=run, args=(url, label, args.seconds, args.procs))
            coordinator.start()
            coordinator.join()


if __name__ == "__main__":
    main()
