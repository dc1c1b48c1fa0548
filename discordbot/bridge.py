"""The one way the bot touches the database: `await run_service(fn, **kwargs)`.

Django's ORM is synchronous and refuses to run on a thread with a running event loop. `run_service` runs a sync
service function on a small dedicated thread pool, so the event loop never blocks on the database, and calls
`close_old_connections()` before and after, as Django does around each web request: the bot is a long-running
process, so connections past CONN_MAX_AGE or broken by a database restart must be dropped, not reused.
"""

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections, connections

P = ParamSpec("P")
R = TypeVar("R")

# Each worker thread keeps its own database connection; every service call is one short transaction. On SQLite one
# transaction writes at a time and a thread that finds the write lock taken polls for it with growing sleeps
# (SQLite's busy handler), so fewer threads wait less per call (a reservation's mean went from ~360 ms to ~80 ms
# under 50 concurrent /generate with 2 threads instead of 8). But with 2, a reservation (which gates the first
# response and its 3 s) queues behind other requests' calls: in one run on the loaded 2-core machine, 2 threads missed
# Discord's 3 s for 13 of 150 requests where 8 missed none, with no clear gain in wall time
# (bench/bot_concurrency.py). So 8 stays the default; BOT_DB_THREADS sets another number.
DEFAULT_DB_THREADS = 8
_executor: ThreadPoolExecutor | None = None


def db_threads() -> int:
    """How many database threads the bot uses (BOT_DB_THREADS, else 8)."""
    return settings.BOT_DB_THREADS if settings.BOT_DB_THREADS > 0 else DEFAULT_DB_THREADS


def _pool() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=db_threads(), thread_name_prefix="bot-db")
    return _executor


def _call_with_fresh_connections(fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    close_old_connections()
    try:
        return fn(*args, **kwargs)
    finally:
        close_old_connections()


async def run_service(fn: Callable[..., R], /, **kwargs) -> R:
    """Run a sync service (keyword arguments only) on the database threads and return its result."""
    return await sync_to_async(_call_with_fresh_connections, thread_sensitive=False, executor=_pool())(fn, **kwargs)


def _close_thread_connections(barrier: threading.Barrier) -> None:
    connections.close_all()
    # Hold this worker until every other worker has closed its connections too, so that each of the
    # calls lands on a different thread.
    barrier.wait(timeout=10)


async def close_db_connections() -> None:
    """Close the connection each database thread holds. Call once the bot has stopped (and in tests)."""
    pool = _pool()
    threads = pool._max_workers
    barrier = threading.Barrier(threads)
    loop = asyncio.get_running_loop()
    calls = [loop.run_in_executor(pool, _close_thread_connections, barrier) for _ in range(threads)]
    await asyncio.gather(*calls, return_exceptions=True)
