"""A year of a busy community, seeded fast: `--ledger-rows` ledger rows (1,000,000 by default) and `--generations`
generations (200,000), with every invariant of `auditcredits` holding.

The shape (deterministic for a given `--seed`):

- members: ledger rows / 50 of them, their activity Zipf-distributed (s = 1.1), so a few very big members (the
  biggest holds about a tenth of all generations and tens of thousands of ledger rows) and a long tail of small ones;
  most have a Discord name, some have /settings;
- orders: ledger rows / 10, over the shop's packs; 92% paid (each with its voucher, 97% of those redeemed), the rest
  expired or pending; one Stripe event per paid order;
- refunds (1% of redeemed paid orders; a tenth of them after the member had spent the credits, so the clawback
  leaves a debt that later grants repay in part) and disputes (0.3%: lost, won, and still open);
- generations: counts 1-4, three sizes and qualities, 90% delivered, 2% delivered in part (one partial refund),
  8% failed or refunded (one full refund), the last few still in flight; each charged once in the ledger;
- the rest of the ledger: a welcome grant per member (sized so no balance goes negative), daily reward grants,
  and a few operator debits.

Rows are written in time order with explicit ids by bulk inserts (executemany on SQLite, COPY on PostgreSQL): a
million ledger rows take about a minute on SQLite. `seeded_sqlite(...)` keeps the seeded file under `bench/.cache/`
(gitignored), keyed by the seed parameters and the migrations, so a rerun starts in seconds.

    .venv/bin/python bench/seed_year.py [--ledger-rows N] [--generations N] [--seed N] [--database-url URL]

Without --database-url it fills (or reuses) the cached SQLite file and prints its path; with a PostgreSQL URL it
migrates and fills that database, which must be empty.
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import itertools
import json
import os
import random
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache"
SEED_VERSION = 1  # bump when the shape below changes: the cached files are then seeded again
YEAR_END = datetime(2026, 12, 1, tzinfo=UTC)
YEAR = 365 * 86400
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
SNOWFLAKE = 300_000_000_000_000_000  # Discord ids: 18 digits
SIZES = [("1024x1024", "medium", 1), ("1024x1024", "low", 1), ("1536x1024", "high", 3), ("1024x1536", "medium", 2)]
WORDS = (
    "a castle on a hill at dusk, a cat astronaut, neon city in the rain, watercolor fox, portrait of an old sailor, "
    "pixel art dragon, isometric tiny house, a bowl of ramen, cyberpunk samurai, cozy library with a fireplace"
).split(", ")


def setup_django(database_url: str) -> None:
    """Production settings (DEBUG off) on the given database."""
    sys.path.insert(0, str(ROOT))
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "storefront.settings",
            "DEBUG": "false",
            "SECRET_KEY": "bench-only-not-a-secret",
            "DATABASE_URL": database_url,
            "ALLOWED_HOSTS": "testserver,127.0.0.1,localhost",
            "STRIPE_SECRET_KEY": "sk_test_bench",
            "STRIPE_WEBHOOK_SECRET": "whsec_bench",
            "PAYMENTS_BACKEND": "stripe",
            "IMAGE_BACKEND": "placeholder",
            "SECURE_SSL_REDIRECT": "false",
            "CACHE_URL": "locmemcache://",
            "LOG_LEVEL": "WARNING",
        }
    )
    os.environ.setdefault("DATA_DIR", str(CACHE / "data"))
    os.environ.setdefault("STATIC_ROOT", str(CACHE / "static"))  # production's manifest storage, collected once
    import django

    django.setup()


def cache_key(ledger_rows: int, generations: int, seed: int) -> str:
    """The seed parameters plus the migrations on disk: a new migration (an index) means a new file."""
    migrations = sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("*/migrations/0*.py"))
    text = json.dumps([SEED_VERSION, ledger_rows, generations, seed, migrations])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def seeded_sqlite(*, ledger_rows: int, generations: int, seed: int = 1, log=print) -> Path:
    """The path of a SQLite file holding the seeded year, seeding it (in a subprocess) only when not cached."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"year-{ledger_rows}-{generations}-{seed}-{cache_key(ledger_rows, generations, seed)}.sqlite3"
    if path.exists():
        return path
    for stale in CACHE.glob(f"year-{ledger_rows}-{generations}-{seed}-*.sqlite3*"):
        stale.unlink()  # an older shape or older migrations
    partial = path.with_suffix(".partial")
    for leftover in CACHE.glob(partial.name + "*"):
        leftover.unlink()
    import subprocess

    log(f"seeding {ledger_rows:,} ledger rows / {generations:,} generations into {path.name} (cached after)")
    subprocess.run(
        [sys.executable, __file__, "--ledger-rows", str(ledger_rows), "--generations", str(generations),
         "--seed", str(seed), "--database-url", f"sqlite:///{partial}"],
        check=True,
    )  # fmt: skip
    shutil.move(partial, path)
    return path


# --- the shape ---------------------------------------------------------------------------------------------


class Year:
    """Builds every row in memory (tuples in column order), then writes them table by table."""

    def __init__(self, *, ledger_rows: int, generations: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.ledger_target = ledger_rows
        self.generation_count = generations
        self.members = max(ledger_rows // 50, 10)
        self.order_count = max(ledger_rows // 10, 10)
        self.start = YEAR_END.timestamp() - YEAR
        self.accounts: dict[int, dict] = {}  # account id -> first/last time, name, owed
        self.ledger: list[
            list
        ] = []  # [time, account, delta, kind, voucher, generation, refund_of(index), clawback, memo]
        self.vouchers: list[tuple] = []
        self.orders: list[tuple] = []
        self.events: list[tuple] = []
        self.refunds: list[tuple] = []
        self.disputes: list[tuple] = []
        self.clawbacks: list[tuple] = []
        self.generations: list[tuple] = []
        weights = [1 / (k**1.1) for k in range(1, self.members + 1)]
        self.cumulative = list(itertools.accumulate(weights))

    # helpers
    def member(self) -> int:
        """An account id (1..members), Zipf-weighted: account 1 is the biggest."""
        return bisect.bisect_left(self.cumulative, self.rng.random() * self.cumulative[-1]) + 1

    def when(self) -> float:
        return self.start + self.rng.random() * YEAR

    def code(self) -> str:
        raw = "".join(self.rng.choice(ALPHABET) for _ in range(16))
        return "-".join(raw[i : i + 4] for i in range(0, 16, 4))

    def touch(self, account: int, t: float) -> None:
        a = self.accounts.setdefault(account, {"first": t, "last": t, "owed": 0})
        a["first"], a["last"] = min(a["first"], t), max(a["last"], t)

    def entry(self, t, account, delta, kind, voucher=None, generation=None, refund_of=None, clawback=None, memo=""):
        self.touch(account, t)
        self.ledger.append([t, account, delta, kind, voucher, generation, refund_of, clawback, memo])
        return len(self.ledger) - 1

    # builders
    def build(self, packs: list[tuple[int, int, int]]) -> None:
        self._orders(packs)
        self._generations()
        fixed = len(self.ledger)
        rewards = max(self.ledger_target - fixed - self.members - 200, 0)
        for _ in range(rewards):
            account = self.member() if self.rng.random() < 0.5 else self.rng.randint(1, self.members)
            self.entry(self.when(), account, self.rng.choice((1, 1, 2, 3)), "grant", memo="daily reward")
        for _ in range(200):
            account = self.member()
            self.entry(self.when(), account, -1, "debit", memo="duplicate reward taken back (by operator)")
        self._welcome_grants()

    def _orders(self, packs) -> None:
        rng = self.rng
        voucher_id = 0
        clawback_id = 0
        for order_id in range(1, self.order_count + 1):
            pack_id, credits, price = rng.choice(packs)
            t = self.when()
            account = self.member()
            roll = rng.random()
            status = "paid" if roll < 0.92 else ("expired" if roll < 0.97 else "pending")
            buyer = SNOWFLAKE + account if rng.random() < 0.7 else None
            email = f"buyer{account}@example.com"
            session = f"cs_test_{order_id:08d}{rng.getrandbits(64):016x}"
            intent = f"pi_{order_id:08d}{rng.getrandbits(48):012x}" if status == "paid" else ""
            paid_at = t + 30 if status == "paid" else None
            amount_refunded = 0
            if status != "paid":
                self.orders.append(
                    (order_id, pack_id, credits, price, "usd", session, intent, email, buyer, "", status, t, t, None,
                     None, "", 0, "")
                )  # fmt: skip
                continue
            voucher_id += 1
            code = self.code()
            self.events.append((f"evt_{order_id:08d}", "checkout.session.completed", paid_at, paid_at, 1, ""))
            redeemed = rng.random() < 0.97
            v_status, redeemed_by, redeemed_at, refunded_at = "active", None, None, None
            if redeemed:
                v_status, redeemed_by, redeemed_at = "redeemed", account, paid_at + rng.random() * 86400
                self.entry(redeemed_at, account, credits, "redeem", voucher=voucher_id, memo=f"Redeemed {code}")
                roll = rng.random()
                if roll < 0.013:  # refunded (a tenth of these leave a debt), or disputed
                    clawback_id += 1
                    at = redeemed_at + rng.random() * 14 * 86400
                    refunded_at = at
                    kind = (
                        "refund" if roll < 0.010 else ("lost" if roll < 0.011 else ("won" if roll < 0.012 else "open"))
                    )
                    owed = 0
                    if kind == "refund":
                        refund_id = f"re_{order_id:08d}"
                        cause = f"refund {refund_id}"
                        if rng.random() < 0.1:
                            owed = max(credits // 3, 1)
                            self.accounts.setdefault(account, {"first": at, "last": at, "owed": 0})
                        self.refunds.append((refund_id, order_id, price, "succeeded", credits, at, None, at))
                        status, amount_refunded = "refunded", price
                    else:
                        dispute_id = f"du_{order_id:08d}"
                        cause = f"dispute {dispute_id}"
                        d_status, state = {
                            "lost": ("lost", "final"), "won": ("won", "returned"), "open": ("needs_response", "frozen")
                        }[kind]  # fmt: skip
                        closed = at + 20 * 86400 if kind != "open" else None
                        self.disputes.append(
                            (dispute_id, order_id, d_status, "fraudulent", price, "usd", at + 10 * 86400, state,
                             credits, at, closed or at, closed)
                        )  # fmt: skip
                    taken = credits - owed
                    cb_status = "returned" if kind == "won" else "taken"
                    restored = taken if kind == "won" else 0
                    returned_at = at + 20 * 86400 if kind == "won" else None
                    self.clawbacks.append(
                        (clawback_id, voucher_id, cause, credits, cb_status, account, False, taken, owed, restored,
                         0, "", at, at, returned_at)
                    )  # fmt: skip
                    self.entry(at, account, -taken, "clawback", voucher=voucher_id, clawback=clawback_id, memo=cause)
                    if kind == "won":
                        self.entry(returned_at, account, taken, "restore", voucher=voucher_id, clawback=clawback_id,
                                   memo=f"{cause} won")  # fmt: skip
                    if owed:
                        repaid = rng.randint(0, owed)
                        self.accounts[account]["owed"] += owed - repaid
                        if repaid:
                            later = at + 86400
                            self.entry(later, account, repaid, "grant", memo="goodwill")
                            self.entry(later, account, -repaid, "repay", memo=f"repays {cause}")
            self.vouchers.append(
                (voucher_id, code, credits, v_status, order_id, redeemed_by, redeemed_at, refunded_at, "", paid_at)
            )
            self.orders.append(
                (order_id, pack_id, credits, price, "usd", session, intent, email, buyer, "", status, t,
                 refunded_at or paid_at, paid_at, price, "usd", amount_refunded, "")
            )  # fmt: skip
        # A few operator-issued vouchers, one of them voided.
        for i in range(3):
            voucher_id += 1
            status = "void" if i == 0 else "active"
            self.vouchers.append((voucher_id, self.code(), 50, status, None, None, None, None, "giveaway", self.when()))

    def _generations(self) -> None:
        rng = self.rng
        times = sorted(self.when() for _ in range(self.generation_count))
        in_flight_from = self.generation_count - 5
        for gid, t in enumerate(times, start=1):
            account = self.member()
            size, quality, unit = rng.choice(SIZES)
            count = rng.choices((1, 2, 4), weights=(85, 10, 5))[0]
            cost = unit * count
            roll = rng.random()
            started, finished, delivered_at = t + rng.random() * 2, None, None
            delivered_count, message_id, error, spend = None, None, "", None
            charge = self.entry(t, account, -cost, "generate", generation=gid, memo="")
            if gid > in_flight_from:
                status, started = ("queued", None) if gid % 2 else ("running", started)
            elif roll < 0.90 or (roll < 0.92 and count == 1):
                status, finished = "succeeded", started + 8 + rng.random() * 20
                delivered_at, message_id, spend = finished, 10**18 + gid, 42_000 * count
            elif roll < 0.92:
                status, finished = "succeeded", started + 15
                delivered_at, message_id, delivered_count, spend = finished, 10**18 + gid, count - 1, 42_000 * count
                self.entry(finished, account, unit, "refund", generation=gid, refund_of=charge, memo="partial delivery")
            else:
                status = "failed" if roll < 0.97 else "refunded"
                finished, error = started + 3, "The image service refused the prompt."
                self.entry(finished, account, cost, "refund", generation=gid, refund_of=charge, memo=error)
            prompt = f"{rng.choice(WORDS)}, {rng.choice(WORDS)} #{gid}"
            self.generations.append(
                (gid, account, prompt, size, quality, "gpt-image-1", cost, "generate", count, delivered_count,
                 rng.random() < 0.1, status, error, "", 10**18 + gid, 10**17 + 7, 10**17 + 8, message_id, spend, t,
                 started, delivered_at, finished)
            )  # fmt: skip

    def _welcome_grants(self) -> None:
        """One grant per member at their first activity, sized so their balance ends at least a few credits."""
        balance: dict[int, int] = dict.fromkeys(range(1, self.members + 1), 0)
        for row in self.ledger:
            balance[row[1]] += row[2]
        for account in range(1, self.members + 1):
            first = self.accounts.get(account, {}).get("first", self.when())
            amount = max(-balance[account], 0) + self.rng.randint(5, 50)
            self.entry(first - 60, account, amount, "grant", memo="welcome")

    # writing
    def write(self, connection) -> None:
        from discordbot.models import BotProcess, Generation, MemberSettings
        from storefront.models import Dispute, Order, Refund, StripeEvent
        from vouchers.models import Clawback, CreditAccount, LedgerEntry, Voucher

        pg = connection.vendor == "postgresql"

        def ts(t):
            if t is None:
                return None
            moment = datetime.fromtimestamp(t, UTC)
            return moment if pg else moment.strftime("%Y-%m-%d %H:%M:%S.%f")

        # The ledger in time order, ids in that order (a refund's origin is an earlier row).
        order = sorted(range(len(self.ledger)), key=lambda i: self.ledger[i][0])
        new_id = {old: new for new, old in enumerate(order, start=1)}
        balance: dict[int, int] = {}
        ledger_rows = []
        for i in order:
            t, account, delta, kind, voucher, generation, refund_of, clawback, memo = self.ledger[i]
            balance[account] = balance.get(account, 0) + delta
            ledger_rows.append(
                (new_id[i], account, delta, kind, voucher, generation,
                 new_id[refund_of] if refund_of is not None else None, clawback, memo, ts(t))
            )  # fmt: skip
        accounts = []
        for account in range(1, self.members + 1):
            a = self.accounts.get(account) or {"first": self.start, "last": self.start, "owed": 0}
            name = f"Member {account} (@member{account})" if account % 5 else ""
            accounts.append(
                (account, SNOWFLAKE + account, name, balance.get(account, 0), a["owed"], ts(a["first"] - 60),
                 ts(a["last"]))
            )  # fmt: skip
        assert min(b for b in balance.values()) >= 0

        def table(model, columns, rows, conv=()):
            conv = set(conv)
            # Columns added to a model after this seed was written (a new field with a default) get that default,
            # so the seed keeps working as the models grow.
            extra = [
                f
                for f in model._meta.concrete_fields
                if f.column not in columns and not f.null and not f.primary_key and f.has_default()
            ]
            defaults = tuple(f.get_db_prep_save(f.get_default(), connection) for f in extra)
            rows = [tuple(ts(v) if i in conv else v for i, v in enumerate(r)) + defaults for r in rows]
            insert(connection, model._meta.db_table, [*columns, *(f.column for f in extra)], rows)

        t0 = time.monotonic()
        table(CreditAccount, ["id", "discord_user_id", "discord_name", "balance", "owed", "created_at", "updated_at"],
              accounts)  # fmt: skip
        table(Order, ["id", "pack_id", "credits", "amount_cents", "currency", "stripe_session_id", "payment_intent_id",
                      "email", "discord_user_id", "discord_name", "status", "created_at", "updated_at", "paid_at",
                      "amount_paid", "currency_paid", "amount_refunded", "problem"],
              self.orders, conv=(11, 12, 13))  # fmt: skip
        table(Voucher, ["id", "code", "credits", "status", "order_id", "redeemed_by_id", "redeemed_at", "refunded_at",
                        "note", "created_at"], self.vouchers, conv=(6, 7, 9))  # fmt: skip
        table(Generation, ["id", "account_id", "prompt", "size", "quality", "model", "cost", "operation", "count",
                           "delivered_count", "private", "status", "error", "owner", "interaction_id", "guild_id",
                           "channel_id", "message_id", "image_spend_micros", "created_at", "started_at",
                           "delivered_at", "finished_at"], self.generations, conv=(19, 20, 21, 22))  # fmt: skip
        table(Clawback, ["id", "voucher_id", "cause", "credits", "status", "account_id", "voided", "taken", "owed",
                         "restored", "debt_cancelled", "memo", "created_at", "taken_at", "returned_at"],
              self.clawbacks, conv=(12, 13, 14))  # fmt: skip
        insert(connection, LedgerEntry._meta.db_table,
               ["id", "account_id", "delta", "kind", "voucher_id", "generation_id", "refund_of_id", "clawback_id",
                "memo", "created_at"], ledger_rows)  # fmt: skip
        table(Refund, ["stripe_refund_id", "order_id", "amount", "status", "credits", "applied_at", "failed_at",
                       "created_at"], self.refunds, conv=(5, 6, 7))  # fmt: skip
        table(Dispute, ["stripe_dispute_id", "order_id", "status", "reason", "amount", "currency", "evidence_due_by",
                        "credits_state", "credits_frozen", "created_at", "updated_at", "closed_at"], self.disputes,
              conv=(6, 9, 10, 11))  # fmt: skip
        table(StripeEvent, ["event_id", "type", "received_at", "processed_at", "attempts", "error"], self.events,
              conv=(2, 3))  # fmt: skip
        settings_rows = [
            (SNOWFLAKE + a, "1024x1024", "high" if a % 2 else "", 1 + a % 4, None, YEAR_END.timestamp())
            for a in range(1, self.members + 1, 20)
        ]
        table(MemberSettings, ["discord_user_id", "size", "quality", "count", "private", "updated_at"], settings_rows,
              conv=(5,))  # fmt: skip
        end = YEAR_END.timestamp()
        processes = [(f"bot-{i}", "ip-10-0-0-1", 100 + i, i == 3, end - 3600 * (4 - i), end, end + 30,
                      None if i == 3 else end) for i in range(4)]  # fmt: skip
        table(BotProcess, ["identity", "host", "pid", "active", "started_at", "heartbeat_at", "expires_at",
                           "stopped_at"], processes, conv=(4, 5, 6, 7))  # fmt: skip
        if pg:
            from django.core.management.color import no_style

            models = [CreditAccount, Order, Voucher, Generation, Clawback, LedgerEntry, Refund, Dispute, StripeEvent,
                      MemberSettings, BotProcess]  # fmt: skip
            with connection.cursor() as cursor:
                for sql in connection.ops.sequence_reset_sql(no_style(), models):
                    cursor.execute(sql)
                cursor.execute("ANALYZE")
        else:
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE")
        print(f"  wrote {len(ledger_rows):,} ledger rows in {time.monotonic() - t0:.0f} s", flush=True)


def insert(connection, table: str, columns: list[str], rows: list[tuple]) -> None:
    if not rows:
        return
    quoted = ", ".join(connection.ops.quote_name(c) for c in columns)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            with cursor.cursor.copy(f"COPY {connection.ops.quote_name(table)} ({quoted}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            return
        raw = cursor.cursor  # the driver's cursor: no per-row parameter rewriting
        sql = f'INSERT INTO "{table}" ({quoted}) VALUES ({", ".join("?" * len(columns))})'
        for start in range(0, len(rows), 50_000):
            raw.executemany(sql, rows[start : start + 50_000])


def seed(*, ledger_rows: int, generations: int, seed: int, if_empty: bool = False) -> None:
    from django.core.management import call_command
    from django.db import connection, transaction

    from storefront.models import CreditPack
    from vouchers.models import LedgerEntry

    call_command("migrate", verbosity=0)
    if LedgerEntry.objects.exists():
        if if_empty:
            print("  the database already holds a ledger: kept as it is")
            return
        raise SystemExit("The database already holds a ledger: seed an empty one.")
    started = time.monotonic()
    packs = list(CreditPack.objects.filter(active=True).values_list("pk", "credits", "price_cents"))
    year = Year(ledger_rows=ledger_rows, generations=generations, seed=seed)
    year.build(packs)
    print(f"  built {len(year.ledger):,} ledger rows in memory in {time.monotonic() - started:.0f} s", flush=True)
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA synchronous=OFF")  # a seed that fails is thrown away; no need to fsync
    with transaction.atomic():
        year.write(connection)
    print(f"  seeded in {time.monotonic() - started:.0f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ledger-rows", type=int, default=1_000_000)
    parser.add_argument("--generations", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database-url", default="", help="fill this database (default: the cached SQLite file)")
    parser.add_argument("--if-empty", action="store_true", help="with --database-url: keep a database already seeded")
    args = parser.parse_args()
    if not args.database_url:
        print(seeded_sqlite(ledger_rows=args.ledger_rows, generations=args.generations, seed=args.seed))
        return
    setup_django(args.database_url)
    seed(ledger_rows=args.ledger_rows, generations=args.generations, seed=args.seed, if_empty=args.if_empty)


if __name__ == "__main__":
    main()
