"""The dispatcher, worker pool and batcher wired to the fakes, without the service around them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from pydantic import SecretStr

from listener.batcher import Backoff, CommitBatcher
from listener.dispatcher import Dispatcher
from listener.metrics import ListenerMetrics
from listener.workers import WorkerPool
from taobao.tmc.events import TmcMessage
from tests.listener.fakes import FakeChannel, FakeFetcher, FakeStore, Journal

FAST_BACKOFF = Backoff(base=0.001, cap=0.005)


@dataclass
class Pipeline:
    journal: Journal
    fetcher: FakeFetcher
    store: FakeStore
    channel: FakeChannel
    metrics: ListenerMetrics
    dispatcher: Dispatcher
    batcher: CommitBatcher
    pool: WorkerPool
    tasks: list[asyncio.Task[None]]

    async def deliver(self, *messages: TmcMessage) -> None:
        for msg in messages:
            await self.channel.deliver(msg)

    async def settled(self) -> None:
        async with asyncio.timeout(5):
            await self.dispatcher.wait_settled()

    def start(self) -> None:
        if not self.tasks:
            self.tasks.append(asyncio.create_task(self.batcher.run(), name="test-batcher"))
            self.tasks.append(asyncio.create_task(self.pool.run(), name="test-workers"))

    def assert_invariants(self) -> None:
        assert self.journal.violations == []


@asynccontextmanager
async def pipeline(
    *,
    shops: Sequence[str] = ("shop-a", "shop-b"),
    max_events: int = 100,
    batch_size: int = 10,
    batch_ms: int = 0,
    workers: int = 2,
    start: bool = True,
) -> AsyncIterator[Pipeline]:
    journal = Journal()
    fetcher = FakeFetcher(journal)
    store = FakeStore(journal)
    metrics = ListenerMetrics()
    holder: list[Dispatcher] = []

    async def handler(msg: TmcMessage) -> None:
        await holder[0].submit(msg)

    channel = FakeChannel(handler, journal)
    dispatcher = Dispatcher(
        sessions={shop: SecretStr(f"session-of-{shop}") for shop in shops},
        store=store,
        acker=channel,
        max_events=max_events,
        metrics=metrics,
    )
    holder.append(dispatcher)
    batcher = CommitBatcher(
        store=store,
        settler=dispatcher,
        max_size=batch_size,
        max_delay=batch_ms / 1000,
        metrics=metrics,
        backoff=FAST_BACKOFF,
    )
    pool = WorkerPool(
        dispatcher=dispatcher, fetcher=fetcher, batcher=batcher, store=store, size=workers, metrics=metrics
    )
    pipe = Pipeline(journal, fetcher, store, channel, metrics, dispatcher, batcher, pool, [])
    if start:
        pipe.start()
    try:
        yield pipe
    finally:
        for task in pipe.tasks:
            task.cancel()
        await asyncio.gather(*pipe.tasks, return_exceptions=True)
    pipe.assert_invariants()
