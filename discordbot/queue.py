"""The line accepted generations wait in: a global cap and a per-member cap, first come first served.

This is the pair of semaphores the design asks for (MAX_CONCURRENT_GENERATIONS overall, GENERATIONS_PER_MEMBER
each), written as one small scheduler so a waiting request can be told its place in line. A request blocked only
by its own member's cap does not hold up other members behind it; among the requests that may start, the oldest
starts first. Everything runs on the event loop thread, so no locks are needed.
"""

import asyncio
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager


class Ticket:
    """One request's place in line."""

    __slots__ = ("member_id", "started", "_changed")

    def __init__(self, member_id: int) -> None:
        self.member_id = member_id
        self.started = False
        self._changed = asyncio.Event()


class QueueTimeout(Exception):
    """The request waited longer than it may."""


class GenerationQueue:
    def __init__(self, *, global_limit: int, per_member_limit: int) -> None:
        if global_limit < 1 or per_member_limit < 1:
            raise ValueError("Both limits must be at least 1.")
        self.global_limit = global_limit
        self.per_member_limit = per_member_limit
        self._waiting: list[Ticket] = []
        self._running = 0
        self._running_by_member: Counter[int] = Counter()

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def enter(self, member_id: int) -> Ticket:
        """Join the line; the ticket has `started` set at once when a slot is free."""
        ticket = Ticket(member_id)
        self._waiting.append(ticket)
        self._schedule()
        return ticket

    def try_enter(self, member_id: int) -> Ticket | None:
        """A started ticket if a slot is free now and nobody is waiting (so nobody is overtaken); else None, and
        the member is not in line. The caller gives the slot back with `leave` (or hands it to `slot`)."""
        if self._waiting:
            return None
        ticket = self.enter(member_id)
        if ticket.started:
            return ticket
        self.leave(ticket)
        return None

    def leave(self, ticket: Ticket) -> None:
        """Give the slot back (or the place in line, for a ticket that never started). Safe to call twice."""
        if ticket.started:
            ticket.started = False
            self._running -= 1
            self._running_by_member[ticket.member_id] -= 1
            if not self._running_by_member[ticket.member_id]:
                del self._running_by_member[ticket.member_id]
            self._schedule()
        elif ticket in self._waiting:
            self._waiting.remove(ticket)
            self._notify_waiting()  # everyone behind it moved up

    def position(self, ticket: Ticket) -> int:
        """1 for the next in line; 0 once started."""
        return 0 if ticket.started else self._waiting.index(ticket) + 1

    async def wait_for_change(self, ticket: Ticket, timeout: float | None) -> None:
        """Return when the ticket starts or its position changes (or after `timeout` seconds)."""
        if ticket.started:
            return
        try:
            await asyncio.wait_for(ticket._changed.wait(), timeout)
        except TimeoutError:
            pass
        ticket._changed.clear()

    @asynccontextmanager
    async def slot(
        self,
        member_id: int,
        *,
        timeout: float | None = None,
        on_wait: Callable[[int], Awaitable[None]] | None = None,
        min_report_interval: float = 1.0,
        show_places: int | None = None,
        ticket: Ticket | None = None,
    ) -> AsyncIterator[Ticket]:
        """Wait for a slot and hold it for the block (`ticket`: one from `try_enter`, already started).

        While waiting, `on_wait(position)` is awaited when the position changes, at most once per
        `min_report_interval` seconds (the latest position is reported once the interval has passed). With
        `show_places`, positions further back are reported only once, on entering the line: every report is a
        Discord edit, and a long line must not turn into a storm of them.
        Raises QueueTimeout after `timeout` seconds in line.
        """
        ticket = ticket or self.enter(member_id)
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            reported, reported_at = 0, -math.inf
            while not ticket.started:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    raise QueueTimeout()
                wait = None if deadline is None else deadline - now
                position = self.position(ticket)
                worth_reporting = reported == 0 or show_places is None or position <= show_places
                if on_wait is not None and position != reported and worth_reporting:
                    due = reported_at + min_report_interval
                    if now >= due:
                        await on_wait(position)
                        reported, reported_at = position, time.monotonic()
                        continue
                    wait = due - now if wait is None else min(wait, due - now)
                await self.wait_for_change(ticket, wait)
            yield ticket
        finally:
            self.leave(ticket)

    def _schedule(self) -> None:
        started_any = False
        for ticket in list(self._waiting):
            if self._running >= self.global_limit:
                break
            if self._running_by_member[ticket.member_id] >= self.per_member_limit:
                continue
            self._waiting.remove(ticket)
            ticket.started = True
            self._running += 1
            self._running_by_member[ticket.member_id] += 1
            ticket._changed.set()
            started_any = True
        if started_any:
            self._notify_waiting()  # everyone still waiting moved up the line

    def _notify_waiting(self) -> None:
        for ticket in self._waiting:
            ticket._changed.set()
