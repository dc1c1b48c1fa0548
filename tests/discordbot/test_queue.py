"""The line generations wait in (`discordbot.queue.GenerationQueue`): caps, fairness, positions, timeouts."""

import asyncio

import pytest

from discordbot.queue import GenerationQueue, QueueTimeout


def run(coro):
    return asyncio.run(coro)


def test_limits_must_be_positive():
    with pytest.raises(ValueError):
        GenerationQueue(global_limit=0, per_member_limit=1)


def test_starts_at_once_under_both_caps_and_queues_beyond_them():
    queue = GenerationQueue(global_limit=2, per_member_limit=1)
    a1, b1, a2, c1 = (queue.enter(m) for m in (1, 2, 1, 3))

    assert (a1.started, b1.started, a2.started, c1.started) == (True, True, False, False)
    assert (queue.position(a2), queue.position(c1)) == (1, 2)

    queue.leave(b1)  # a global slot frees up; member 1 is still at their cap, so member 3 goes first
    assert c1.started and not a2.started
    queue.leave(a1)
    assert a2.started
    assert (queue.running, queue.waiting) == (2, 0)


def test_oldest_eligible_request_starts_first():
    queue = GenerationQueue(global_limit=1, per_member_limit=5)
    running = queue.enter(1)
    waiting = [queue.enter(m) for m in (2, 3, 4)]
    for i, ticket in enumerate(waiting):
        queue.leave(running)
        assert [t.started for t in waiting[i:]] == [True] + [False] * (len(waiting) - i - 1)
        assert queue.running == 1
        running = ticket


def test_leaving_the_line_moves_everyone_behind_up():
    queue = GenerationQueue(global_limit=1, per_member_limit=1)
    queue.enter(1)
    second, third = queue.enter(2), queue.enter(3)
    queue.leave(second)
    assert queue.position(third) == 1
    queue.leave(second)  # twice is harmless
    assert queue.waiting == 1


def test_slot_reports_positions_as_they_change_and_frees_the_slot_on_exit():
    async def scenario():
        queue = GenerationQueue(global_limit=1, per_member_limit=1)
        holders = [queue.enter(m) for m in (1, 2)]  # one running, one waiting
        seen: list[int] = []

        async def report(position: int) -> None:
            seen.append(position)

        async def waiter():
            async with queue.slot(3, on_wait=report, min_report_interval=0):
                return queue.running

        task = asyncio.create_task(waiter())
        await asyncio.sleep(0.01)
        queue.leave(holders[0])  # holder 2 starts; we move to #1
        await asyncio.sleep(0.01)
        queue.leave(holders[1])  # our turn
        running = await task
        return seen, running, queue.running

    seen, running_inside, running_after = run(scenario())
    assert seen == [2, 1]
    assert (running_inside, running_after) == (1, 0)


def test_position_reports_are_throttled_but_the_latest_is_shown():
    async def scenario():
        queue = GenerationQueue(global_limit=1, per_member_limit=1)
        holders = [queue.enter(m) for m in (1, 2, 3, 4)]
        seen: list[int] = []

        async def report(position: int) -> None:
            seen.append(position)

        task = asyncio.create_task(queue.slot(9, on_wait=report, min_report_interval=0.2).__aenter__())
        await asyncio.sleep(0.01)
        for holder in holders[:3]:  # three moves up within the interval
            queue.leave(holder)
        await asyncio.sleep(0.3)
        queue.leave(holders[3])
        await task
        return seen

    assert run(scenario()) == [4, 1]


def test_slot_times_out_and_gives_its_place_back():
    async def scenario():
        queue = GenerationQueue(global_limit=1, per_member_limit=1)
        queue.enter(1)
        with pytest.raises(QueueTimeout):
            async with queue.slot(2, timeout=0.05):
                pass
        return queue.waiting

    assert run(scenario()) == 0


def test_cancelled_waiter_gives_its_place_back():
    async def scenario():
        queue = GenerationQueue(global_limit=1, per_member_limit=1)
        holder = queue.enter(1)

        async def wait():
            async with queue.slot(2):
                pass

        task = asyncio.create_task(wait())
        await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        queue.leave(holder)
        return queue.waiting, queue.running

    assert run(scenario()) == (0, 0)
