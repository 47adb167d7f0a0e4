"""Idle fetch workers, each waiting on its own future: a queued tid wakes one worker, not every idle
one (one shared event woke them all, and all but one went back to sleep: a fixed cost per change that
dominated at moderate rates, docs/performance.md#steady-rates)."""

from __future__ import annotations

import asyncio
from collections import deque


class IdleWorkers:
    def __init__(self) -> None:
        self._waiting: deque[asyncio.Future[None]] = deque()

    async def wait(self) -> None:
        """Until `wake_one` picks this caller."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.wake_one()  # woken, then cancelled: the work goes to another worker
            raise

    def wake_one(self) -> None:
        """Wake the longest-waiting worker, if any waits."""
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
