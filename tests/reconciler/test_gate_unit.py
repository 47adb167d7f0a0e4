"""Backfill before resume (reconciler/gate.py) over the in-memory storage: the gate reads what was missed
before the stream resumes, or hands it to the side task when told to stream during the backfill; with
several replicas it waits for the other leaders, never forever, and reads the shops it takes over."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from common.intervals import Interval
from reconciler.coordination import Alone
from reconciler.plan import floor_second
from store.coverage import ProvenBy
from store.gap_reports import Cause, Outcome
from taobao.models import TradePage
from taobao.tmc.events import Connected, Disconnected
from tests.integration.harness import wait_for_async
from tests.reconciler.fakes import T0, FakeTop, Unit, unit_config, unit_reconciler

HOUR = timedelta(hours=1)


class Peers(Alone):
    """Another replica leads the shops in `theirs`; `changed` waits a moment (a heartbeat round)."""

    def __init__(self, theirs: set[str]) -> None:
        self.theirs = theirs
        self.connected = False
        self.rounds = 0
        self.on_round: list[str] = []  # shops taken over at the next round, one per round

    def leads(self, shop: str) -> bool:
        return shop not in self.theirs

    def peer_connected(self) -> bool:
        return self.connected

    async def changed(self, within: float) -> None:
        self.rounds += 1
        if self.on_round:
            self.theirs.discard(self.on_round.pop(0))
            return
        await asyncio.sleep(min(within, 0.01))


async def restarted(unit: Unit, shops: list[str]) -> None:
    """Each shop followed until an hour ago, and changed since."""
    for n, shop in enumerate(shops):
        await unit.reconciler.ledger.register_shop(shop, T0 - 10 * HOUR)
        await unit.reconciler.ledger.prove(shop, Interval(T0 - 10 * HOUR, T0 - HOUR), ProvenBy.STREAM)
        for i in range(5):
            unit.top.change(shop, 100 * (n + 1) + i, T0 - HOUR + timedelta(minutes=10 * i + 1))


async def test_the_gate_reads_what_was_missed_before_the_stream_resumes() -> None:
    unit = unit_reconciler()
    await restarted(unit, ["shop-a"])
    await unit.reconciler.gate()
    assert len(unit.db.trades.rows) == 5  # in the database before the session connects
    [report] = await unit.reconciler.reports.recent(10)
    assert report.cause == Cause.RESTART.value
    assert report.fresh_until is not None  # the newest seconds are read fresh, proven later
    assert unit.reconciler.metrics.gate_seconds.count() == 1
    assert unit.reconciler.last_gate_seconds is not None


async def test_streaming_during_the_backfill_leaves_the_reading_to_the_side_task() -> None:
    unit = unit_reconciler(config=unit_config(stream_during_backfill=True))
    await restarted(unit, ["shop-a"])
    await unit.reconciler.gate()
    assert unit.top.calls == []  # the session connects at once
    side = asyncio.create_task(unit.reconciler.run())
    try:

        async def read() -> bool:
            return len(unit.db.trades.rows) == 5

        await wait_for_async(read, 5, "the side task's fresh round")
    finally:
        side.cancel()
        await asyncio.gather(side, return_exceptions=True)


async def test_the_gate_waits_for_another_leader_only_so_long_and_not_when_a_peer_is_connected() -> None:
    peers = Peers({"shop-b"})
    unit = unit_reconciler(
        shops=["shop-a", "shop-b"], config=unit_config(peer_wait_seconds=0.2), coordination=peers
    )
    await restarted(unit, ["shop-a", "shop-b"])
    await unit.reconciler.gate()
    assert peers.rounds >= 2  # it waited, then gave up at the bound
    assert {t // 100 for t in unit.db.trades.rows} == {1}  # only its own shop was read
    peers.connected = True
    rounds = peers.rounds
    await unit.reconciler.gate()
    assert peers.rounds == rounds  # the group's queue is consumed already: no wait


async def test_a_shop_taken_over_during_the_wait_is_read_before_the_stream_resumes() -> None:
    peers = Peers({"shop-b"})
    peers.on_round = ["shop-b"]  # its leader dies: the next heartbeat round hands it over
    unit = unit_reconciler(
        shops=["shop-a", "shop-b"], config=unit_config(peer_wait_seconds=30), coordination=peers
    )
    await restarted(unit, ["shop-a", "shop-b"])
    await unit.reconciler.gate()
    assert {t // 100 for t in unit.db.trades.rows} == {1, 2}
    restarts = [r for r in await unit.reconciler.reports.recent(10) if r.cause == Cause.RESTART.value]
    assert all("unit" in r.replicas for r in restarts)
    assert all(r.outcome != Outcome.FAILED.value for r in restarts)


class LateTakeover(Peers):
    """The shops in `theirs` are handed over right after this replica was first told it does not lead
    them: the takeover lands while the gate's read of its own shops is still going on."""

    def leads(self, shop: str) -> bool:
        led = super().leads(shop)
        if not led:
            self.theirs.discard(shop)
        return led


async def test_a_shop_taken_over_while_the_gate_reads_is_read_too_before_the_stream_resumes() -> None:
    peers = LateTakeover({"shop-b"})
    unit = unit_reconciler(
        shops=["shop-a", "shop-b"], config=unit_config(peer_wait_seconds=30), coordination=peers
    )
    await restarted(unit, ["shop-a", "shop-b"])
    await unit.reconciler.gate()
    assert {t // 100 for t in unit.db.trades.rows} == {1, 2}


class TogetherTop(FakeTop):
    """Each shop's first list call waits (up to `within` seconds) until every shop has one in flight:
    shops read one after another never get there, and the calls go on once the wait runs out."""

    def __init__(self, sessions: Mapping[str, str], *, within: float = 5.0) -> None:
        super().__init__(sessions)
        self.in_flight: set[str] = set()
        self.most_together = 0
        self._all_in = asyncio.Event()
        self._within = within

    async def trades_sold_increment_get(self, session: str, **kwargs: Any) -> TradePage:
        shop = self._shop(session)
        self.in_flight.add(shop)
        self.most_together = max(self.most_together, len(self.in_flight))
        if len(self.in_flight) == len(self._shops):
            self._all_in.set()
        try:
            if not self._all_in.is_set():
                try:
                    async with asyncio.timeout(self._within):
                        await self._all_in.wait()
                except TimeoutError:
                    pass
            return await super().trades_sold_increment_get(session, **kwargs)
        finally:
            self.in_flight.discard(shop)


async def test_the_gate_reads_the_shops_at_the_same_time() -> None:
    shops = ["shop-a", "shop-b", "shop-c"]
    top = TogetherTop({shop: f"session-of-{shop}" for shop in shops})
    unit = unit_reconciler(shops=shops, top=top)
    await restarted(unit, shops)
    await unit.reconciler.gate()
    assert top.most_together == len(shops)  # every shop's list call was in flight at once
    assert {t // 100 for t in unit.db.trades.rows} == {1, 2, 3}


async def disconnected_for(unit: Unit, up: float, down: float) -> datetime:
    """The shops followed until now, then the stream up for `up` seconds and down for `down`; returns
    when the connection ended."""
    for shop in unit.shops:
        await unit.reconciler.ledger.register_shop(shop, T0 - HOUR)
        await unit.reconciler.ledger.prove(shop, Interval(T0 - HOUR, T0), ProvenBy.STREAM)
    await unit.reconciler.start()
    await unit.reconciler.on_state(Connected(at=unit.clock.now, token="t"))
    gone = unit.clock.advance(up)
    await unit.reconciler.on_state(Disconnected(at=gone, reason="connection lost", uptime=up))
    unit.clock.advance(down)
    return gone


async def test_the_gate_reads_from_where_the_outage_began_not_an_overlap_before_it() -> None:
    overlap, safety_lag = timedelta(minutes=10), timedelta(seconds=1)
    unit = unit_reconciler(config=unit_config(overlap=overlap, safety_lag=safety_lag))
    before = unit.top.change("shop-a", 101, T0 + timedelta(seconds=30))  # the stream had it
    gone = await disconnected_for(unit, up=60, down=5)
    during = unit.top.change("shop-a", 102, gone + timedelta(seconds=2))
    await unit.reconciler.gate()

    [report] = await unit.reconciler.reports.recent(10)
    assert report.cause == Cause.DISCONNECT.value
    outage_start = floor_second(report.window_start - safety_lag)
    gate_lists = unit.top.calls_of("increment")
    assert gate_lists
    assert min(call["start"] for call in gate_lists) == outage_start  # not `report.window_start - overlap`
    assert during.tid in unit.db.trades.rows  # what the outage missed is in before the stream resumes
    assert before.tid not in unit.db.trades.rows  # the time before it was not read again
    assert report.outcome is None  # read ahead, not proven
    assert report.progress_until is None

    # Once the lag horizon has passed the outage, its proof pass reads from an overlap before it.
    unit.clock.advance(overlap.total_seconds() + 10)
    await unit.reconciler.recover(fresh=False)
    proof_lists = unit.top.calls_of("increment")[len(gate_lists) :]
    assert min(call["start"] for call in proof_lists) == floor_second(report.window_start - overlap)
    assert (await unit.reconciler.reports.get(report.id)).outcome == Outcome.RECOVERED.value


async def test_an_outage_too_recent_for_the_gate_is_read_on_the_next_round_not_at_the_horizon() -> None:
    overlap, safety_lag = timedelta(minutes=10), timedelta(seconds=3)
    unit = unit_reconciler(config=unit_config(overlap=overlap, safety_lag=safety_lag))
    gone = await disconnected_for(unit, up=60, down=1)
    during = unit.top.change("shop-a", 102, gone + timedelta(seconds=1))
    await unit.reconciler.gate()  # lists cannot show the outage yet: nothing to read
    assert during.tid not in unit.db.trades.rows

    # The next rounds, once lists can show it, read the part no pass has read: long before the lag
    # horizon (ten minutes) passes the report.
    unit.clock.advance(safety_lag.total_seconds() + 2)
    await unit.reconciler.recover(fresh=False)
    assert during.tid in unit.db.trades.rows
    [report] = await unit.reconciler.reports.recent(10)
    assert report.outcome is None  # read ahead, proven later by its proof pass
    assert report.fresh_until is not None
