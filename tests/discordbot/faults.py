"""Database faults for the bot's tests: make matching SQL statements fail (a "database is locked" hiccup) or stall
(a slow database), at the database driver boundary, so every layer above it runs for real."""

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from django.db import OperationalError
from django.db.backends import utils


@dataclass
class Fault:
    matches: Callable[[str, object], bool]
    times: int
    delay: float = 0.0  # stall this long first
    fail: bool = True  # then raise (else run the statement)
    hits: int = 0


class DatabaseFaults:
    def __init__(self) -> None:
        self.faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(
        self, matches: Callable[[str, object], bool], *, times: int = 1, delay: float = 0.0, fail: bool = True
    ) -> Fault:
        fault = Fault(matches, times, delay, fail)
        with self._lock:
            self.faults.append(fault)
        return fault

    def take(self, sql: str, params: object) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.hits < fault.times and fault.matches(sql, params):
                    fault.hits += 1
                    return fault
        return None


@contextmanager
def database_faults(monkeypatch) -> Iterator[DatabaseFaults]:
    faults = DatabaseFaults()
    execute = utils.CursorWrapper._execute

    def faulty_execute(self, sql, params, *ignored):
        fault = faults.take(sql, params)
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            if fault.fail:
                raise OperationalError("database is locked (injected by the test)")
        return execute(self, sql, params, *ignored)

    monkeypatch.setattr(utils.CursorWrapper, "_execute", faulty_execute)
    yield faults


def updates_generation_to(status: str) -> Callable[[str, object], bool]:
    """Matches the UPDATE that moves a generation to `status` (sets it; not one that only tests for it)."""
    return lambda sql, params: (
        sql.startswith('UPDATE "discordbot_generation" SET "status" = %s') and bool(params) and params[0] == status
    )


def reads_account_of(discord_user_id: int) -> Callable[[str, object], bool]:
    """Matches a SELECT on a member's credit account."""
    return lambda sql, params: (
        sql.startswith("SELECT") and '"vouchers_creditaccount"' in sql and discord_user_id in (params or ())
    )
