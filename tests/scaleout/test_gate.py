"""Backfill before resume with several replicas (reconciler/gate.py, module docstring): a replica's
TMC (re)connect waits for the other leaders' backfills, but never forever: not past
SYNC_GATE_PEER_WAIT_SECONDS when a leader is stuck, not at all when another replica already consumes
the group's queue, and a dead leader's shops are taken over and backfilled inside the wait."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from reconciler.reconciler import Reconciler
from replicas.replica_set import ReplicaConfig, ReplicaSet
from simulator.standin import StandIn, StandInConfig
from store.pg import PgStore
from taobao.client import TopClient
from tests.reconciler.conftest import make_reconciler, small_config, top_client
from tests.scaleout.conftest import eventually, replica_set, running


class Stream:
    """A stream watch stand-in for the stuck leader: it only says whether it is connected."""

    def __init__(self, connected: bool) -> None:
        self.connected = connected

    def hold(self) -> datetime | None:
        return None

    def bound_by_peers(self, bound: datetime | None) -> None:
        return None


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    stand_in = StandIn(StandInConfig(seed=31, shops=2, market_rate=0, history_trades=300, history_days=1))
    async with stand_in:
        yield stand_in


@pytest.fixture
async def parts(standin: StandIn, dsn: str) -> AsyncIterator[tuple[PgStore, TopClient]]:
    store = await PgStore.connect(dsn, max_size=6)
    client = top_client(standin)
    try:
        # The shops were followed until an hour ago: each start opens a one-hour restart gap.
        await store.pool.executemany(
            "INSERT INTO sync_shops (shop, sync_from) VALUES ($1, $2)",
            [(s.nick, datetime.now(UTC) - timedelta(hours=1)) for s in standin.shops],
        )
        yield store, client
    finally:
        await client.close()
        await store.close()


@contextlib.asynccontextmanager
async def follower(
    standin: StandIn, dsn: str, store: PgStore, client: TopClient, peer_wait: float
) -> AsyncIterator[tuple[ReplicaSet, Reconciler]]:
    """Replica `b`: its replica set running, and its reconciler."""
    shops = [s.nick for s in standin.shops]
    replicas = ReplicaSet(
        ReplicaConfig(replica="b", app_key=standin.app_key, api_rate=2000, heartbeat_seconds=0.2),
        dsn=dsn,
        shops=shops,
        limiter=client.limiter,
    )
    reconciler = make_reconciler(
        standin, store, client, small_config(replica="b", peer_wait_seconds=peer_wait), coordination=replicas
    )
    async with running(replicas):
        yield replicas, reconciler


async def restart_reports(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return list(await pool.fetch("SELECT shop, outcome, replicas FROM gap_reports WHERE cause = 'restart'"))


async def test_the_gate_waits_for_a_stuck_leader_only_so_long(
    standin: StandIn, dsn: str, parts: tuple[PgStore, TopClient]
) -> None:
    store, client = parts
    stuck = replica_set(dsn, "stuck", shops=[s.nick for s in standin.shops])
    stuck_stream = Stream(connected=False)
    stuck.attach(stuck_stream, lambda shop: True)  # forever busy: it never hands a shop over
    async with running(stuck):
        await stuck.ready()
        assert len(stuck.leadership.led) == 2  # it leads both shops and never reconciles them
        async with follower(standin, dsn, store, client, peer_wait=1.0) as (replicas, reconciler):
            loop = asyncio.get_running_loop()
            started = loop.time()
            await reconciler.gate()
            waited = loop.time() - started
            assert replicas.leadership.led == []
            assert 1.0 <= waited < 5.0, waited  # the bound, not forever
            assert all(r["outcome"] is None for r in await restart_reports(store.pool))

            # Once another replica consumes the group's queue, holding back would only remove capacity.
            stuck_stream.connected = True
            await _peer_connected(replicas)
            started = loop.time()
            await reconciler.gate()
            assert loop.time() - started < 0.5


async def _peer_connected(replicas: ReplicaSet) -> None:
    await eventually(replicas.peer_connected, 5, "the other replica's connection to be seen")


async def test_a_dead_leaders_shops_are_taken_over_and_backfilled_inside_the_wait(
    standin: StandIn, dsn: str, parts: tuple[PgStore, TopClient]
) -> None:
    store, client = parts
    doomed = replica_set(dsn, "doomed", shops=[s.nick for s in standin.shops])
    async with running(doomed) as tasks:
        await doomed.ready()
        async with follower(standin, dsn, store, client, peer_wait=30.0) as (replicas, reconciler):
            gate = asyncio.create_task(reconciler.gate())
            await asyncio.sleep(0.5)  # the gate is waiting for the other leader (its reports stay open)
            assert not gate.done()
            pid = doomed.link.pid
            assert pid is not None
            tasks[0].cancel()  # the leader dies: its connection ends, PostgreSQL frees its shops
            admin = await asyncpg.connect(dsn)
            try:
                await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
            finally:
                await admin.close()
            await asyncio.wait_for(gate, 20)
            assert sorted(replicas.leadership.led) == sorted(s.nick for s in standin.shops)
            reports = await restart_reports(store.pool)
    # Both shops' restart gaps were read by the replica that took them over, before it connected.
    assert {r["shop"] for r in reports if "b" in r["replicas"]} == {s.nick for s in standin.shops}
