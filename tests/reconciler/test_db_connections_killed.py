"""The daemon outlives PostgreSQL killing its connections (pg_terminate_backend of every backend it
holds, as the `lossy` scenario does): the store's batches, the reconciler's rounds, the gate, the TMC
session's state callbacks and the replica heartbeat retry, leadership is taken again, and the database
ends equal to the truth."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import pytest

from daemon.app import assemble, open_parts
from daemon.service import Service
from simulator.compare import compare_with_market
from simulator.standin import StandIn, StandInConfig
from simulator.tmc_server import TmcServerConfig
from tests.integration.harness import daemon_settings
from tests.reconciler.conftest import wait_for, wait_for_async

CHANGES_PER_ROUND = 30
KILL_ROUNDS = 4


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    stand_in = StandIn(
        StandInConfig(seed=47, shops=2, market_rate=0, history_trades=10, tmc=TmcServerConfig(seed=47))
    )
    async with stand_in:
        yield stand_in


@contextlib.asynccontextmanager
async def daemon(standin: StandIn, dsn: str) -> AsyncIterator[tuple[Service, asyncio.Task[None]]]:
    settings = daemon_settings(
        standin,
        dsn,
        sync_overlap_seconds=2,
        sync_safety_lag_seconds=1,
        sync_reconcile_seconds=0.2,
        sync_heartbeat_seconds=0.2,
        sync_initial_load_days=0,
        sync_replica_id="pg-kill",
    )
    async with open_parts(settings) as (store, client):
        service = assemble(settings, store, client).service
        task = asyncio.create_task(service.run(), name="pg-kill-daemon")
        try:
            await wait_for(lambda: service.state == "running" or task.done(), 15, "the daemon to start")
            yield service, task
        finally:
            service.request_stop("test over")
            async with asyncio.timeout(20):
                await asyncio.gather(task, return_exceptions=True)


async def kill_backends(dsn: str) -> int:
    admin = await asyncpg.connect(dsn)
    try:
        killed = await admin.fetchval(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = 'order-sync'"
        )
        return int(killed or 0)
    finally:
        await admin.close()


async def test_daemon_survives_its_database_connections_being_killed(standin: StandIn, dsn: str) -> None:
    tmc = standin.tmc.stats
    async with daemon(standin, dsn) as (service, task):
        await wait_for(lambda: tmc.connections >= 1 or task.done(), 15, "the daemon to connect")
        killed = 0
        for _ in range(KILL_ROUNDS):
            standin.market.step(CHANGES_PER_ROUND)
            killed += await kill_backends(dsn)
            # The reconnect's gate and the session's disconnect callback meet the dead connections too.
            standin.tmc.drop_connections()
            await wait_for(
                lambda: tmc.confirmed == tmc.published or task.done(), 30, "every change to be confirmed"
            )
            assert not task.done(), task.exception() if not task.cancelled() else "cancelled"
        assert killed >= KILL_ROUNDS, "no backend of the daemon was killed: nothing was tested"

        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
        try:

            async def in_sync() -> bool:
                assert not task.done(), task.exception() if not task.cancelled() else "cancelled"
                return (await compare_with_market(pool, standin.market)).ok

            await wait_for_async(in_sync, 30, "the database to equal the truth")
            # Leadership was taken again on a new coordination connection: the shops are led.
            await wait_for_async(
                lambda: _leads_all(pool, len(standin.shops)), 15, "the shops' advisory locks to be held again"
            )
        finally:
            await pool.close()
        assert service.state == "running"


async def _leads_all(pool: asyncpg.Pool, shops: int) -> bool:
    held = await pool.fetchval(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND a.datname = current_database()"
        " AND a.application_name = 'order-sync'"
    )
    return int(held) >= shops
