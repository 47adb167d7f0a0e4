"""The app's one TOP call quota, shared by every caller (docs/design.md#one-quota).

A leaky bucket (aiolimiter) of at most 20 ms of calls paces them, so no one-second window ever sees
more than `rate` calls: a bucket holding a whole second of calls would let them out at once
after any idle moment or ban, and TOP answers the excess with code-7 bans that lock the app out
(docs/sync-rules.md#pool-size). In front of it sits a priority queue: only one caller at a
time waits on the bucket, and whenever it gets through the most urgent waiter goes next, so stream
fetches overtake waiting backfill and sweep calls. `pause` holds everyone while a code-7 ban lasts:
a ban seen by any caller stops all of them, since every call made during a ban fails and is counted.

Several replicas share one app quota: each takes its share through `set_rate`, and a ban one of them
sees reaches the others through the pause listeners (`on_pause`), which hear the pauses this process
decides on (`announce=True`) and not the ones it was told about.
"""

from __future__ import annotations

import asyncio
import enum
import heapq
import itertools
import logging
import time
from collections.abc import Callable

from aiolimiter import AsyncLimiter

logger = logging.getLogger(__name__)


class Priority(enum.IntEnum):
    """Who gets the app's API quota first: the stream's fetches, then gap backfills, then routine
    sweeps. Lower goes first."""

    STREAM = 0
    BACKFILL = 1
    SWEEP = 2


PauseListener = Callable[[float], None]


# Calls leave a little under the configured rate: the request reaches TOP some jittery milliseconds
# after the limiter lets it go, and two calls squeezed together at a second's edge cost a ban.
PACING_MARGIN = 0.99


# At high rates a bucket of one starves: the loop wakes a sleeper a few milliseconds late and the slot
# is gone. A bucket of 20 ms of calls absorbs that lateness; its leak rate is lowered by the same
# amount, so a full bucket plus one second of leaking still stays within the rate.
SLACK_SECONDS = 0.02


def _bucket(rate: float) -> AsyncLimiter:
    capacity = max(1, int(rate * SLACK_SECONDS))
    leak = rate * PACING_MARGIN - (capacity - 1)
    return AsyncLimiter(capacity, capacity / leak)


class TopRateLimiter:
    """`rate` TOP calls per second for the whole app, served by priority, pausable."""

    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self._bucket = _bucket(rate)
        # The event loop's clock too (asyncio uses time.monotonic), so sleeps and deadlines agree.
        self._clock = time.monotonic
        self._queue: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._turn_taken = False
        self._paused_until = 0.0
        self._pause_listeners: list[PauseListener] = []

    @property
    def waiting(self) -> int:
        """Callers queued for their turn (not counting the one at the bucket)."""
        return sum(1 for _, _, turn in self._queue if not turn.done())

    def pause_remaining(self) -> float:
        """Seconds until the current pause ends (0 when not paused)."""
        return max(0.0, self._paused_until - self._clock())

    def pause(self, seconds: float, *, announce: bool = True) -> None:
        """Hold every caller for `seconds` from now. Overlapping pauses extend, never shorten.
        `announce=False`: a pause learned from elsewhere (another replica's ban), not passed on again."""
        until = self._clock() + max(0.0, seconds)
        if until > self._paused_until:
            self._paused_until = until
            logger.warning(
                "TOP calls paused for %.1f s",
                seconds,
                extra={"action": "top_limiter_paused", "seconds": seconds},
            )
        if announce and seconds > 0:
            for listener in self._pause_listeners:
                listener(seconds)

    def on_pause(self, listener: PauseListener) -> None:
        """Call `listener(seconds)` for every pause this process decides on (a ban it was answered)."""
        self._pause_listeners.append(listener)

    async def set_rate(self, rate: float) -> None:
        """Change the rate (a replica's share of the app's quota moves as replicas come and go). The new
        bucket starts full: a change never lets a burst through, calls go on at the new rate."""
        if rate <= 0:
            raise ValueError("rate must be positive")
        if rate == self.rate:
            return
        bucket = _bucket(rate)
        await bucket.acquire()  # returns at once: the new bucket starts full, so no burst follows
        self.rate = rate
        self._bucket = bucket

    async def acquire(self, priority: Priority = Priority.STREAM) -> None:
        """Wait for this caller's turn, any pause, and the bucket; then one call may go out."""
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._queue, (int(priority), next(self._order), turn))
        self._hand_over()
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                # The turn was handed to us just as we were cancelled: pass it on.
                self._release_turn()
            raise
        try:
            await self._wait_out_pause()
            await self._bucket.acquire()
            # A ban may have started while we waited for capacity.
            await self._wait_out_pause()
        finally:
            self._release_turn()

    async def _wait_out_pause(self) -> None:
        # Pauses only ever extend, so sleeping to the current end and looking again is enough.
        delay = self.pause_remaining()
        while delay > 0:
            await asyncio.sleep(delay)
            delay = self.pause_remaining()

    def _hand_over(self) -> None:
        if self._turn_taken:
            return
        while self._queue:
            _, _, turn = heapq.heappop(self._queue)
            if not turn.done():
                turn.set_result(None)
                self._turn_taken = True
                return

    def _release_turn(self) -> None:
        self._turn_taken = False
        self._hand_over()

    def __repr__(self) -> str:
        return (
            f"TopRateLimiter(rate={self.rate}, waiting={self.waiting}, "
            f"paused_for={self.pause_remaining():.1f}s)"
        )
