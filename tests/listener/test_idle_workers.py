"""A queued tid wakes one idle worker, not all of them; a wake-up given to a worker cancelled before it
ran passes on to another."""

from __future__ import annotations

import asyncio

from listener.idle import IdleWorkers


async def _settle() -> None:
    for _ in range(5):  # a few loop turns: the woken task runs, the others would too if woken
        await asyncio.sleep(0)


async def test_one_wake_up_wakes_exactly_one_of_the_idle_workers() -> None:
    idle = IdleWorkers()
    woken: list[int] = []

    async def worker(number: int) -> None:
        await idle.wait()
        woken.append(number)

    tasks = [asyncio.create_task(worker(n)) for n in range(3)]
    await _settle()
    idle.wake_one()
    await _settle()
    assert woken == [0]  # the longest-waiting one
    idle.wake_one()
    idle.wake_one()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert woken == [0, 1, 2]


async def test_a_wake_up_for_a_worker_cancelled_before_it_ran_goes_to_another() -> None:
    idle = IdleWorkers()
    first = asyncio.create_task(idle.wait())
    await _settle()
    second = asyncio.create_task(idle.wait())
    await _settle()
    idle.wake_one()  # picks `first`...
    first.cancel()  # ...which is cancelled before it runs
    await asyncio.wait_for(second, 5)
    assert first.cancelled()


async def test_a_wake_up_with_nobody_waiting_is_not_kept() -> None:
    idle = IdleWorkers()
    idle.wake_one()
    waiter = asyncio.create_task(idle.wait())
    await _settle()
    assert not waiter.done()  # it waits for the next tid, like a worker arriving late
    idle.wake_one()
    await asyncio.wait_for(waiter, 5)
