"""The listener daemon, composed from its parts by constructor injection.

    channel (TMC session) ──submit──▶ Dispatcher ──next_work──▶ WorkerPool ──add──▶ CommitBatcher
          ▲                                                                          │ apply_trades
          └──────────────────── confirm / fail (only after the commit) ◀─────────────┘

`Service.run()` supervises the channel, the workers, the batcher and any side tasks (the reconciler)
and serves /healthz, /readyz and /metrics. A stop request (a signal through `serve()`, the idle watch
in burst mode, or a dying task) leads to one bounded shutdown: close intake, let in-flight work finish
for SYNC_DRAIN_SECONDS, cancel the rest, hand unfinished messages back to the server, log the counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from common.errors import OrderSyncError
from common.health import Check
from daemon.health import HttpServer, Ping, check_channel, check_postgres
from daemon.logs import configure_logging
from daemon.metrics import DaemonMetrics
from daemon.settings import EXIT_BAD_SETTINGS, Settings, SettingsError, load_settings
from daemon.supervisor import Supervisor, TaskFailure, stop_signals
from listener.batcher import Backoff, CommitBatcher
from listener.dispatcher import Dispatcher
from listener.metrics import MeasuredStore
from listener.ports import MessageChannel, MessageHandler, TradeFetcher, TradeStore
from listener.workers import WorkerPool
from taobao.tmc.events import TmcMessage

log = logging.getLogger(__name__)

ChannelFactory = Callable[[MessageHandler], MessageChannel]
SideTask = Callable[[], Coroutine[Any, Any, None]]
# A readiness check kept by another part (the replica set): its verdict and what /readyz shows of it.
ExtraCheck = Callable[[], tuple[Check, dict[str, Any]]]

EXIT_OK = 0
EXIT_FAILED = 1
# After the drain budget, how long the last flush and the channel's close may still take.
CLOSE_GRACE_SECONDS = 5.0


class ServiceFailed(OrderSyncError):
    """A supervised task died; the daemon stopped. The message says which task and why."""


class Service:
    def __init__(
        self,
        settings: Settings,
        *,
        fetcher: TradeFetcher,
        store: TradeStore,
        channel_factory: ChannelFactory,
        side_tasks: Mapping[str, SideTask] | None = None,
        metrics: DaemonMetrics | None = None,
        store_backoff: Backoff | None = None,
        db_ping: Ping | None = None,
        extra_checks: Mapping[str, ExtraCheck] | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or DaemonMetrics()
        self._db_ping = db_ping  # for /readyz; None: no database check
        self._extra_checks = dict(extra_checks or {})
        store = MeasuredStore(store, self.metrics.stream)
        self.channel = channel_factory(self._on_message)
        self.dispatcher = Dispatcher(
            sessions=settings.shop_sessions(),
            store=store,
            acker=self.channel,
            max_events=settings.sync_max_events,
            metrics=self.metrics.stream,
        )
        self.batcher = CommitBatcher(
            store=store,
            settler=self.dispatcher,
            max_size=settings.sync_batch_size,
            max_delay=settings.sync_batch_ms / 1000,
            metrics=self.metrics.stream,
            backoff=store_backoff,
        )
        self.pool = WorkerPool(
            dispatcher=self.dispatcher,
            fetcher=fetcher,
            batcher=self.batcher,
            store=store,
            size=settings.worker_count(),
            metrics=self.metrics.stream,
        )
        self._side_tasks = dict(side_tasks or {})
        self._supervisor = Supervisor(self._task_failed)
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self._http: HttpServer | None = None
        self.state = "created"  # → running → draining → stopped
        self.stop_reason: str | None = None

    async def _on_message(self, message: TmcMessage) -> None:
        await self.dispatcher.submit(message)

    # ------------------------------------------------------------------------------ control

    def request_stop(self, reason: str = "requested") -> None:
        """Begin a graceful stop; a second request skips the rest of the drain."""
        if self._stop.is_set():
            log.warning(
                "second stop request (%s): skipping the drain", reason, extra={"action": "stop_forced"}
            )
            self._force.set()
            return
        self.stop_reason = reason
        log.info("stop requested: %s", reason, extra={"action": "stop_requested"})
        self._supervisor.expect_end()
        self._stop.set()

    def _task_failed(self, failure: TaskFailure) -> None:
        if not self._stop.is_set():
            self.request_stop(failure.describe())

    @property
    def http_port(self) -> int | None:
        return self._http.port if self._http else None

    async def run_until_idle(self, idle_seconds: float = 1.0) -> None:
        """Burst mode: run until the channel has delivered nothing for `idle_seconds` and everything
        received is committed and confirmed (or otherwise settled), then stop gracefully."""
        await self.run(burst=True, idle_seconds=idle_seconds)

    async def run(self, *, burst: bool = False, idle_seconds: float = 1.0) -> None:
        """Run until a stop request; raises ServiceFailed when a supervised task died. If this call is
        cancelled, the tasks are cancelled too; a store write in progress still completes and is
        confirmed (the batcher shields it)."""
        if self.state != "created":
            raise RuntimeError("a Service runs once")
        settings = self.settings
        supervisor = self._supervisor
        self._http = HttpServer(self, settings.http_host, settings.http_port)
        try:
            await self._http.start()
        except OSError as exc:
            self.state = "stopped"
            raise ServiceFailed(
                f"cannot listen on {settings.http_host}:{settings.http_port} ({exc.strerror or exc}); "
                "set HTTP_HOST/HTTP_PORT"
            ) from None
        log.info(
            "listener running: %d shops, %d fetch workers, http on %s:%s",
            len(settings.taobao_shops),
            self.pool.size,
            settings.http_host,
            self._http.port,
            extra={"action": "service_started"},
        )
        try:
            channel = supervisor.start("tmc-channel", self.channel.run())
            batcher = supervisor.start("commit-batcher", self.batcher.run())
            workers = supervisor.start("fetch-workers", self.pool.run())
            for name, factory in self._side_tasks.items():
                supervisor.start(name, factory())
            if burst:
                supervisor.start("idle-watch", self._watch_idle(idle_seconds))
            self.state = "running"
            await self._stop.wait()
            self.state = "draining"
            await self._drain(channel, batcher, workers)
        finally:
            await supervisor.cancel_all()
            await self._http.stop()
            self.state = "stopped"
        if supervisor.failure is not None:
            raise ServiceFailed(supervisor.failure.describe())

    # ------------------------------------------------------------------------------ shutdown

    async def _drain(
        self, channel: asyncio.Task[None], batcher: asyncio.Task[None], workers: asyncio.Task[None]
    ) -> None:
        loop = asyncio.get_running_loop()
        dispatcher = self.dispatcher
        started = loop.time()
        deadline = started + self.settings.sync_drain_seconds
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
        drained = await self._wait_drained(deadline)
        if self._force.is_set():
            deadline = loop.time()  # a second stop request: only the grace for the last write is left

        # Whatever is still fetching is abandoned; trades already fetched still get their commit.
        await self._supervisor.cancel(workers)
        self.batcher.close()
        remaining = max(deadline - loop.time(), 0.0) + CLOSE_GRACE_SECONDS
        await self._supervisor.wait_or_cancel(batcher, remaining)

        unfinished = dispatcher.held_count
        # Handing them back now lets the server redeliver them soon (to another consumer, or after restart).
        await dispatcher.leave_unconfirmed(dispatcher.held_ids(), "shutdown", "service stopping")
        dispatcher.release_parked()
        self.channel.stop()
        await self._supervisor.wait_or_cancel(channel, CLOSE_GRACE_SECONDS)
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

    async def _wait_drained(self, deadline: float) -> bool:
        """Until nothing is held, the drain budget runs out, or a second stop request forces it."""
        settled = asyncio.ensure_future(self.dispatcher.wait_settled())
        forced = asyncio.ensure_future(self._force.wait())
        try:
            timeout = max(0.0, deadline - asyncio.get_running_loop().time())
            await asyncio.wait({settled, forced}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (settled, forced):
                waiter.cancel()
            await asyncio.gather(settled, forced, return_exceptions=True)
        return self.dispatcher.is_settled

    async def _watch_idle(self, idle_seconds: float) -> None:
        dispatcher = self.dispatcher
        while True:
            await dispatcher.wait_settled()
            seen = dispatcher.intake_count
            try:
                async with asyncio.timeout(idle_seconds):
                    await dispatcher.wait_activity()
            except TimeoutError:
                if dispatcher.intake_count == seen and dispatcher.is_settled:
                    self.request_stop(f"idle for {idle_seconds:g} s (burst mode)")
                    return

    # ------------------------------------------------------------------------------ health

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready while running, PostgreSQL answers a ping, the TMC stream is up (or reconnecting
        within READY_STREAM_GRACE_SECONDS), store commits succeed and no shop is paused for a rejected
        session. Each check and each problem is in the details. Not ready is an alert, not a restart
        reason."""
        settings = self.settings
        paused = self.dispatcher.paused_shops
        checks: dict[str, Check] = {"service": Check(self.state == "running", f"service is {self.state}")}
        if self._db_ping is not None:
            checks["postgres"] = await check_postgres(self._db_ping, settings.ready_db_timeout_seconds)
        stream = check_channel(self.channel, settings.ready_stream_grace_seconds)
        if stream is not None:
            checks["stream"] = stream
        checks["shops"] = Check(
            not paused, f"{len(paused)} shop(s) paused: session rejected" if paused else "all active"
        )
        checks["store_commits"] = Check(
            not self.batcher.failing, "store commits are failing" if self.batcher.failing else "succeeding"
        )
        extra_details: dict[str, Any] = {}
        for name, extra in self._extra_checks.items():
            checks[name], extra_details[name] = extra()
        problems = [
            check.detail if name in ("service", "shops", "store_commits") else f"{name}: {check.detail}"
            for name, check in checks.items()
            if not check.ok
        ]
        shops = {shop.nick: ("paused" if shop.nick in paused else "active") for shop in settings.taobao_shops}
        details = {
            "ready": not problems,
            "state": self.state,
            "problems": problems,
            "checks": {name: check.to_json() for name, check in checks.items()},
            "shops": shops,
            "paused": paused,
            "held_messages": self.dispatcher.held_count,
            **extra_details,
        }
        return not problems, details

    def metrics_text(self) -> str:
        return self.metrics.render()


async def serve(service: Service) -> int:
    """Run `service` with SIGTERM/SIGINT as graceful stop requests; the process exit code."""

    def on_signal(sig: signal.Signals) -> None:
        service.request_stop(f"signal {sig.name}")

    with stop_signals(on_signal):
        try:
            await service.run()
        except ServiceFailed as exc:
            log.error("listener stopped on a failure: %s", exc, extra={"action": "service_failed"})
            return EXIT_FAILED
    return EXIT_OK


def run_daemon(
    build: Callable[[Settings], contextlib.AbstractAsyncContextManager[Service]],
    env_file: str | None = ".env",
) -> int:
    """The daemon's whole life for a CLI `run(args)`: settings (exit 2 when invalid, one line per
    problem, no values), logging, then `build(settings)` (which opens the store, the TOP client and the
    channel and closes them afterwards) and `serve()`."""
    try:
        settings = load_settings(env_file)
    except SettingsError as exc:
        print(f"{exc}\nhint: every setting is described in .env.example", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    configure_logging(settings.log_level, settings.log_format)

    async def main() -> int:
        async with build(settings) as service:
            return await serve(service)

    return asyncio.run(main())
