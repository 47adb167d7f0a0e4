"""The one delay schedule and the one retry loop."""

from __future__ import annotations

import random

import pytest

from common.backoff import Backoff, BackoffPolicy, retrying


def test_delays_grow_to_the_cap_with_equal_jitter_and_reset() -> None:
    backoff = Backoff(BackoffPolicy(base=0.5, cap=4.0, factor=2.0), random.Random(1))
    steps = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    delays = [backoff.next_delay() for _ in steps]
    assert all(step / 2 <= delay <= step for step, delay in zip(steps, delays, strict=True))
    assert backoff.attempts == len(steps)
    backoff.reset()
    assert backoff.attempts == 0
    assert 0.25 <= backoff.next_delay() <= 0.5


async def test_retrying_retries_the_chosen_errors_and_gives_up_after_attempts() -> None:
    calls = 0
    waits: list[float] = []
    seen: list[tuple[str, int]] = []

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError(f"try {calls}")
        return "done"

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    policy = BackoffPolicy(base=0.1, cap=0.4)
    result = await retrying(
        flaky,
        retry_on=ConnectionError,
        policy=policy,
        sleep=sleep,
        on_retry=lambda exc, attempt, _delay: seen.append((str(exc), attempt)),
    )
    assert result == "done"
    assert seen == [("try 1", 1), ("try 2", 2)]
    assert len(waits) == 2
    assert 0.05 <= waits[0] <= 0.1
    assert 0.1 <= waits[1] <= 0.2

    calls = 0
    with pytest.raises(ConnectionError, match="try 2"):
        await retrying(flaky, retry_on=ConnectionError, policy=policy, attempts=2, sleep=sleep)
    assert calls == 2

    async def broken() -> None:
        raise ValueError("a defect is not retried")

    with pytest.raises(ValueError, match="defect"):
        await retrying(broken, retry_on=ConnectionError, policy=policy, sleep=sleep)
