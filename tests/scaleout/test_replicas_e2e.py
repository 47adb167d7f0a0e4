"""Three replicas of the daemon (`python -m listener`, each its own process) on one database and one TMC
group, against the stand-in (in this process). The service was down for 12 hours, so each replica's
start opens a restart gap and the shops' leaders backfill it while the market keeps trading; one
replica is SIGKILLed in the middle of its backfill, another later in the middle of the stream.

What must hold: the database ends equal to the truth (every market change and every trade the gap
held), each change lands once in the change feed, the killed leader's shops are reconciled on by
another replica from where it stopped, and no shop is reconciled by two replicas at once: the
replicas' leadership terms (from their logs) never overlap, and the stand-in's call log (each call
names its replica in `partner_id`) has every list call of a shop inside its caller's term."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import signal
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from simulator.compare import compare_with_market
from simulator.gateway import CallRecord
from simulator.standin import StandIn, StandInConfig
from simulator.tmc_server import TmcServerConfig
from taobao.fields import TRADES_SOLD_INCREMENT_GET
from tests.integration.harness import DaemonProcess, daemon_env, permit_every_shop, wait_for, wait_for_async

REPLICAS = ("r1", "r2", "r3")
SHOPS = 6
DOWN_FOR = timedelta(hours=12)
MARKET_RATE = 25.0  # changes per second
FOREVER = datetime(9999, 1, 1, tzinfo=UTC)


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    stand_in = StandIn(
        StandInConfig(
            seed=909,
            shops=SHOPS,
            market_rate=0,
            history_trades=2400,
            history_days=1,
            tmc=TmcServerConfig(confirm_timeout=5.0, failed_redelivery_delay=1.0, seed=909),
        )
    )
    # Every call takes a while, so a backfill is still going when a replica is killed.
    stand_in.faults.latency_ms = 30
    async with stand_in:
        yield stand_in


@dataclass
class Replica:
    name: str
    process: DaemonProcess

    def http_port(self) -> int | None:
        found = re.search(r"http on 127\.0\.0\.1:(\d+)", self.process.log_path.read_text(errors="replace"))
        return int(found.group(1)) if found else None


def replica_of(record: CallRecord) -> str | None:
    tag = record.params.get("partner_id", "")
    return tag.rpartition("/")[2] or None


def increment_calls(standin: StandIn) -> list[CallRecord]:
    return [r for r in standin.gateway.stats.calls_of(TRADES_SOLD_INCREMENT_GET) if r.code == 0]


async def test_three_replicas_share_the_work_and_survive_sigkills(
    standin: StandIn, fresh_database: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    market, tmc = standin.market, standin.tmc
    nicks = [shop.nick for shop in standin.shops]
    sync_from = datetime.now(UTC) - DOWN_FOR
    # The shops were followed until 12 hours ago: every replica's start finds a 12-hour restart gap.
    await pool.executemany(
        "INSERT INTO sync_shops (shop, sync_from) VALUES ($1, $2)", [(n, sync_from) for n in nicks]
    )
    await permit_every_shop(standin)  # as the run that followed them did: TMC keeps delivering
    replicas = [
        Replica(
            name,
            DaemonProcess(
                daemon_env(
                    standin,
                    fresh_database,
                    sync_replica_id=name,
                    sync_heartbeat_seconds=0.3,
                    sync_stream_settle_seconds=1.5,
                    sync_safety_lag_seconds=1,
                    sync_overlap_seconds=2,
                    sync_reconcile_seconds=0.5,
                    sync_sweep_seconds=3600,
                    sync_silence_seconds=3600,
                    sync_initial_load_days=0,
                    sync_backfill_window_seconds=600,
                    sync_gate_peer_wait_seconds=60,
                    sync_drain_seconds=5,
                    log_level="INFO",
                    log_format="json",
                ),
                tmp_path / f"{name}.log",
            ),
        )
        for name in REPLICAS
    ]
    by_name = {r.name: r for r in replicas}
    try:
        market.start(MARKET_RATE)
        await asyncio.gather(*(r.process.start() for r in replicas))

        # ---- SIGKILL a leader in the middle of its backfill ------------------------------------------
        victim, shop = await _leader_mid_backfill(standin, pool, within=60)
        kill_sent = {victim: datetime.now(UTC)}
        by_name[victim].process.send(signal.SIGKILL)
        assert await by_name[victim].process.wait(10) == -signal.SIGKILL
        killed_at = datetime.now(UTC)
        survivors = [r for r in replicas if r.name != victim]

        # Its shop is taken over: another replica goes on reading that shop's windows.
        await wait_for(
            lambda: any(
                replica_of(c) != victim and c.at > killed_at and c.shop == shop
                for c in increment_calls(standin)
            ),
            30,
            f"another replica to reconcile {shop} after {victim} was killed",
        )
        await wait_for(
            lambda: len(tmc.connections()) == 2, 60, "both survivors to connect after the backfill"
        )

        # ---- SIGKILL another one in the middle of the stream --------------------------------------
        confirmed = tmc.stats.confirmed
        await wait_for(lambda: tmc.stats.confirmed > confirmed + 50, 30, "the stream flowing")
        await wait_for(lambda: any(c.in_flight > 0 for c in tmc.connections()), 10, "messages in flight")
        second = survivors[0]
        kill_sent[second.name] = datetime.now(UTC)
        second.process.send(signal.SIGKILL)
        assert await second.process.wait(10) == -signal.SIGKILL
        last = survivors[1]
        published = tmc.stats.published
        await wait_for(lambda: tmc.stats.published > published + 50, 20, "the market going on")
        market.pause()

        async def settled() -> bool:
            if tmc.pending(standin.app_key) or tmc.stats.confirmed != tmc.stats.published:
                return False
            unfinished = await pool.fetchval(
                "SELECT count(*) FROM gap_reports"
                " WHERE cause IN ('restart', 'disconnect') AND outcome IS NULL"
            )
            return int(unfinished) == 0

        await wait_for_async(settled, 60, "every message confirmed and every restart gap recovered")

        await _assert_equal_to_the_truth(standin, pool, sync_from)
        _assert_one_replica_at_a_time_per_shop(standin, replicas, kill_sent)
        await _assert_the_work_moved(pool, victim)
        await _assert_the_survivor_leads_everything(last, nicks)
    except BaseException:
        for replica in replicas:
            print(f"---- {replica.name}:\n{replica.process.log_tail(40)}")
        raise
    finally:
        market.pause()
        for replica in replicas:
            await replica.process.stop()


async def _leader_mid_backfill(standin: StandIn, pool: asyncpg.Pool, within: float) -> tuple[str, str]:
    """A replica that leads a shop and has read a few of its 72 restart windows, not all."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        reads = Counter((replica_of(c), c.shop) for c in increment_calls(standin))
        rows = await pool.fetch("SELECT replica, leads FROM replicas WHERE stopped_at IS NULL")
        for row in rows:
            for shop in row["leads"]:
                if reads[(row["replica"], shop)] >= 6:
                    return row["replica"], shop
        await asyncio.sleep(0.02)  # polling the call log and the replicas table
    raise AssertionError(f"no replica was backfilling a shop it leads within {within:g} s")


async def _assert_equal_to_the_truth(standin: StandIn, pool: asyncpg.Pool, sync_from: datetime) -> None:
    market = standin.market
    changes = list(market.changes)
    assert len(changes) > 100
    since = int(sync_from.timestamp()) + 1
    # Every trade the market changed, and every trade the 12-hour gap held (the backfill's work).
    gap_trades = {r.tid for r in market.records() if r.modified >= since}
    wanted = gap_trades | {c.tid for c in changes}
    comparison = await compare_with_market(pool, market, wanted)
    assert comparison.ok, comparison.to_json()
    assert comparison.matched == len(wanted)

    rows = await pool.fetch("SELECT position, tid, modified, status FROM trade_changes ORDER BY position")
    # Each change once: never more feed rows for a trade at one `modified` second than the market made
    # changes to it in that second (a history trade's one state counts as one).
    made = Counter((c.tid, int(c.modified.timestamp())) for c in changes)
    fed = Counter((int(r["tid"]), int(r["modified"].timestamp())) for r in rows)
    twice = {key: n for key, n in fed.items() if n > max(1, made[key])}
    assert not twice, list(twice.items())[:5]
    # The newest feed row of each trade is the truth (the ERP reading the feed ends up right).
    newest = {int(r["tid"]): (int(r["modified"].timestamp()), r["status"]) for r in rows}
    for tid in wanted:
        truth = market.record(tid)
        assert truth is not None
        assert newest.get(tid) == (truth.modified, truth.status), tid


Term = tuple[str, datetime, datetime]  # replica, leading from, leading until


def leadership_terms(replicas: list[Replica], kill_sent: dict[str, datetime]) -> dict[str, list[Term]]:
    """shop → every replica's terms as its leader, from the replicas' JSON logs. A replica logs that it
    leads a shop after taking the lock and that it handed it over before releasing it; a killed
    replica's open terms end when it was sent SIGKILL."""
    terms: dict[str, list[Term]] = defaultdict(list)
    for replica in replicas:
        opened: dict[str, datetime] = {}
        for line in replica.process.log_path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            action, shop = entry.get("action"), entry.get("shop")
            at = datetime.fromisoformat(entry["ts"])
            if action == "leadership_acquired":
                opened[shop] = at
            elif action in ("leadership_released", "leadership_lost") and shop in opened:
                terms[shop].append((replica.name, opened.pop(shop), at))
        until = kill_sent.get(replica.name, FOREVER)
        for shop, since in opened.items():
            terms[shop].append((replica.name, since, until))
    return terms


def _assert_one_replica_at_a_time_per_shop(
    standin: StandIn, replicas: list[Replica], kill_sent: dict[str, datetime]
) -> None:
    terms = leadership_terms(replicas, kill_sent)
    assert sorted(terms) == sorted(shop.nick for shop in standin.shops)
    for shop, shop_terms in terms.items():
        ordered = sorted(shop_terms, key=lambda term: term[1])
        for before, after in itertools.pairwise(ordered):
            assert after[1] >= before[2], (shop, before, after)  # PostgreSQL's lock: never two leaders
    calls = increment_calls(standin)
    assert all(replica_of(c) in REPLICAS for c in calls), {c.params.get("partner_id") for c in calls}
    # A call already on the wire when its replica was killed is logged by the stand-in a little later.
    in_flight = timedelta(milliseconds=200)
    outside = [
        (c.shop, replica_of(c), c.at.isoformat())
        for c in calls
        if not any(
            r == replica_of(c) and since <= c.at <= until + in_flight
            for r, since, until in terms.get(c.shop or "", [])
        )
    ]
    assert not outside, outside[:10]
    # The work was spread: every shop was reconciled, by more than one replica over the run.
    assert len({c.shop for c in calls}) == SHOPS
    assert len({replica_of(c) for c in calls}) == len(REPLICAS)


async def _assert_the_work_moved(pool: asyncpg.Pool, victim: str) -> None:
    rows = await pool.fetch("SELECT shop, replica, replicas, detected_by, outcome FROM gap_reports")
    assert all(r["outcome"] is not None for r in rows if r["replicas"])
    # A gap report the victim was working on was finished by another replica.
    moved = [r for r in rows if victim in r["replicas"] and r["replicas"][-1] != victim]
    assert moved, [dict(r) for r in rows]
    assert all(r["replica"] == r["replicas"][-1] for r in rows if r["replicas"])


async def _assert_the_survivor_leads_everything(last: Replica, nicks: list[str]) -> None:
    port = last.http_port()
    assert port is not None
    async with aiohttp.ClientSession() as http:

        async def leads_all() -> bool:
            async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                body = json.loads(await response.text())
            replica = body["replica"]
            return bool(replica["id"] == last.name and sorted(replica["leads"]) == sorted(nicks))

        await wait_for_async(leads_all, 10, "the last replica to lead every shop")
        async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
            metrics = await response.text()
    assert f'order_sync_replica_info{{replica="{last.name}"}} 1' in metrics
    assert "order_sync_replicas_live 1" in metrics
