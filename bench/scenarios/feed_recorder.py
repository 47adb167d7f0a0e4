"""An independent ERP consumer (examples/erp_consumer.py: LISTEN + catch-up by position) that records
every change-feed row it receives and the wall-clock instant it received it."""

from __future__ import annotations

import asyncio
import contextlib
import time

import asyncpg

from bench.scenarios.verdict import Arrival
from examples.erp_consumer import Change, ErpConsumer


class FeedRecorder:
    def __init__(self, dsn: str, channel: str) -> None:
        self.arrivals: list[Arrival] = []
        # Short probes and backoffs: a scenario kills connections on purpose and should not wait
        # out production-sized timers to see the consumer recover.
        self.consumer = ErpConsumer(
            dsn, channel, self._on_change, name="scenario",
            idle_probe_seconds=5, backoff_initial_seconds=0.2, backoff_max_seconds=2, stable_after_seconds=5,
        )  # fmt: skip
        self._task: asyncio.Task[None] | None = None

    async def _on_change(self, _conn: asyncpg.Connection, change: Change) -> None:
        self.arrivals.append(
            Arrival(change.position, change.tid, change.modified, change.status, change.source, time.time())
        )

    @property
    def cursor(self) -> int:
        return self.consumer.cursor

    def start(self) -> None:
        self._task = asyncio.create_task(self.consumer.run(), name="scenario-erp-consumer")

    async def stop(self) -> None:
        self.consumer.stop()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                async with asyncio.timeout(10):
                    await self._task
