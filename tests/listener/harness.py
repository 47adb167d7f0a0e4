"""The stream pipeline (dispatcher, worker pool, batcher) on the fakes, without the service around it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from common.backoff import BackoffPolicy
from listener.batcher import CommitBatcher
from listener.capacity import DEFAULT_MAX_HELD_BYTES
from listener.dispatcher import Dispatcher
from listener.metrics import ListenerMetrics
from listener.pipeline import PipelineConfig, StreamPipeline
from listener.workers import TradeLag, WorkerPool
from taobao.tmc.events import TmcMessage
from tests.listener.fakes import FakeChannel, FakeFetcher, FakeStore, Journal

FAST_BACKOFF = BackoffPolicy(base=0.001, cap=0.005)


@dataclass
class Pipeline:
    journal: Journal
    fetcher: FakeFetcher
    store: FakeStore
    metrics: ListenerMetrics
    stream: StreamPipeline
    tasks: list[asyncio.Task[None]]
    sessions: dict[str, SecretStr]

    @property
    def channel(self) -> FakeChannel:
        assert isinstance(self.stream.channel, FakeChannel)
        return self.stream.channel

    @property
    def dispatcher(self) -> Dispatcher:
        return self.stream.dispatcher

    @property
    def batcher(self) -> CommitBatcher:
        return self.stream.batcher

    @property
    def pool(self) -> WorkerPool:
        return self.stream.pool

    async def deliver(self, *messages: TmcMessage) -> None:
        for msg in messages:
            await self.channel.deliver(msg)

    async def settled(self) -> None:
        async with asyncio.timeout(5):
            await self.dispatcher.wait_settled()

    def start(self) -> None:
        if not self.tasks:
            self.stream.start(self._start_task)

    def _start_task(self, name: str, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=f"test-{name}")
        self.tasks.append(task)
        return task

    def assert_invariants(self) -> None:
        assert self.journal.violations == []


@asynccontextmanager
async def pipeline(
    *,
    shops: Sequence[str] = ("shop-a", "shop-b"),
    max_events: int = 100,
    max_held_bytes: int = DEFAULT_MAX_HELD_BYTES,
    batch_size: int = 10,
    batch_ms: int = 0,
    workers: int = 2,
    start: bool = True,
    lag: TradeLag | None = None,
) -> AsyncIterator[Pipeline]:
    journal = Journal()
    # Read live by the dispatcher, as the daemon's shop book is: a test may renew a session in place.
    sessions = {shop: SecretStr(f"session-of-{shop}") for shop in shops}
    fetcher = FakeFetcher(journal)
    store = FakeStore(journal)
    metrics = ListenerMetrics()
    config = PipelineConfig(
        max_events=max_events,
        max_held_bytes=max_held_bytes,
        batch_size=batch_size,
        batch_delay=batch_ms / 1000,
        workers=workers,
        drain_seconds=5.0,
        store_retry=FAST_BACKOFF,
        # By default a trade fullinfo does not know is not waited for (tests of the lag say otherwise).
        lag=lag or TradeLag(allowance=0.0, retry=FAST_BACKOFF),
    )
    stream = StreamPipeline(
        config,
        channel_factory=lambda handler: FakeChannel(handler, journal),
        sessions=sessions,
        fetcher=fetcher,
        store=store,
        metrics=metrics,
    )
    pipe = Pipeline(journal, fetcher, store, metrics, stream, [], sessions)
    if start:
        pipe.start()
    try:
        yield pipe
    finally:
        for task in pipe.tasks:
            task.cancel()
        await asyncio.gather(*pipe.tasks, return_exceptions=True)
    pipe.assert_invariants()
