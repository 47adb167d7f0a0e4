"""What the reconciler tests share: a migrated database per test (the ledger is per shop nick, and every
stand-in names its shops alike), a stand-in on real sockets, a fast TOP client, small timings, and the
whole daemon (stream + reconciler) run against the stand-in."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, TypeVar

import pytest
from pydantic import SecretStr

from common.backoff import BackoffPolicy
from daemon.app import Daemon, assemble
from daemon.settings import Settings, load_settings
from listener.session import SessionTiming, TmcSession
from reconciler.backfill import BackfillConfig
from reconciler.config import ReconcilerConfig
from reconciler.load_plan import InitialLoadConfig
from reconciler.reconciler import Reconciler
from simulator.standin import StandIn, StandInConfig
from simulator.tmc_server import TmcServerConfig
from store.migrate import migrate
from store.pg import PgStore
from store.pg_reconciler import pg_reconciler_store
from taobao.client import RetryPolicy, TopClient
from taobao.limiter import TopRateLimiter
from taobao.pause import AppPause
from tests.conftest import create_database, drop_database
from tests.integration.harness import wait_for as wait_for
from tests.integration.harness import wait_for_async as wait_for_async

FAST_RETRY = RetryPolicy(max_tries=6, max_time=20.0, base_delay=0.01, max_delay=0.05, max_ban_wait=5.0)
# The stream of a daemon under test: quick pulls and reconnects, pings that never fire during a test.
DAEMON_TIMING = SessionTiming(pull_interval=0.1, ping_interval=5.0, ping_timeout=5.0, close_timeout=0.5)
DAEMON_BACKOFF = BackoffPolicy(base=0.2, cap=0.5, reset_after=5.0, refusal_floor=0.2)


@pytest.fixture
async def dsn() -> AsyncIterator[str]:
    """A migrated database of its own for each test."""
    database = await create_database()
    try:
        await migrate(database)
        yield database
    finally:
        await drop_database(database)


@pytest.fixture
async def pg(dsn: str) -> AsyncIterator[PgStore]:
    store = await PgStore.connect(dsn, max_size=8)
    try:
        yield store
    finally:
        await store.close()


def top_client(
    standin: StandIn,
    *,
    rate: float = 2000.0,
    cls: type[TopClient] = TopClient,
    app_pause: AppPause | None = None,
) -> TopClient:
    return cls(
        app_key=standin.app_key,
        app_secret=SecretStr(standin.app_secret),
        api_url=standin.api_url,
        limiter=TopRateLimiter(rate),
        retry=FAST_RETRY,
        app_pause=app_pause,
    )


def small_config(**changes: Any) -> ReconcilerConfig:
    """Timings scaled down for tests: seconds instead of minutes."""
    base = ReconcilerConfig(
        overlap=timedelta(seconds=2),
        safety_lag=timedelta(seconds=1),
        max_span=timedelta(hours=12),
        sweep_every=timedelta(hours=1),
        silence=timedelta(hours=1),
        stream_settle=timedelta(seconds=1.5),  # TOP times are whole seconds: more than 1 s
        tick_seconds=0.2,
        retry_cap_seconds=1.0,
        initial_load_days=0,
        replica="test-replica",
        backfill=BackfillConfig(concurrency=8, rejection_retry_seconds=0.0),
        initial_load=InitialLoadConfig(poll_seconds=0.05, batch=500),
    )
    return dataclasses.replace(base, **changes)


def make_reconciler(
    standin: StandIn, store: PgStore, client: TopClient, config: ReconcilerConfig | None = None, **kwargs: Any
) -> Reconciler:
    config = config or small_config()
    return Reconciler(
        config=config,
        client=client,
        storage=pg_reconciler_store(store, replica=config.replica),
        shops={s.nick: SecretStr(s.session) for s in standin.shops},
        **kwargs,
    )


def daemon_standin(
    seed: int, *, history_trades: int, redelivery: float = 1.0, shops: int = 2, **changes: Any
) -> StandInConfig:
    """A stand-in for the whole daemon: a quiet market (the test makes the changes) with `history_trades`
    already made, and failed pushes sent again after `redelivery` seconds."""
    return StandInConfig(
        seed=seed,
        shops=shops,
        market_rate=0,
        history_trades=history_trades,
        tmc=TmcServerConfig(confirm_timeout=5.0, failed_redelivery_delay=redelivery, seed=seed),
        **changes,
    )


def daemon_settings(standin: StandIn, dsn: str, **overrides: Any) -> Settings:
    """The daemon's settings against `standin` and the database `dsn`: a quota that never throttles, no
    fixed HTTP port, a short drain."""
    defaults: dict[str, Any] = {"sync_api_rate": 2000, "http_port": 0, "sync_drain_seconds": 2}
    return load_settings(
        env_file=None,
        database_url=dsn,
        taobao_app_key=standin.app_key,
        taobao_app_secret=standin.app_secret,
        taobao_api_url=standin.api_url,
        taobao_tmc_url=standin.tmc_url,
        **(defaults | overrides),
    )


def daemon_shops(standin: StandIn) -> list[dict[str, str]]:
    """Every shop of `standin`, as the `taobao_shops` setting names them."""
    return [{"nick": s.nick, "session": s.session} for s in standin.shops]


@dataclasses.dataclass
class Running:
    """A daemon under test, its TOP client and its store; `task` is set once it runs (see `serving`)."""

    daemon: Daemon
    client: TopClient
    pg: PgStore
    task: asyncio.Task[None] = dataclasses.field(init=False)

    @property
    def session(self) -> TmcSession:
        channel = self.daemon.service.pipeline.channel
        assert isinstance(channel, TmcSession)
        return channel

    @property
    def connected(self) -> bool:
        reconciler = self.daemon.reconciler
        return reconciler is not None and reconciler.watch.connected

    async def unresolved(self) -> int:
        value = await self.pg.pool.fetchval("SELECT count(*) FROM unresolved_trades")
        return int(value)

    async def stop(self) -> None:
        self.daemon.service.request_stop("test over")
        async with asyncio.timeout(15):
            await self.task
        await self.client.close()


def daemon_under_test(
    settings: Settings, pg: PgStore, client: TopClient, config: ReconcilerConfig, **parts: Any
) -> Daemon:
    """The daemon assembled with the test stream timings (`parts` go to `assemble` as they are)."""
    return assemble(
        settings,
        pg,
        client,
        session_timing=DAEMON_TIMING,
        session_backoff=DAEMON_BACKOFF,
        reconciler_config=config,
        **parts,
    )


RunningT = TypeVar("RunningT", bound=Running)


@contextlib.asynccontextmanager
async def serving(run: RunningT) -> AsyncIterator[RunningT]:
    """Runs `run`'s daemon from its first connect until the block ends, then stops it and its client."""
    run.task = asyncio.create_task(run.daemon.service.run(), name="daemon-under-test")
    try:
        await wait_for(lambda: run.connected, 10, "the first connect")
        yield run
    finally:
        await run.stop()


def daemon_serving(
    standin: StandIn, pg: PgStore, dsn: str, client: TopClient, config: ReconcilerConfig, **settings: Any
) -> contextlib.AbstractAsyncContextManager[Running]:
    """The daemon serving every shop of `standin` through `client` (`settings` override the defaults),
    running from its first connect until the block ends."""
    daemon = daemon_under_test(
        daemon_settings(standin, dsn, taobao_shops=daemon_shops(standin), **settings), pg, client, config
    )
    return serving(Running(daemon, client, pg))
