"""Django's SQLite backend, with writers queued on an OS file lock instead of SQLite's sleeping busy handler.

With `transaction_mode=IMMEDIATE` every transaction takes SQLite's write lock at BEGIN. A second writer that
finds it taken does not wait in a queue: SQLite's busy handler sleeps (1, 2, 5, 10, 15, 20, 25 ... 100 ms) and
tries again, so under contention a waiter oversleeps the few hundred microseconds a ledger transaction holds the
lock, falls behind the other process again and again, and the tail latency reaches tens of milliseconds.

Here each connection first takes an exclusive `flock` on `<database>-writer.lock` (beside the `-wal` and `-shm`
files), then BEGINs; commit or rollback releases it. The kernel queues blocked `flock` callers and wakes one as
soon as the holder lets go, from any thread or process, so writers hand the database over without sleeping.
SQLite's own locking still guards correctness: a writer that does not take the file lock (a write outside a
transaction, another program such as `sqlite3` or Litestream) is still serialised by SQLite, and the busy
timeout still applies to it.

A thread never waits on itself: if this thread already holds the lock through another connection (a second
database alias on the same file), BEGIN goes straight to SQLite, whose busy timeout then ends the wait with
"database is locked" as before, instead of blocking for ever.
"""

from __future__ import annotations

import fcntl
import os
import threading

from django.core.exceptions import ImproperlyConfigured
from django.db.backends.sqlite3 import base as sqlite3_base
from django.db.backends.sqlite3.base import Database

# UPDATE ... RETURNING, used by the ledger services (vouchers.services), arrived in SQLite 3.35.
MIN_SQLITE_VERSION = (3, 35)

_held_by_thread = threading.local()


class DatabaseWrapper(sqlite3_base.DatabaseWrapper):
    _writer_lock_fd: int | None = None
    _writer_lock_held = False

    def get_new_connection(self, conn_params):
        if Database.sqlite_version_info < MIN_SQLITE_VERSION:
            raise ImproperlyConfigured(
                f"SQLite {'.'.join(map(str, MIN_SQLITE_VERSION))} or later is required "
                f"(found {Database.sqlite_version})."
            )
        conn = super().get_new_connection(conn_params)
        self._writer_lock_release()
        if self._writer_lock_fd is not None:
            os.close(self._writer_lock_fd)
            self._writer_lock_fd = None
        name = str(self.settings_dict["NAME"])
        if self.transaction_mode in ("IMMEDIATE", "EXCLUSIVE") and not self.is_in_memory_db() and "?" not in name:
            self._writer_lock_fd = os.open(f"{name}-writer.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return conn

    def _start_transaction_under_autocommit(self):
        if self._writer_lock_fd is not None and not getattr(_held_by_thread, "count", 0):
            fcntl.flock(self._writer_lock_fd, fcntl.LOCK_EX)
            self._writer_lock_held = True
            _held_by_thread.count = 1
        try:
            if self.queries_logged or self.execute_wrappers or self.transaction_mode is None:
                super()._start_transaction_under_autocommit()  # through a cursor, seen by logging and wrappers
            else:
                with self.wrap_database_errors:  # the same statement without a cursor wrapper per transaction
                    self.connection.execute(f"BEGIN {self.transaction_mode}")
        except BaseException:
            self._writer_lock_release()
            raise

    def _writer_lock_release(self) -> None:
        if self._writer_lock_held:
            self._writer_lock_held = False
            _held_by_thread.count = 0
            fcntl.flock(self._writer_lock_fd, fcntl.LOCK_UN)

    def _commit(self):
        try:
            return super()._commit()
        finally:
            self._writer_lock_release()

    def _rollback(self):
        try:
            return super()._rollback()
        finally:
            self._writer_lock_release()

    def _close(self):
        try:
            return super()._close()
        finally:
            self._writer_lock_release()
            if self._writer_lock_fd is not None:
                os.close(self._writer_lock_fd)
                self._writer_lock_fd = None
