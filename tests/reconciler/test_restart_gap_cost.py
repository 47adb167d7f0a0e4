"""A recent gap (a restart's) costs few list calls: read ahead once at the start, then proven in one
window when the lag horizon has passed its end, instead of a proof window per round as the horizon
creeps forward, each shifted back by the overlap and fetching every trade in it again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from common.intervals import Interval
from reconciler.plan import floor_second
from simulator.compare import compare_with_market
from simulator.standin import StandIn, StandInConfig
from store.gap_reports import Outcome
from store.pg import PgStore
from taobao.fields import TRADE_FULLINFO_GET, TRADES_SOLD_INCREMENT_GET
from tests.reconciler.conftest import make_reconciler, small_config, top_client, wait_for_async

OVERLAP = timedelta(seconds=4)


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    stand_in = StandIn(StandInConfig(seed=67, shops=1, market_rate=0, history_trades=200, history_days=1))
    async with stand_in:
        yield stand_in


async def test_a_recent_gap_is_proven_in_one_window_once_the_horizon_passes_it(
    standin: StandIn, pg: PgStore
) -> None:
    shop = standin.shops[0].nick
    async with top_client(standin) as client:
        reconciler = make_reconciler(standin, pg, client, small_config(overlap=OVERLAP))
        standin.market.step(60)
        now = datetime.now(UTC)
        gap = Interval(floor_second(now - timedelta(seconds=2)), floor_second(now) + timedelta(seconds=1))
        report = await reconciler.backfill(shop, gap)  # read ahead (fresh): proof waits for the horizon
        assert report.outcome is None

        async def proven() -> bool:
            await reconciler.tick()
            return (await reconciler.reports.get(report.id)).outcome == Outcome.RECOVERED.value

        await wait_for_async(proven, 20, "the report to be proven once the horizon passed its end")

    done = await reconciler.reports.get(report.id)
    changed = {c.tid for c in standin.market.changes}
    assert (await compare_with_market(pg.pool, standin.market, sorted(changed))).ok
    lists = standin.stats.calls_of(TRADES_SOLD_INCREMENT_GET, shop)
    fullinfo = standin.stats.calls_of(TRADE_FULLINFO_GET, shop)
    # The read ahead (a proof window up to the horizon and a fresh one), then one proof window.
    assert done.list_calls == len(lists) <= 4, [
        (c.params["start_modified"], c.params["end_modified"]) for c in lists
    ]
    assert len(fullinfo) <= 2 * len(changed) + 8, (len(fullinfo), len(changed))
