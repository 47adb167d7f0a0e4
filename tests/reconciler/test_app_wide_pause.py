"""An app-wide TOP failure against the whole daemon (stream + reconciler), over real sockets and a real
PostgreSQL (docs/design.md#app-wide-pause): the stand-in answers every call with an app-wide error
for a while (its `error_window` knob: the permission package lapsed, or a proxy's unwrapped 200) while
the market keeps changing. During it nothing is dead-lettered, recorded as unresolved or confirmed,
no stretch after the pause began is proven, and /readyz is red with the reason; once it ends the
database equals the stand-in's truth and every message is confirmed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest
from pydantic import SecretStr

from common.backoff import BackoffPolicy
from daemon.app import Daemon, assemble
from daemon.settings import load_settings
from listener.session import SessionTiming
from simulator.compare import compare_with_market
from simulator.standin import StandIn, StandInConfig
from simulator.tmc_server import TmcServerConfig
from store.coverage import ProvenBy
from store.pg import PgStore
from taobao.client import TopClient
from taobao.limiter import TopRateLimiter
from taobao.pause import AppPause
from tests.reconciler.conftest import FAST_RETRY, small_config, wait_for, wait_for_async

TIMING = SessionTiming(pull_interval=0.1, ping_interval=5.0, ping_timeout=5.0, close_timeout=0.5)
BACKOFF = BackoffPolicy(base=0.2, cap=0.5, reset_after=5.0, refusal_floor=0.2)
PROBES = BackoffPolicy(base=0.2, cap=0.5, reset_after=5.0)
REASONS = {"permission": "isv.permission-api-package-limit", "unwrapped-json": "without a"}


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    stand_in = StandIn(
        StandInConfig(
            seed=91,
            shops=2,
            market_rate=0,
            history_trades=100,
            tmc=TmcServerConfig(confirm_timeout=5.0, failed_redelivery_delay=0.5, seed=91),
        )
    )
    await stand_in.start()
    try:
        yield stand_in
    finally:
        await stand_in.stop()


async def start(standin: StandIn, pg: PgStore, dsn: str) -> tuple[Daemon, asyncio.Task[None], TopClient]:
    settings = load_settings(
        env_file=None,
        database_url=dsn,
        taobao_app_key=standin.app_key,
        taobao_app_secret=standin.app_secret,
        taobao_api_url=standin.api_url,
        taobao_tmc_url=standin.tmc_url,
        taobao_shops=[{"nick": s.nick, "session": s.session} for s in standin.shops],
        sync_api_rate=2000,
        http_port=0,
        sync_drain_seconds=2,
    )
    client = TopClient(
        app_key=standin.app_key,
        app_secret=SecretStr(standin.app_secret),
        api_url=standin.api_url,
        limiter=TopRateLimiter(2000),
        retry=FAST_RETRY,
        app_pause=AppPause(PROBES),
    )
    config = small_config(overlap=timedelta(seconds=1), safety_lag=timedelta(seconds=0.5))
    daemon = assemble(
        settings, pg, client, session_timing=TIMING, session_backoff=BACKOFF, reconciler_config=config
    )
    task = asyncio.create_task(daemon.service.run(), name="daemon-under-test")
    assert daemon.reconciler is not None
    watch = daemon.reconciler.watch
    await wait_for(lambda: watch.connected, 10, "the first connect")
    return daemon, task, client


async def stop(daemon: Daemon, task: asyncio.Task[None], client: TopClient) -> None:
    daemon.service.request_stop("test over")
    async with asyncio.timeout(15):
        await task
    await client.close()


async def proven_ends(daemon: Daemon) -> list[datetime]:
    reconciler = daemon.reconciler
    assert reconciler is not None
    ends = []
    for shop in reconciler.watch.shops:
        for kind in ProvenBy:
            end = await reconciler.ledger.covered_end(shop, kind)
            if end is not None:
                ends.append(end)
    return ends


async def counts(pg: PgStore) -> tuple[int, int]:
    dead = await pg.pool.fetchval("SELECT count(*) FROM dead_letters")
    unresolved = await pg.pool.fetchval("SELECT count(*) FROM unresolved_trades")
    return int(dead), int(unresolved)


@pytest.mark.parametrize("kind", ["permission", "unwrapped-json"])
async def test_an_app_wide_window_confirms_nothing_proves_nothing_and_ends_equal_to_the_truth(
    standin: StandIn, pg: PgStore, dsn: str, kind: str
) -> None:
    tmc, market = standin.tmc, standin.market
    daemon, task, client = await start(standin, pg, dsn)
    service = daemon.service
    try:
        market.step(30)
        await wait_for(lambda: tmc.pending(standin.app_key) == 0, 15, "the first changes confirmed")
        before = await counts(pg)
        confirmed = tmc.stats.confirmed

        standin.faults.error_window = kind
        changed = market.step(30)
        await wait_for(lambda: client.app_pause.paused, 10, "the app-wide pause")
        # Several probes refused, the messages delivered (and redelivered) meanwhile.
        await wait_for(lambda: client.app_pause.state().probes >= 3, 15, "three refused probes")
        await wait_for(lambda: tmc.stats.published >= confirmed + len(changed), 5, "the pushes")

        state = client.app_pause.state()
        assert state.since is not None
        assert tmc.stats.confirmed == confirmed  # nothing confirmed
        assert await counts(pg) == before  # no dead letter, no unresolved trade
        assert all(end <= state.since for end in await proven_ends(daemon))  # nothing proven since
        ready, details = await service.readiness()
        assert not ready
        [problem] = [p for p in details["problems"] if p.startswith("top:")]
        assert REASONS[kind] in problem
        assert details["top"]["paused"] is True
        assert details["checks"]["top"]["ok"] is False
        assert "order_sync_top_app_paused 1" in service.metrics_text()

        standin.faults.error_window = ""
        await wait_for(lambda: not client.app_pause.paused, 10, "the pause to clear")
        market.step(20)

        async def equal_to_truth() -> bool:
            return (await compare_with_market(pg.pool, market)).ok

        await wait_for_async(equal_to_truth, 30, "the database to equal the truth")
        await wait_for(lambda: tmc.pending(standin.app_key) == 0, 20, "every message confirmed")
        assert tmc.stats.confirmed == tmc.stats.published
        assert await counts(pg) == before
        _, details = await service.readiness()
        assert details["checks"]["top"]["ok"] is True
        assert "order_sync_top_app_pauses_total 1" in service.metrics_text()
    finally:
        await stop(daemon, task, client)
