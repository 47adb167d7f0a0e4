"""List lag is real and the overlap knob is what copes with it (docs/sync-rules.md#overlap,
docs/top-api.md#data-delay): the stand-in shows a change in the lists only D seconds after its `modified`.
With an overlap of at least D nothing the ledger calls proven is missing; with less, the test finds trades
missing inside a stretch the ledger claims (the knob matters). The reconciler also measures the lag and widens
the overlap itself.

The stand-in runs on a manual clock (within the gateway's ten-minute timestamp tolerance), so minutes
of lag take no time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from common.intervals import Interval
from reconciler.plan import floor_second
from simulator.clock import ManualClock
from simulator.compare import compare_with_market
from simulator.standin import StandIn, StandInConfig
from store.coverage import ProvenBy
from store.gap_reports import Outcome
from store.pg import PgStore
from taobao.models import Trade
from tests.reconciler.conftest import make_reconciler, small_config, top_client

LAG = 120  # seconds the lists lag behind


@pytest.fixture
async def clock() -> ManualClock:
    return ManualClock(floor_second(datetime.now(UTC) - timedelta(minutes=4)))


@pytest.fixture
async def standin(clock: ManualClock) -> AsyncIterator[StandIn]:
    stand_in = StandIn(StandInConfig(seed=91, shops=1, market_rate=0, history_trades=50), clock=clock)
    await stand_in.start()
    stand_in.faults.list_lag_seconds = LAG
    try:
        yield stand_in
    finally:
        await stand_in.stop()


def trade_for_a_while(standin: StandIn, clock: ManualClock, seconds: int) -> datetime:
    """Two market changes every second of manual time; returns the time of the last."""
    for _ in range(seconds):
        clock.advance(1)
        standin.market.step(2)
    return clock.now()


async def missing_in(pg: PgStore, standin: StandIn, proven: list[Interval]) -> list[int]:
    """Trades whose current `modified` lies in a proven stretch but that the database lacks or has older."""
    tids = [
        rec.tid
        for rec in standin.market.records()
        if any(i.start.timestamp() <= rec.modified < i.end.timestamp() for i in proven)
    ]
    comparison = await compare_with_market(pg.pool, standin.market, tids)
    return comparison.lost + comparison.stale


@pytest.mark.parametrize(
    ("overlap", "misses"), [(60, True), (180, False)], ids=["overlap<lag", "overlap>=lag"]
)
async def test_the_overlap_must_cover_the_list_lag(
    standin: StandIn, clock: ManualClock, pg: PgStore, overlap: int, misses: bool
) -> None:
    shop = standin.shops[0].nick
    start = clock.now()
    now = trade_for_a_while(standin, clock, 300)
    async with top_client(standin) as client:
        config = small_config(overlap=timedelta(seconds=overlap))
        reconciler = make_reconciler(standin, pg, client, config, now=clock.now)
        report = await reconciler.backfill(shop, Interval(start, now))
        proven = await reconciler.ledger.intervals(shop, kinds=[ProvenBy.BACKFILL])
        assert proven
        assert proven[-1].end == now - timedelta(seconds=overlap)  # proof stops at the lag horizon

        clock.advance(LAG + 60)  # every change is visible in the lists now
        missing = await missing_in(pg, standin, proven)
        if misses:
            # Trades created within the lag before the horizon were invisible when the window was read,
            # yet the ledger calls their time proven: exactly what a too small overlap costs.
            assert len(missing) >= 3
        else:
            assert missing == []
            # The rest of the window is proven once the horizon has passed it.
            await reconciler.process(await reconciler.reports.get(report.id), fresh=False)
            final = await reconciler.reports.get(report.id)
            assert final.outcome == Outcome.RECOVERED.value
            assert await missing_in(pg, standin, [Interval(start, now)]) == []


async def test_measured_lag_widens_the_overlap(standin: StandIn, clock: ManualClock, pg: PgStore) -> None:
    shop = standin.shops[0].nick
    start = clock.now()
    now = trade_for_a_while(standin, clock, 300)
    # The stream delivered every change as it happened: the database is current.
    current = [Trade.model_validate(standin.market.trade(rec.tid)) for rec in standin.market.records()]
    await pg.apply_trades(current, source="stream")
    async with top_client(standin) as client:
        config = small_config(overlap=timedelta(seconds=60))
        reconciler = make_reconciler(standin, pg, client, config, now=clock.now)
        assert reconciler.lag.overlap(now) == timedelta(seconds=60)
        report = await reconciler.backfill(shop, Interval(start, now))
    # Trades stored with a `modified` inside the window, unchanged since, yet not listed: the list lags.
    assert report.list_lag_seconds is not None
    assert 60 <= report.list_lag_seconds < LAG + 5
    widened = reconciler.lag.overlap(clock.now())
    assert widened >= timedelta(seconds=LAG)
    assert widened == timedelta(seconds=int(report.list_lag_seconds * 1.5 + 0.999))
