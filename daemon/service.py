"""The daemon around the stream: supervision, HTTP (/healthz, /readyz, /metrics) and the stop.

`Service` builds the stream's pipeline (`listener.pipeline`: TMC channel → dispatcher → fetch workers →
commit batcher → confirm) from the settings, runs its tasks and any side tasks (the reconciler, the
replica set) under one supervisor, and serves HTTP. A stop request (a signal through `serve()`, the idle
watch in burst mode, or a dying task) leads to the pipeline's one bounded drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from pydantic import SecretStr

from common.backoff import BackoffPolicy
from common.errors import OrderSyncError
from common.exit_codes import EXIT_FAILED, EXIT_OK
from common.health import Check
from daemon.health import HttpServer, Ping, Routes, check_channel, check_postgres
from daemon.logs import configure_logging
from daemon.metrics import DaemonMetrics
from daemon.settings import Settings, settings_or_exit
from daemon.supervisor import Supervisor, TaskFailure, stop_signals
from listener.batcher import STORE_RETRY, CommitBatcher
from listener.pipeline import ChannelFactory, PipelineConfig, StreamPipeline
from listener.ports import MessageWatch, TradeFetcher, TradeStore
from listener.workers import TradeLag

log = logging.getLogger(__name__)

SideTask = Callable[[], Coroutine[Any, Any, None]]
# A readiness check kept by another part (the replica set): its verdict and what /readyz shows of it.
ExtraCheck = Callable[[], tuple[Check, dict[str, Any]]]


class ServiceFailed(OrderSyncError):
    """A supervised task died; the daemon stopped. The message says which task and why."""


def pipeline_config(settings: Settings, store_retry: BackoffPolicy = STORE_RETRY) -> PipelineConfig:
    return PipelineConfig(
        max_events=settings.sync_max_events,
        max_held_bytes=settings.sync_max_held_bytes,
        max_fetched_bytes=settings.sync_max_fetched_bytes,
        batch_size=settings.sync_batch_size,
        batch_delay=settings.sync_batch_ms / 1000,
        workers=settings.worker_count(),
        drain_seconds=settings.sync_drain_seconds,
        store_retry=store_retry,
        lag=TradeLag(allowance=settings.sync_detail_lag_seconds),
        redrive=settings.redrive_policy(),
    )


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
        store_backoff: BackoffPolicy = STORE_RETRY,
        db_ping: Ping | None = None,
        extra_checks: Mapping[str, ExtraCheck] | None = None,
        watch: MessageWatch | None = None,
        http_routes: Routes | None = None,
        shops: Mapping[str, SecretStr] | None = None,
    ) -> None:
        self.settings = settings
        # The shops served, read live (a `store.shop_book.ShopBook` follows the registry).
        self.shops = settings.shop_sessions() if shops is None else shops
        self.metrics = metrics or DaemonMetrics(shops=list(self.shops))
        self._db_ping = db_ping  # for /readyz; None: no database check
        self._extra_checks = dict(extra_checks or {})
        self._http_routes = http_routes  # pages beyond health and metrics (the gap reports)
        self.pipeline = StreamPipeline(
            pipeline_config(settings, store_backoff),
            channel_factory=channel_factory,
            sessions=self.shops,
            fetcher=fetcher,
            store=store,
            metrics=self.metrics.stream,
            watch=watch,
        )
        self._side_tasks = dict(side_tasks or {})
        self._supervisor = Supervisor(self._task_failed)
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self._http: HttpServer | None = None
        self.state = "created"  # → running → draining → stopped
        self.stop_reason: str | None = None

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
        self._http = HttpServer(self, settings.http_host, settings.http_port, self._http_routes)
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
            len(self.shops),
            self.pipeline.pool.size,
            settings.http_host,
            self._http.port,
            extra={"action": "service_started"},
        )
        try:
            self.pipeline.start(supervisor.start)
            for name, factory in self._side_tasks.items():
                supervisor.start(name, factory())
            if burst:
                supervisor.start("idle-watch", self._stop_when_idle(idle_seconds))
            self.state = "running"
            await self._stop.wait()
            self.state = "draining"
            await self.pipeline.drain(hurry=self._force)
        finally:
            await supervisor.cancel_all()
            await self._http.stop()
            self.state = "stopped"
        if supervisor.failure is not None:
            raise ServiceFailed(supervisor.failure.describe())

    async def _stop_when_idle(self, idle_seconds: float) -> None:
        await self.pipeline.wait_idle(idle_seconds)
        self.request_stop(f"idle for {idle_seconds:g} s (burst mode)")

    # ------------------------------------------------------------------------------ health

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready while running, PostgreSQL answers a ping, the TMC stream is up (or reconnecting
        within READY_STREAM_GRACE_SECONDS), store commits succeed and no shop is paused for a rejected
        session. Each check and each problem is in the details. Not ready is an alert, not a restart
        reason."""
        settings = self.settings
        dispatcher, batcher = self.pipeline.dispatcher, self.pipeline.batcher
        paused = dispatcher.paused_shops
        checks: dict[str, Check] = {"service": Check(self.state == "running", f"service is {self.state}")}
        if self._db_ping is not None:
            checks["postgres"] = await check_postgres(self._db_ping, settings.ready_db_timeout_seconds)
        stream = check_channel(self.pipeline.channel, settings.ready_stream_grace_seconds)
        if stream is not None:
            checks["stream"] = stream
        checks["shops"] = Check(
            not paused, f"{len(paused)} shop(s) paused: session rejected" if paused else "all active"
        )
        checks["store_commits"] = store_commits_check(batcher, settings.database_timeout_seconds)
        extra_details: dict[str, Any] = {}
        for name, extra in self._extra_checks.items():
            checks[name], extra_details[name] = extra()
        problems = [
            check.detail if name in ("service", "shops", "store_commits") else f"{name}: {check.detail}"
            for name, check in checks.items()
            if not check.ok
        ]
        shops = {nick: ("paused" if nick in paused else "active") for nick in self.shops}
        details = {
            "ready": not problems,
            "state": self.state,
            "problems": problems,
            "checks": {name: check.to_json() for name, check in checks.items()},
            "shops": shops,
            "paused": paused,
            "held_messages": dispatcher.held_count,
            **extra_details,
        }
        return not problems, details

    def metrics_text(self) -> str:
        return self.metrics.render()


def store_commits_check(batcher: CommitBatcher, hang_limit: float) -> Check:
    """Failing when the last commit failed, or when the one in progress has waited longer than a
    database round trip may (DATABASE_TIMEOUT_SECONDS): a hung commit fails only once that fires."""
    if batcher.failing:
        return Check(False, "store commits are failing")
    waited = batcher.writing_for()
    if waited > hang_limit:
        return Check(False, f"a store commit has waited {waited:.0f} s")
    return Check(True, "succeeding")


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
    settings = settings_or_exit(Settings, env_file)
    if isinstance(settings, int):
        return settings
    configure_logging(settings.log_level, settings.log_format)

    async def main() -> int:
        async with build(settings) as service:
            return await serve(service)

    return asyncio.run(main())
