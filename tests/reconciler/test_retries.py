"""When the reconciler tries again (reconciler/retries.py): a partial report's schedule, on the service's
one backoff, and database work retried past lost connections."""

from __future__ import annotations

import random

import pytest

from common.backoff import BackoffPolicy
from reconciler.retries import RetrySchedule, db_policy, retrying_db
from store.errors import StoreError


class Monotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_partial_report_waits_a_growing_jittered_delay_up_to_the_cap() -> None:
    clock = Monotonic()
    schedule = RetrySchedule(BackoffPolicy(base=1.0, cap=8.0), clock=clock, rng=random.Random(7))
    assert schedule.due(1)  # never failed: due at once
    delays = [schedule.failed(1) for _ in range(6)]
    steps = [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    for delay, step in zip(delays, steps, strict=True):
        assert step / 2 <= delay <= step  # "equal jitter": never less than half the step
    assert not schedule.due(1)
    clock.now += delays[-1]
    assert schedule.due(1)
    assert schedule.due(2)  # reports keep their own schedules


def test_a_report_that_is_done_starts_again_from_the_first_delay() -> None:
    clock = Monotonic()
    schedule = RetrySchedule(BackoffPolicy(base=1.0, cap=8.0), clock=clock)
    for _ in range(4):
        schedule.failed(1)
    schedule.forget(1)
    assert schedule.due(1)
    assert schedule.failed(1) <= 1.0


def test_rounds_set_the_first_delay_and_the_cap_the_longest() -> None:
    schedule = RetrySchedule.for_rounds(10.0, 300.0)
    assert (schedule.policy.base, schedule.policy.cap) == (10.0, 300.0)
    short_cap = RetrySchedule.for_rounds(10.0, 2.0)  # a cap below one round: a round it is
    assert (short_cap.policy.base, short_cap.policy.cap) == (2.0, 2.0)
    assert (db_policy(300.0).base, db_policy(300.0).cap) == (0.2, 5.0)
    assert db_policy(0.1).cap == 0.1


async def test_database_work_is_retried_past_store_errors_and_given_up_after_its_attempts() -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise StoreError("connection was closed in the middle of operation")
        return "recorded"

    assert await retrying_db("test_write", flaky, policy=db_policy(5.0), sleep=sleep) == "recorded"
    assert calls == 3
    assert len(waits) == 2

    async def down() -> None:
        raise StoreError("the database is gone")

    with pytest.raises(StoreError):
        await retrying_db("test_write", down, policy=db_policy(5.0), sleep=sleep, attempts=4)
    assert len(waits) == 2 + 3  # four tries, three waits between them

    async def defect() -> None:
        raise ValueError("not a database error")

    with pytest.raises(ValueError, match="not a database error"):
        await retrying_db("test_write", defect, policy=db_policy(5.0), sleep=sleep)
    assert len(waits) == 5
