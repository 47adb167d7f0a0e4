"""Idle shops are swept less often (`reconciler.sweep_schedule`): a shop with no change seen for
`idle_after` is swept every `idle_sweep_every` instead of every `sweep_every`; a push makes it active
again at once, and a change whose push was lost while it was idle is still found by its next sweep.

The stand-in and the reconciler share a manual clock (hours of it); the reconciler's rounds are run by
hand (`tick`) every 10 s of that clock, as SYNC_RECONCILE_SECONDS would."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from common.metrics import Registry
from reconciler.config import ReconcilerConfig
from reconciler.reconciler import Reconciler
from reconciler.sweep_schedule import SweepSchedule
from simulator.clock import ManualClock
from simulator.compare import compare_with_market
from simulator.standin import StandIn, StandInConfig
from store.pg import PgStore
from taobao.client import TopClient
from taobao.tmc.events import Connected, TmcMessage
from tests.reconciler.conftest import make_reconciler, small_config, top_client

INCREMENT = "taobao.trades.sold.increment.get"
TICK = 10  # seconds between two rounds
SWEEP_EVERY = timedelta(seconds=30)
IDLE_AFTER = timedelta(seconds=120)
IDLE_EVERY = timedelta(seconds=300)


def test_an_idle_shop_is_due_less_often_and_a_push_makes_it_due_again() -> None:
    config = ReconcilerConfig(
        sweep_every=SWEEP_EVERY, idle_after=IDLE_AFTER, idle_sweep_every=IDLE_EVERY, api_rate=1000.0
    )
    start = datetime(2026, 1, 1, tzinfo=UTC)
    schedule = SweepSchedule(config, start)
    pushes: dict[str, datetime] = {}
    swept: list[datetime] = []
    for second in range(0, 1800, TICK):
        now = start + timedelta(seconds=second)
        for shop in schedule.due(["quiet"], now, pushes):
            schedule.swept(shop, now, found=0)
            swept.append(now)
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(swept)]
    # Active for its first two minutes (swept at 30, 60 and 90 s), then idle (every 300 s).
    assert swept[0] == start + SWEEP_EVERY
    assert gaps[:2] == [30.0, 30.0]
    assert set(gaps[2:]) == {300.0}, gaps

    # A push: due one active period after its last sweep, and every 30 s until it is idle again.
    last = swept[-1]
    now = last + timedelta(seconds=40)
    pushes["quiet"] = now
    assert schedule.due(["quiet"], now, pushes) == ["quiet"]
    # Without the push it would not have been.
    assert schedule.due(["quiet"], now, {}) == []


def test_idle_shops_weigh_less_in_the_share_so_the_active_ones_keep_their_period() -> None:
    # 100 shops, 2 calls each, a budget of 1 call/s: all active, each swept every 200 s.
    config = ReconcilerConfig(
        sweep_every=timedelta(seconds=60),
        idle_after=IDLE_AFTER,
        idle_sweep_every=timedelta(seconds=600),
        api_rate=10.0,
        reconcile_share=0.1,
    )
    start = datetime(2026, 1, 1, tzinfo=UTC)
    schedule = SweepSchedule(config, start)
    shops = [f"shop-{n}" for n in range(100)]
    assert set(schedule.intervals(shops, start, {}).values()) == {200.0}
    later = start + IDLE_AFTER
    pushes = {shop: later for shop in shops[:10]}  # ten still trade
    intervals = schedule.intervals(shops, later, pushes)
    assert intervals["shop-0"] == 60.0  # 10 active + 90 idle weighing 9: 19 shops' worth
    assert intervals["shop-50"] == 600.0


@pytest.fixture
async def clock() -> ManualClock:
    now = datetime.now(UTC)
    return ManualClock(now.replace(microsecond=0) - timedelta(hours=2))


@pytest.fixture
async def standin(clock: ManualClock) -> AsyncIterator[StandIn]:
    stand_in = StandIn(StandInConfig(seed=29, shops=1, market_rate=0, history_trades=0), clock=clock)
    # The manual clock runs hours in a few seconds: the gateway's 10-minute timestamp check would refuse.
    stand_in.gateway.config.timestamp_tolerance_seconds = 86_400
    await stand_in.start()
    try:
        yield stand_in
    finally:
        await stand_in.stop()


@pytest.fixture
async def client(standin: StandIn) -> AsyncIterator[TopClient]:
    async with top_client(standin) as top:
        yield top


def sweeps(standin: StandIn) -> int:
    return len(standin.stats.calls_of(INCREMENT))


async def rounds(reconciler: Reconciler, clock: ManualClock, seconds: int) -> None:
    for _ in range(seconds // TICK):
        clock.advance(TICK)
        await reconciler.tick()


async def is_current(pg: PgStore, standin: StandIn, tid: int) -> bool:
    return (await compare_with_market(pg.pool, standin.market, [tid])).ok


async def test_an_idle_shop_is_swept_less_often_a_lost_change_is_found_and_a_push_reactivates_it(
    standin: StandIn, clock: ManualClock, pg: PgStore, client: TopClient
) -> None:
    config = small_config(
        overlap=timedelta(seconds=3),
        sweep_every=SWEEP_EVERY,
        idle_after=IDLE_AFTER,
        idle_sweep_every=IDLE_EVERY,
    )
    registry = Registry()
    reconciler = make_reconciler(standin, pg, client, config, now=clock.now, registry=registry)
    shop = standin.shops[0].nick
    await reconciler.start()
    await reconciler.on_state(Connected(clock.now(), "token"))

    # Active: its first minutes are swept every 30 s.
    before = sweeps(standin)
    await rounds(reconciler, clock, 120)
    assert sweeps(standin) - before >= 3

    # Idle: ten minutes cost two sweeps, not twenty.
    await rounds(reconciler, clock, 60)
    before = sweeps(standin)
    await rounds(reconciler, clock, 600)
    assert 1 <= sweeps(standin) - before <= 2, sweeps(standin) - before

    # A change whose push is lost: not read on the next round, found by the shop's next idle sweep.
    lost = standin.market.step(1)[0].tid
    await rounds(reconciler, clock, TICK)
    assert not await is_current(pg, standin, lost)
    await rounds(reconciler, clock, int(IDLE_EVERY.total_seconds()))
    assert await is_current(pg, standin, lost)

    # Idle again; a push makes it active at once: swept within one active period.
    await rounds(reconciler, clock, int((IDLE_AFTER + IDLE_EVERY).total_seconds()))
    assert reconciler.schedule.idle(shop, clock.now(), reconciler.watch.last_push)
    assert f'order_sync_reconciler_shop_sweep_idle{{shop="{shop}"}} 1' in registry.render()
    message = TmcMessage(id=1, topic="taobao_trade_TradeChanged", content="{}", time=clock.now(), nick=shop)
    reconciler.watch.received(message)
    reconciler.watch.settled(message.id)
    assert not reconciler.schedule.idle(shop, clock.now(), reconciler.watch.last_push)
    before = sweeps(standin)
    await rounds(reconciler, clock, int(SWEEP_EVERY.total_seconds()))
    assert sweeps(standin) > before
