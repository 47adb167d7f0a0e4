"""Shop leadership over real PostgreSQL, several replica sets in this process, each with its own
coordination connection: one leader per shop, a fair share each, takeover when a leader's connection
dies or it freezes, handover only between windows, and a ledger that refuses a deposed leader."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from common.intervals import Interval
from reconciler.ledger import Ledger
from replicas.leadership import fair_share, rank
from replicas.replica_set import ReplicaIdInUse, ReplicaSet
from store import replica_sql
from store.coverage import ProvenBy
from store.errors import NotLeader
from store.pg_coverage import PgCoverageLedger
from tests.scaleout.conftest import SHOPS, eventually, leaders, replica_set, running


async def holders(dsn: str, shops: list[str]) -> dict[str, int | None]:
    """What PostgreSQL says: the backend pid holding each shop's leadership lock."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(replica_sql.LEADERS, shops)
    finally:
        await conn.close()
    return {r["shop"]: r["pid"] for r in rows}


async def end_connection(dsn: str, pid: int) -> None:
    """As PostgreSQL sees a replica die: its connection ends."""
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await conn.close()


def test_fair_share_and_rank_are_the_same_everywhere() -> None:
    assert fair_share(7, 3) == 3
    assert fair_share(6, 3) == 2
    assert fair_share(3, 0) == 3
    assert rank("shop-1", "r1") == rank("shop-1", "r1") != rank("shop-1", "r2")


async def test_each_shop_has_one_leader_and_each_replica_its_share(dsn: str) -> None:
    sets = [replica_set(dsn, f"r{n}") for n in range(3)]
    async with running(*sets):

        def settled() -> bool:
            claims = leaders(*sets)
            return all(len(names) == 1 for names in claims.values()) and all(
                len(s.leadership.led) <= math.ceil(len(SHOPS) / 3) and s.quota.limiter.rate == 20
                for s in sets
            )

        await eventually(settled, 10, "seven shops led once each, at most three per replica")
        pids = {s.link.pid: s.leadership.led for s in sets}
        locked = await holders(dsn, SHOPS)
        # The database agrees with what each replica believes.
        for pid, led in pids.items():
            assert sorted(shop for shop, holder in locked.items() if holder == pid) == led
        ready, details = sets[0].readiness()
        assert ready.ok, ready.detail
        assert details["live_replicas"] == ["r0", "r1", "r2"]
        assert sorted(details["shop_leaders"]) == SHOPS


async def test_a_dead_replicas_shops_and_quota_move_to_the_others_within_a_round(dsn: str) -> None:
    sets = [replica_set(dsn, f"r{n}") for n in range(3)]
    async with running(*sets) as tasks:
        await eventually(lambda: all(len(v) == 1 for v in leaders(*sets).values()), 10, "leaders")
        victim = max(sets, key=lambda s: len(s.leadership.led))
        survivors = [s for s in sets if s is not victim]
        orphaned = victim.leadership.led
        assert orphaned
        pid = victim.link.pid
        assert pid is not None
        admin = await asyncpg.connect(dsn)
        try:
            # SIGKILL as PostgreSQL sees it: the connection ends and nothing runs on that side any more
            # (whether its cancelled task still records a stop first or not, it is out at once).
            tasks[sets.index(victim)].cancel()
            await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        finally:
            await admin.close()
        loop_time = asyncio.get_running_loop().time
        killed_at = loop_time()
        await eventually(
            lambda: sorted(shop for s in survivors for shop in s.leadership.led) == SHOPS, 10, "a takeover"
        )
        took = loop_time() - killed_at
        # Within about one heartbeat round (0.2 s here), not after the liveness timeout.
        assert took < 1.5, took
        await eventually(lambda: all(s.quota.limiter.rate == 30 for s in survivors), 10, "rate ÷ 2")
        # Never two leaders; and each shop has one that trusts its lease. A survivor whose heartbeat ran
        # late on a busy machine stops trusting its lease for a moment (`leads` false, the lock still
        # held) until its next round, so the second part is waited for, not sampled.
        assert all(len(replicas) <= 1 for replicas in leaders(*survivors).values())
        await eventually(
            lambda: all(
                [s.replica for s in survivors if s.leads(shop)] == replicas and len(replicas) == 1
                for shop, replicas in leaders(*survivors).items()
            ),
            10,
            "one trusted leader per shop",
        )


async def test_a_frozen_replica_is_ended_and_its_shops_taken(dsn: str) -> None:
    frozen = replica_set(dsn, "frozen", frozen_after_seconds=1.0)
    await frozen.round()
    assert frozen.leadership.led == SHOPS  # alone: it leads every shop
    other = replica_set(dsn, "other", frozen_after_seconds=1.0)
    async with running(other):
        # `frozen` never heartbeats again but its connection stays open with the locks on it.
        await eventually(lambda: other.leadership.led == SHOPS, 15, "the frozen replica's shops")
    assert frozen.link.pid is None or not await _alive(dsn, frozen.link.pid)
    await frozen.link.close()


async def _alive(dsn: str, pid: int) -> bool:
    conn = await asyncpg.connect(dsn)
    try:
        return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)", pid))
    finally:
        await conn.close()


async def test_a_shop_is_handed_over_only_once_nothing_runs_for_it(dsn: str) -> None:
    first = replica_set(dsn, "first")
    busy = set(SHOPS)
    first.leadership.watch_busy(lambda shop: shop in busy)
    second = replica_set(dsn, "second")
    try:
        await first.round()
        assert first.leadership.led == SHOPS
        await second.round()  # joins: a share of four, but every shop is taken
        assert second.leadership.led == []
        await first.round()  # above its share: stops leading three shops, keeps their locks while busy
        handed = [s for s in SHOPS if not first.leads(s)]
        assert len(handed) == 3
        assert all(first.leadership.holds(s) for s in handed)
        await second.round()
        assert second.leadership.led == []  # nothing was released yet
        busy.clear()  # the running windows end
        await first.round()
        await second.round()
        assert sorted(second.leadership.led) == sorted(handed)
        assert sorted(first.leadership.led + second.leadership.led) == SHOPS
        assert all(len(names) == 1 for names in leaders(first, second).values())
    finally:
        await first.link.close()
        await second.link.close()


async def test_the_ledger_refuses_a_proof_from_a_replica_that_lost_the_shop(dsn: str) -> None:
    shop = "shop-0"
    leader = replica_set(dsn, "leader", shops=[shop])
    successor = replica_set(dsn, "successor", shops=[shop])
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        await leader.round()
        assert leader.leads(shop)
        ledger = Ledger(PgCoverageLedger(pool), fence=leader.fence)
        t0 = datetime(2026, 11, 11, tzinfo=UTC)
        first, second = (
            Interval(t0, t0 + timedelta(hours=1)),
            Interval(t0 + timedelta(hours=2), t0 + timedelta(hours=3)),
        )
        await ledger.prove(shop, first, ProvenBy.BACKFILL)
        pid = leader.link.pid
        assert pid is not None
        await end_connection(dsn, pid)  # the leader does not know yet: it still believes it leads
        assert leader.leads(shop)
        with pytest.raises(NotLeader):
            await ledger.prove(shop, second, ProvenBy.BACKFILL)
        assert await ledger.intervals(shop, kinds=[ProvenBy.BACKFILL]) == [first]
        assert not leader.leads(shop)
        await ledger.prove(shop, second, ProvenBy.STREAM)  # what a stream proved needs no leadership
        await successor.round()
        assert successor.leads(shop)
        await Ledger(PgCoverageLedger(pool), fence=successor.fence).prove(shop, second, ProvenBy.BACKFILL)
    finally:
        await pool.close()
        await leader.link.close()
        await successor.link.close()


async def test_two_processes_with_one_replica_id_are_refused(dsn: str) -> None:
    """The second waits out the first's lease, sees its heartbeat move on, and stops."""
    first: ReplicaSet = replica_set(dsn, "same")
    second: ReplicaSet = replica_set(dsn, "same")
    try:
        async with running(first):
            await eventually(lambda: first.view.members != [], 5, "the first replica's heartbeat")
            with pytest.raises(ReplicaIdInUse):
                async with asyncio.timeout(10):
                    await second.run()
            assert second.failures >= 1  # one round waited for the lease before the refusal
    finally:
        await first.link.close()
        await second.link.close()


async def test_a_restart_takes_its_id_over_from_a_lingering_connection(dsn: str) -> None:
    """A replica restarted under the same name (a container's host name and PID 1) while its
    predecessor's connection lingers, as it does when the host died without closing it: the name's
    lease expires after three heartbeats, the old connection is ended and its shops are led again."""
    name, heartbeat = "host-a:1", 1.0
    predecessor: ReplicaSet = replica_set(dsn, name, heartbeat_seconds=heartbeat)
    successor: ReplicaSet = replica_set(dsn, name, heartbeat_seconds=heartbeat)
    try:

        async def predecessor_leads_all() -> bool:
            await predecessor.round()
            return all(predecessor.leads(shop) for shop in SHOPS)

        await eventually(predecessor_leads_all, 10, "the predecessor to lead every shop")
        old_pid = predecessor.link.pid
        assert old_pid is not None
        # The predecessor is gone without a word: no more rounds, its connection left open.
        started = asyncio.get_running_loop().time()
        async with running(successor):
            await eventually(
                lambda: all(successor.leads(shop) for shop in SHOPS), 30, "the restarted replica to lead"
            )
            took = asyncio.get_running_loop().time() - started
        assert took <= successor.config.liveness_seconds + 5 * heartbeat
        assert set((await holders(dsn, SHOPS)).values()) != {old_pid}
        assert old_pid not in await backends(dsn)
        print(f"restart under the same id took over in {took:.1f} s (heartbeat {heartbeat:g} s)")
    finally:
        await predecessor.link.close()
        await successor.link.close()


async def backends(dsn: str) -> set[int]:
    conn = await asyncpg.connect(dsn)
    try:
        return {int(r["pid"]) for r in await conn.fetch("SELECT pid FROM pg_stat_activity")}
    finally:
        await conn.close()
