"""The app-wide limiter: rate, priority order, bans that pause everyone. Short real durations; waits
are on tasks or polled with deadlines."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from taobao.limiter import Priority, TopRateLimiter

DEADLINE = 5.0
HOLD_SECONDS = 1.0


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


async def drain(limiter: TopRateLimiter) -> None:
    """Use up the burst so that the next caller has to wait for the bucket."""
    for _ in range(int(limiter.rate)):
        await limiter.acquire()


def test_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        TopRateLimiter(0)


async def test_rate_is_enforced_after_the_burst() -> None:
    limiter = TopRateLimiter(20)
    await drain(limiter)
    started = time.monotonic()
    for _ in range(5):
        await limiter.acquire()
    elapsed = time.monotonic() - started
    assert 0.2 <= elapsed < 1.0  # 5 more calls at 20/s: about 0.25 s


@pytest.mark.parametrize("rate", [50, 400])
async def test_no_second_ever_holds_more_than_the_rate_even_after_a_pause(rate: int) -> None:
    # A bucket of a whole second would let `rate` calls out at once after the pause and again at the
    # refill: twice the rate in one second, which TOP answers with code-7 bans.
    limiter = TopRateLimiter(rate)
    times: list[float] = []
    for i in range(int(rate * 1.2)):
        if i == rate // 3:
            limiter.pause(0.2)
        await limiter.acquire()
        times.append(time.monotonic())
    for i, start in enumerate(times):
        in_window = sum(1 for t in times[i:] if t < start + 1.0)
        assert in_window <= rate


async def test_fractional_rate_serves_the_first_call_at_once() -> None:
    limiter = TopRateLimiter(0.5)
    started = time.monotonic()
    await limiter.acquire(Priority.SWEEP)
    assert time.monotonic() - started < 0.5


async def test_waiting_stream_callers_go_before_backfill_and_sweep() -> None:
    limiter = TopRateLimiter(20)
    # The first caller takes the turn and holds it through this pause, so every caller below is queued
    # before anyone gets through, however slow the machine: the tasks' first steps all run in the loop's
    # next iteration, long before the pause ends (a bucket refilling in 50 ms gave no such margin).
    limiter.pause(HOLD_SECONDS)
    served: list[str] = []

    async def caller(name: str, priority: Priority) -> None:
        await limiter.acquire(priority)
        served.append(name)

    tasks = [
        asyncio.create_task(caller(name, priority))
        for name, priority in [
            ("b1", Priority.BACKFILL),
            ("sweep", Priority.SWEEP),
            ("b2", Priority.BACKFILL),
            ("b3", Priority.BACKFILL),
            ("s1", Priority.STREAM),  # queued last
        ]
    ]
    await asyncio.sleep(0)  # runs after the tasks' first steps
    assert limiter.waiting == 4  # b1 holds the turn, the others wait for it
    assert served == []
    await asyncio.wait_for(asyncio.gather(*tasks), DEADLINE)
    # b1 was already holding the turn; after it the stream caller overtakes everyone.
    assert served == ["b1", "s1", "b2", "b3", "sweep"]


async def test_pause_holds_every_caller_until_the_ban_ends() -> None:
    limiter = TopRateLimiter(100)
    limiter.pause(0.3)
    assert 0.25 < limiter.pause_remaining() <= 0.3
    started = time.monotonic()
    await asyncio.wait_for(
        asyncio.gather(limiter.acquire(Priority.STREAM), limiter.acquire(Priority.SWEEP)), DEADLINE
    )
    assert time.monotonic() - started >= 0.29
    assert limiter.pause_remaining() == 0


async def test_shorter_ban_never_shortens_a_longer_one() -> None:
    limiter = TopRateLimiter(100)
    limiter.pause(0.4)
    limiter.pause(0.1)
    assert limiter.pause_remaining() > 0.3
    started = time.monotonic()
    await asyncio.wait_for(limiter.acquire(), DEADLINE)
    assert time.monotonic() - started >= 0.39


async def test_ban_during_a_wait_extends_it() -> None:
    limiter = TopRateLimiter(100)
    started = time.monotonic()
    limiter.pause(0.2)
    waiter = asyncio.create_task(limiter.acquire())
    await until(lambda: limiter.waiting == 0, "the caller to take its turn")
    assert not waiter.done()
    limiter.pause(0.4)
    await asyncio.wait_for(waiter, DEADLINE)
    assert time.monotonic() - started >= 0.39


async def test_cancelled_callers_do_not_block_the_queue() -> None:
    limiter = TopRateLimiter(100)
    limiter.pause(0.2)
    holder = asyncio.create_task(limiter.acquire(Priority.STREAM))
    await until(lambda: limiter.waiting == 0 and not holder.done(), "the holder to take its turn")
    queued = asyncio.create_task(limiter.acquire(Priority.STREAM))
    last = asyncio.create_task(limiter.acquire(Priority.SWEEP))
    await until(lambda: limiter.waiting == 2, "two queued callers")
    queued.cancel()
    holder.cancel()
    await asyncio.wait_for(last, DEADLINE)
    assert queued.cancelled()
    assert holder.cancelled()
    assert limiter.waiting == 0
    # and the limiter still serves new callers
    await asyncio.wait_for(limiter.acquire(), DEADLINE)
