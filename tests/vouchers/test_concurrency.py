"""Races with real threads and real processes on the real test database (a file for SQLite, or PostgreSQL).

Every racer opens its own connection first, then waits at a barrier (threads) or for a start file
(processes), so the contested calls really overlap. Each racer records every exception it meets, and the
tests assert the exact set of outcome types: a "database is locked" OperationalError or an IntegrityError
from the CHECK constraint would show up as an unexpected type, not vanish.
"""

import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, connections

from discordbot.models import Generation
from tests.vouchers.conftest import child_database_url
from vouchers import services
from vouchers.errors import AlreadyRefunded, InsufficientCredits, VoucherAlreadyRedeemed, VoucherVoid
from vouchers.models import Clawback, CreditAccount, LedgerEntry, Voucher
from vouchers.selectors import account_balance

pytestmark = pytest.mark.django_db(transaction=True)

REPO = Path(__file__).resolve().parents[2]
ALICE = 111_111_111_111_111_111
JOIN_TIMEOUT_S = 120


def member(n: int) -> int:
    return 900_000_000_000_000_000 + n


# --- racing helpers --------------------------------------------------------------------------------------


def attempt(call: Callable[..., Any], **kwargs: Any) -> Any:
    """The call's result, or the exception it raised (any exception: the test decides which are allowed)."""
    try:
        return call(**kwargs)
    except Exception as exc:  # noqa: BLE001
        return exc


def race_threads(count: int, work: Callable[[int], list[Any]]) -> list[Any]:
    """Run `work(i)` in `count` threads started together; the flat list of every step's outcome."""
    barrier = threading.Barrier(count, timeout=JOIN_TIMEOUT_S)
    results: list[list[Any]] = [[] for _ in range(count)]

    def racer(index: int) -> None:
        try:
            connection.ensure_connection()  # connect before the race, so the race is on the service call
            barrier.wait()
            results[index] = work(index)
        except Exception as exc:  # noqa: BLE001 - a crashed racer is an outcome the test sees
            results[index] = [exc]
        finally:
            connections.close_all()

    threads = [threading.Thread(target=racer, args=(i,), name=f"racer-{i}") for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT_S)
    assert not any(thread.is_alive() for thread in threads), "a racer thread hung"
    return [outcome for steps in results for outcome in steps]


def race_processes(plans: list[list[dict[str, Any]]], tmp_path: Path) -> list[dict[str, Any]]:
    """Run one racer process per plan against this test's database, started together; every step's outcome."""
    start_file = tmp_path / "start"
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="tests.settings", DATABASE_URL=child_database_url())
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.vouchers.racer", json.dumps({"start_file": str(start_file), "steps": plan})],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for plan in plans
    ]
    try:
        for process in processes:
            ready = process.stdout.readline().strip()
            assert ready == "READY", f"racer did not start: {ready!r} {process.stderr.read()}"
        start_file.touch()
        outcomes = []
        for process in processes:
            out, err = process.communicate(timeout=JOIN_TIMEOUT_S)
            assert process.returncode == 0, err
            outcomes.extend(json.loads(out.strip().splitlines()[-1]))
        return outcomes
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()


def kinds(outcomes: list[Any]) -> Counter:
    """Outcome types: "ok" for a success, else the exception's class name (from a thread or a process)."""
    counted: Counter = Counter()
    for outcome in outcomes:
        if isinstance(outcome, dict):
            counted["ok" if "ok" in outcome else outcome["error"].rsplit(".", 1)[-1]] += 1
        elif isinstance(outcome, BaseException):
            counted[type(outcome).__name__] += 1
        else:
            counted["ok"] += 1
    return counted


class BalanceWatcher:
    """Samples one account's balance throughout a race, to catch a negative value in passing.

    It pauses a fraction of a millisecond between reads: a thread spinning on the ORM hogs the GIL, so the
    racer that holds SQLite's write lock waits for the GIL at every step, its transaction stretches from
    about a millisecond to tens, and with 200 racers queued the last ones outwait the 20 s busy timeout.
    (That is a property of one process crowded with Python threads, not of the services: the same race
    from separate processes, below, has no such effect.)
    """

    def __init__(self, discord_user_id: int) -> None:
        self.discord_user_id = discord_user_id
        self.samples: list[int] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="balance-watcher")

    def _watch(self) -> None:
        try:
            while not self._stop.is_set():
                self.samples.append(account_balance(discord_user_id=self.discord_user_id))
                time.sleep(0.0005)
        except Exception as exc:  # noqa: BLE001
            self.errors.append(exc)
        finally:
            connections.close_all()

    def __enter__(self) -> "BalanceWatcher":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(JOIN_TIMEOUT_S)
        assert not self.errors, self.errors
        assert self.samples, "the watcher never read the balance"
        assert min(self.samples) >= 0, f"a negative balance was visible: {min(self.samples)}"


def debit_thread_count() -> int:
    # 200 threads each make one debit on SQLite; PostgreSQL's default limit of 100 connections allows 50
    # threads making four debits each. Either way 200 debits race for 100 credits.
    return 200 if connection.vendor == "sqlite" else 50


# --- redeeming one voucher -------------------------------------------------------------------------------


def test_fifty_threads_redeeming_one_voucher_exactly_one_wins(assert_audit_clean) -> None:
    voucher = services.voucher_issue(credits=40)

    outcomes = race_threads(
        50, lambda i: [attempt(services.voucher_redeem, code=voucher.code, discord_user_id=member(i))]
    )

    assert kinds(outcomes) == {"ok": 1, "VoucherAlreadyRedeemed": 49}
    winner = next(o for o in outcomes if isinstance(o, services.Redemption))
    stored = Voucher.objects.get(pk=voucher.pk)
    assert stored.status == Voucher.Status.REDEEMED
    assert stored.redeemed_by.balance == winner.balance == 40
    assert LedgerEntry.objects.filter(kind="redeem").count() == 1
    assert sum(CreditAccount.objects.values_list("balance", flat=True)) == 40
    assert_audit_clean()


@pytest.mark.slow
def test_fifty_attempts_from_ten_processes_redeeming_one_voucher_exactly_one_wins(tmp_path, assert_audit_clean) -> None:
    voucher = services.voucher_issue(credits=40)
    plans = [
        [
            {
                "service": "voucher_redeem",
                "kwargs": {"code": voucher.code.lower(), "discord_user_id": member(p * 5 + a)},
            }
            for a in range(5)
        ]
        for p in range(10)
    ]

    outcomes = race_processes(plans, tmp_path)

    assert kinds(outcomes) == {"ok": 1, "VoucherAlreadyRedeemed": 49}
    assert [o["ok"] for o in outcomes if "ok" in o] == [40]
    assert LedgerEntry.objects.filter(kind="redeem").count() == 1
    assert sum(CreditAccount.objects.values_list("balance", flat=True)) == 40
    assert_audit_clean()


def test_one_new_member_redeeming_twenty_vouchers_at_once_gets_one_account_with_all_of_them(
    assert_audit_clean,
) -> None:
    vouchers = [services.voucher_issue(credits=n + 1) for n in range(20)]

    outcomes = race_threads(
        20, lambda i: [attempt(services.voucher_redeem, code=vouchers[i].code, discord_user_id=ALICE)]
    )

    assert kinds(outcomes) == {"ok": 20}
    assert CreditAccount.objects.filter(discord_user_id=ALICE).count() == 1
    assert account_balance(discord_user_id=ALICE) == sum(range(1, 21))
    assert_audit_clean()


# --- debiting one balance --------------------------------------------------------------------------------


def test_two_hundred_debits_from_threads_against_a_balance_of_100_exactly_100_succeed(assert_audit_clean) -> None:
    services.credits_grant(discord_user_id=ALICE, amount=100, memo="seed")
    threads = debit_thread_count()
    per_thread = 200 // threads

    with BalanceWatcher(ALICE):
        outcomes = race_threads(
            threads,
            lambda i: [attempt(services.credits_reserve, discord_user_id=ALICE, amount=1) for _ in range(per_thread)],
        )

    assert len(outcomes) == 200
    assert kinds(outcomes) == {"ok": 100, "InsufficientCredits": 100}
    assert all(isinstance(o, (LedgerEntry, InsufficientCredits)) for o in outcomes)
    assert account_balance(discord_user_id=ALICE) == 0
    assert LedgerEntry.objects.filter(kind="generate").count() == 100
    assert_audit_clean()


@pytest.mark.slow
def test_two_hundred_debits_from_eight_processes_against_a_balance_of_100_exactly_100_succeed(
    tmp_path, assert_audit_clean
) -> None:
    services.credits_grant(discord_user_id=ALICE, amount=100, memo="seed")
    plans = [
        [{"service": "credits_reserve", "kwargs": {"discord_user_id": ALICE, "amount": 1}} for _ in range(25)]
        for _ in range(8)
    ]

    with BalanceWatcher(ALICE):
        outcomes = race_processes(plans, tmp_path)

    assert kinds(outcomes) == {"ok": 100, "InsufficientCredits": 100}
    assert {o["error"] for o in outcomes if "error" in o} == {"vouchers.errors.InsufficientCredits"}
    assert account_balance(discord_user_id=ALICE) == 0
    assert LedgerEntry.objects.filter(kind="generate").count() == 100
    assert_audit_clean()


def test_debits_of_different_sizes_never_overdraw(assert_audit_clean) -> None:
    services.credits_grant(discord_user_id=ALICE, amount=100, memo="seed")
    sizes = [random.Random(i).randint(1, 9) for i in range(40)]

    with BalanceWatcher(ALICE):
        outcomes = race_threads(
            40, lambda i: [attempt(services.credits_reserve, discord_user_id=ALICE, amount=sizes[i])]
        )

    assert set(kinds(outcomes)) <= {"ok", "InsufficientCredits"}
    spent = sum(-o.delta for o in outcomes if isinstance(o, LedgerEntry))
    refused = [sizes[i] for i, o in enumerate(outcomes) if isinstance(o, InsufficientCredits)]
    balance = account_balance(discord_user_id=ALICE)
    assert balance == 100 - spent >= 0
    # A refusal is only right if that debit really did not fit in what was left at the end.
    assert all(size > balance for size in refused)
    assert_audit_clean()


# --- grants, debits and refunds together -----------------------------------------------------------------


def mixed_work(seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    steps: list[dict[str, Any]] = []
    for _ in range(8):
        choice = rng.random()
        if choice < 0.5:
            steps.append(
                {"service": "credits_reserve", "kwargs": {"discord_user_id": ALICE, "amount": rng.randint(1, 6)}}
            )
        elif choice < 0.75:
            steps.append(
                {
                    "service": "credits_grant",
                    "kwargs": {"discord_user_id": ALICE, "amount": rng.randint(1, 4), "memo": "m"},
                }
            )
        else:
            steps.append({"service": "refund_last_reservation"})
    return steps


def run_mixed_in_thread(plan: list[dict[str, Any]]) -> list[Any]:
    outcomes: list[Any] = []
    reservations: list[int] = []
    for step in plan:
        if step["service"] == "credits_reserve":
            outcome = attempt(services.credits_reserve, **step["kwargs"])
            if isinstance(outcome, LedgerEntry):
                reservations.append(outcome.pk)
        elif step["service"] == "credits_grant":
            outcome = attempt(services.credits_grant, **step["kwargs"])
        elif reservations:
            outcome = attempt(services.credits_refund, entry_id=reservations.pop())
        else:
            continue
        outcomes.append(outcome)
    return outcomes


def assert_mixed_outcomes_add_up(start: int, deltas: list[int], outcome_kinds: Counter) -> None:
    assert set(outcome_kinds) <= {"ok", "InsufficientCredits"}, outcome_kinds
    assert outcome_kinds["ok"] > 0 and outcome_kinds["InsufficientCredits"] > 0, "the mix did not contend"
    assert account_balance(discord_user_id=ALICE) == start + sum(deltas)


def test_threads_granting_debiting_and_refunding_at_once_keep_the_books(assert_audit_clean) -> None:
    services.credits_grant(discord_user_id=ALICE, amount=20, memo="seed")
    plans = [mixed_work(seed) for seed in range(30)]

    with BalanceWatcher(ALICE):
        outcomes = race_threads(30, lambda i: run_mixed_in_thread(plans[i]))

    deltas = [o.delta for o in outcomes if isinstance(o, LedgerEntry)]
    assert_mixed_outcomes_add_up(20, deltas, kinds(outcomes))
    assert_audit_clean()


@pytest.mark.slow
def test_processes_granting_debiting_and_refunding_at_once_keep_the_books(tmp_path, assert_audit_clean) -> None:
    services.credits_grant(discord_user_id=ALICE, amount=20, memo="seed")
    plans = [mixed_work(seed) for seed in range(8)]

    outcomes = race_processes(plans, tmp_path)

    deltas = [o["ok"] for o in outcomes if o.get("ok") is not None]
    assert_mixed_outcomes_add_up(20, deltas, kinds([o for o in outcomes if o != {"ok": None}]))
    assert_audit_clean()


def test_racing_refunds_of_the_same_charges_refund_each_exactly_once(assert_audit_clean) -> None:
    services.credits_grant(discord_user_id=ALICE, amount=50, memo="seed")
    account = CreditAccount.objects.get(discord_user_id=ALICE)
    charges = []
    for n in range(10):
        generation = Generation.objects.create(account=account, prompt=f"p{n}", cost=5, status="failed")
        charges.append(services.credits_reserve(discord_user_id=ALICE, amount=5, generation_id=generation.pk).pk)

    def refund_all(i: int) -> list[Any]:
        order = random.Random(i).sample(charges, len(charges))
        return [attempt(services.credits_refund, entry_id=charge) for charge in order]

    outcomes = race_threads(20, refund_all)

    assert kinds(outcomes) == {"ok": 10, "AlreadyRefunded": 190}
    assert all(isinstance(o, (LedgerEntry, AlreadyRefunded)) for o in outcomes)
    assert account_balance(discord_user_id=ALICE) == 50
    assert_audit_clean()


def test_a_payment_refund_racing_redeemers_leaves_no_credit_behind(assert_audit_clean) -> None:
    vouchers = [services.voucher_issue(credits=10 + n) for n in range(10)]

    def work(i: int) -> list[Any]:
        voucher = vouchers[i % 10]
        if i < 10:
            return [attempt(services.voucher_claw_back, voucher_id=voucher.pk, credits=voucher.credits, cause=f"r{i}")]
        return [attempt(services.voucher_redeem, code=voucher.code, discord_user_id=member(i))]

    outcomes = race_threads(40, work)

    allowed = (Clawback, services.Redemption, VoucherVoid, VoucherAlreadyRedeemed)
    assert all(isinstance(o, allowed) for o in outcomes), [o for o in outcomes if not isinstance(o, allowed)]
    for voucher in Voucher.objects.all():
        assert voucher.refunded_at is not None
        clawed = -sum(voucher.ledger_entries.filter(kind="clawback").values_list("delta", flat=True))
        if voucher.status == Voucher.Status.REDEEMED:
            assert clawed == voucher.credits
        else:
            assert voucher.status == Voucher.Status.VOID
            assert not voucher.ledger_entries.exists()
    assert sum(CreditAccount.objects.values_list("balance", flat=True)) == 0
    assert_audit_clean()


def test_a_clawback_racing_the_members_queued_generations_and_their_refunds_leaves_nothing(assert_audit_clean) -> None:
    """Issue 7, finding 2, as a race: the member's reservations and their refunds run while the refund lands."""
    voucher = services.voucher_issue(credits=60)
    services.voucher_redeem(code=voucher.code, discord_user_id=ALICE)
    account = CreditAccount.objects.get(discord_user_id=ALICE)

    def work(i: int) -> list[Any]:
        if i == 20:
            return [attempt(services.voucher_claw_back, voucher_id=voucher.pk, credits=60, cause="refund re_race")]
        charge = attempt(services.credits_reserve, discord_user_id=ALICE, amount=3)
        if not isinstance(charge, LedgerEntry):
            return [charge]
        return [charge, attempt(services.credits_refund, entry_id=charge.pk)]  # the job fails: refunded

    outcomes = race_threads(21, work)

    allowed = (Clawback, LedgerEntry, InsufficientCredits)
    assert all(isinstance(o, allowed) for o in outcomes), [o for o in outcomes if not isinstance(o, allowed)]
    account.refresh_from_db()
    # Every reservation came back, yet nothing the refunded purchase paid for is spendable or unpaid.
    assert (account.balance, account.owed) == (0, 0)
    assert_audit_clean()
