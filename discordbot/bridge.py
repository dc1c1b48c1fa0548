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
from django.db import close_old_connections, connections

P = ParamSpec("P")
R = TypeVar("R")

# Each worker thread keeps its own database connection. A handful is plenty: every service call is one short
# transaction, and more threads would only queue up on SQLite's single write lock.
MAX_DB_THREADS = 8
_executor = ThreadPoolExecutor(max_workers=MAX_DB_THREADS, thread_name_prefix="bot-db")


def _call_with_fresh_connections(fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    close_old_connections()
    try:
        return fn(*args, **kwargs)
    finally:
        close_old_connections()


async def run_service(fn: Callable[..., R], /, **kwargs) -> R:
    """Run a sync service (keyword arguments only) on the database threads and return its result."""
    return await sync_to_async(_call_with_fresh_connections, thread_sensitive=False, executor=_executor)(fn, **kwargs)


def _close_thread_connections(barrier: threading.Barrier) -> None:
    connections.close_all()
    # Hold this worker until every other worker has closed its connections too, so that each of the
    # MAX_DB_THREADS calls lands on a different thread.
    barrier.wait(timeout=10)


async def close_db_connections() -> None:
    """Close the connection each database thread holds. Call once the bot has stopped (and in tests)."""
    barrier = threading.Barrier(MAX_DB_THREADS)
    loop = asyncio.get_running_loop()
    calls = [loop.run_in_executor(_executor, _close_thread_connections, barrier) for _ in range(MAX_DB_THREADS)]
    await asyncio.gather(*calls, return_exceptions=True)
