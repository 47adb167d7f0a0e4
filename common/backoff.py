"""Waiting before trying again: one delay schedule and one retry loop for the whole service.

The schedule is the `backoff` library's exponential generator (base·factorⁿ, capped) with "equal
jitter" (half fixed, half random), so many restarting daemons do not retry in step and no wait is
shorter than half its step. `retrying` is the one loop that retries an async operation on chosen
errors; the TMC session drives a `Backoff` itself, since only a connection that stayed up a while
(`reset_after`) may reset its delay: an accept-then-drop server must not cause a tight reconnect loop.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

import backoff

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    base: float = 1.0
    cap: float = 60.0
    factor: float = 2.0
    # A connection must stay up this long before the next reconnect starts again from `base`.
    reset_after: float = 30.0
    # The least wait after a refused TMC CONNECT. The refusal codes are not documented, so every
    # refusal is treated as a possible credential problem and retried slowly.
    refusal_floor: float = 30.0

    def __post_init__(self) -> None:
        if self.base <= 0 or self.cap < self.base or self.factor < 1:
            raise ValueError("backoff needs 0 < base <= cap and factor >= 1")


class Backoff:
    """The delay sequence of one policy. `attempts` counts the delays handed out since the last reset."""

    def __init__(self, policy: BackoffPolicy, rng: random.Random | None = None) -> None:
        self.policy = policy
        self.attempts = 0
        self._rng = rng or random.Random()
        self._steps = self._schedule()

    def _schedule(self) -> Generator[float, Any, None]:
        policy = self.policy
        steps = backoff.expo(base=policy.factor, factor=policy.base, max_value=policy.cap)
        next(steps)  # the library's generators are primed before their first value
        return steps

    def next_delay(self) -> float:
        ceiling = min(next(self._steps), self.policy.cap)
        self.attempts += 1
        return _jittered(ceiling, self._rng)

    def reset(self) -> None:
        self.attempts = 0
        self._steps = self._schedule()


def delay_after(policy: BackoffPolicy, attempt: int, rng: random.Random | None = None) -> float:
    """The delay a `Backoff` of `policy` hands out as its `attempt`-th (1-based), for schedules kept
    outside the process (a count of attempts stored in the database) rather than in a `Backoff`."""
    if attempt < 1:
        raise ValueError("attempts are counted from 1")
    # base·factorⁿ without overflowing: past the cap it is the cap.
    ceiling = policy.base
    for _ in range(attempt - 1):
        ceiling *= policy.factor
        if ceiling >= policy.cap:
            break
    return _jittered(min(ceiling, policy.cap), rng or random.Random())


def _jittered(ceiling: float, rng: random.Random) -> float:
    """Equal jitter: half fixed, half random."""
    half = ceiling / 2
    return half + rng.uniform(0, half)


RetryHook = Callable[[BaseException, int, float], None]


async def retrying(
    operation: Callable[[], Awaitable[T]],
    *,
    retry_on: type[BaseException] | tuple[type[BaseException], ...],
    policy: BackoffPolicy,
    attempts: int | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    on_retry: RetryHook | None = None,
) -> T:
    """`await operation()` until it returns, waiting a `policy` delay after each `retry_on` error;
    with `attempts`, the error of the last attempt is raised. `on_retry(error, attempt, delay)` is
    called before each wait (for a log line)."""
    delays = Backoff(policy)
    while True:
        try:
            return await operation()
        except retry_on as exc:
            if attempts is not None and delays.attempts + 1 >= attempts:
                raise
            delay = delays.next_delay()
            if on_retry is not None:
                on_retry(exc, delays.attempts, delay)
            await sleep(delay)
