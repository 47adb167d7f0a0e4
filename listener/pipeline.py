"""The stream's path from a TMC message to its confirm, and its bounded stop.

    channel (listener.session) ──submit──▶ Dispatcher ──next_work──▶ WorkerPool ──add──▶ CommitBatcher
          ▲                                                                                │ apply_trades
          └───────────────────── confirm / fail (only after the commit) ◀──────────────────┘

Read in this order: `listener.session` (socket, codec, CONNECT, pulls, acks), `listener.dispatcher`
(which trade a message is about, by `listener.trade_events`; per-tid coalescing, bounded holding;
its confirms and fails sent by `listener.acks`),
`listener.workers` (fullinfo), `listener.batcher` (the commit, then the confirms). `StreamPipeline`
builds them from a `PipelineConfig`, starts their tasks, and stops them in one bounded drain
(docs/design.md#graceful-stop): close intake, let in-flight work finish for `drain_seconds`, cancel the
fetches, commit what was fetched, hand unfinished messages back to the server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import SecretStr

from common.backoff import BackoffPolicy
from common.tasks import cancel_and_wait, wait_or_cancel
from listener.batcher import STORE_RETRY, CommitBatcher
from listener.capacity import DEFAULT_MAX_FETCHED_BYTES, DEFAULT_MAX_HELD_BYTES
from listener.dispatcher import Dispatcher
from listener.metrics import ListenerMetrics, MeasuredStore
from listener.ports import MessageChannel, MessageHandler, MessageWatch, TradeFetcher, TradeStore
from listener.workers import TradeLag, WorkerPool
from store.fetch_apply import REDRIVE_POLICY

log = logging.getLogger(__name__)

ChannelFactory = Callable[[MessageHandler], MessageChannel]
# Starts a named task whose end the caller watches for (the daemon's supervisor).
StartTask = Callable[[str, Coroutine[Any, Any, None]], "asyncio.Task[None]"]

# After the drain budget, how long the last commit and the channel's close may still take.
CLOSE_GRACE_SECONDS: Final = 5.0


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    max_events: int  # messages held at most (SYNC_MAX_EVENTS): the backpressure bound
    batch_size: int  # trades per commit at most
    batch_delay: float  # seconds the first trade of a batch may wait for company
    workers: int  # concurrent fullinfo fetches
    drain_seconds: float  # graceful-stop budget for in-flight work
    max_held_bytes: int = DEFAULT_MAX_HELD_BYTES  # and their content's memory (SYNC_MAX_HELD_BYTES)
    # fetched trades waiting for their commit (SYNC_MAX_FETCHED_BYTES): fetching pauses beyond it
    max_fetched_bytes: int = DEFAULT_MAX_FETCHED_BYTES
    store_retry: BackoffPolicy = STORE_RETRY
    lag: TradeLag = field(default_factory=TradeLag)  # how long a trade not there yet is waited for
    redrive: BackoffPolicy = REDRIVE_POLICY  # when an unresolved trade is tried again


class StreamPipeline:
    def __init__(
        self,
        config: PipelineConfig,
        *,
        channel_factory: ChannelFactory,
        sessions: Mapping[str, SecretStr],
        fetcher: TradeFetcher,
        store: TradeStore,
        metrics: ListenerMetrics,
        watch: MessageWatch | None = None,
    ) -> None:
        self.config = config
        store = MeasuredStore(store, metrics)  # every commit is timed and counted for /metrics
        self.dispatcher = Dispatcher(
            sessions=sessions,
            store=store,
            max_events=config.max_events,
            max_bytes=config.max_held_bytes,
            metrics=metrics,
            watch=watch,
        )
        # The channel delivers each message to the dispatcher, and the dispatcher confirms or fails it
        # through the channel.
        self.channel = channel_factory(self.dispatcher.submit)
        self.dispatcher.settle_through(self.channel)
        self.batcher = CommitBatcher(
            store=store,
            settler=self.dispatcher,
            max_size=config.batch_size,
            max_delay=config.batch_delay,
            metrics=metrics,
            max_fetched_bytes=config.max_fetched_bytes,
            retry=config.store_retry,
            redrive=config.redrive,
        )
        self.pool = WorkerPool(
            dispatcher=self.dispatcher,
            fetcher=fetcher,
            batcher=self.batcher,
            store=store,
            size=config.workers,
            metrics=metrics,
            lag=config.lag,
            redrive=config.redrive,
        )
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, start_task: StartTask) -> None:
        """Run the channel, the commit batcher and the fetch workers as tasks started by `start_task`
        (which watches that none of them ends before `drain()`)."""
        self._tasks = {
            "channel": start_task("tmc-channel", self.channel.run()),
            "batcher": start_task("commit-batcher", self.batcher.run()),
            "workers": start_task("fetch-workers", self.pool.run()),
        }

    async def wait_idle(self, idle_seconds: float) -> None:
        """Until the channel has delivered nothing for `idle_seconds` and everything received is
        settled (burst mode)."""
        dispatcher = self.dispatcher
        while True:
            await dispatcher.wait_settled()
            seen = dispatcher.intake_count
            try:
                async with asyncio.timeout(idle_seconds):
                    await dispatcher.wait_activity()
            except TimeoutError:
                if dispatcher.intake_count == seen and dispatcher.is_settled:
                    return

    async def drain(self, hurry: asyncio.Event) -> None:
        """Stop within `drain_seconds` plus the close grace; once `hurry` is set (a second stop
        request) only the grace for the last commit is left."""
        loop = asyncio.get_running_loop()
        dispatcher = self.dispatcher
        started = loop.time()
        deadline = started + self.config.drain_seconds
        held_at_stop = dispatcher.held_count
        dispatcher.close_intake()
        log.info(
            "intake closed; draining %d messages (%d fetching, %d tids queued, %d trades in the batch)",
            held_at_stop,
            dispatcher.in_flight_count,
            dispatcher.queued_count,
            self.batcher.pending_count,
            extra={"action": "drain_started"},
        )
        drained = await self._wait_settled(deadline, hurry)
        if hurry.is_set():
            deadline = loop.time()

        # Whatever is still fetching is abandoned; trades already fetched still get their commit.
        await cancel_and_wait(self._tasks["workers"])
        self.batcher.close()
        await wait_or_cancel(self._tasks["batcher"], max(deadline - loop.time(), 0.0) + CLOSE_GRACE_SECONDS)

        unfinished = dispatcher.held_count
        # Handing them back now lets the server redeliver them soon (to another consumer, or after restart).
        await dispatcher.leave_unconfirmed(dispatcher.held_ids(), "shutdown", "service stopping")
        dispatcher.release_parked()
        self.channel.stop()
        await wait_or_cancel(self._tasks["channel"], CLOSE_GRACE_SECONDS)
        log.info(
            "stopped after %.1f s: %d of %d messages settled, %d handed back unconfirmed, "
            "%d deliveries refused at intake%s",
            loop.time() - started,
            held_at_stop - unfinished,
            held_at_stop,
            unfinished,
            dispatcher.parked_count,
            "" if drained else " (drain budget exhausted)",
            extra={"action": "service_stopped"},
        )

    async def _wait_settled(self, deadline: float, hurry: asyncio.Event) -> bool:
        """Until nothing is held, the drain budget runs out, or `hurry` is set; whether all settled."""
        settled = asyncio.ensure_future(self.dispatcher.wait_settled())
        hurried = asyncio.ensure_future(hurry.wait())
        try:
            timeout = max(0.0, deadline - asyncio.get_running_loop().time())
            await asyncio.wait({settled, hurried}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (settled, hurried):
                waiter.cancel()
            await asyncio.gather(settled, hurried, return_exceptions=True)
        return self.dispatcher.is_settled
