"""A gap report lists every trade its backfill brought in, even when the database fails in the middle of
a window: the batches applied before the failure are recorded with the report, so the next pass (which
finds them unchanged) does not leave them out."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from common.intervals import Interval
from reconciler.backfill import BackfillConfig
from reconciler.plan import floor_second
from simulator.standin import StandIn, StandInConfig
from store.errors import StoreError
from store.gap_reports import Outcome
from store.pg import PgStore
from taobao.models import Trade
from tests.reconciler.conftest import make_reconciler, small_config, top_client


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    stand_in = StandIn(StandInConfig(seed=71, shops=1, market_rate=0, history_trades=120, history_days=2))
    async with stand_in:
        yield stand_in


async def test_trades_applied_before_a_database_failure_stay_in_the_report(
    standin: StandIn, pg: PgStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    shop = standin.shops[0].nick
    applied = pg.apply_trades
    calls = 0

    async def failing_once(trades: Sequence[Trade], **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise StoreError("apply_trades failed: connection was closed in the middle of operation")
        return await applied(trades, **kwargs)

    monkeypatch.setattr(pg, "apply_trades", failing_once)
    config = small_config(max_span=timedelta(hours=20), backfill=BackfillConfig(concurrency=1, apply_batch=5))
    now = datetime.now(UTC)
    window = Interval(floor_second(now - timedelta(days=3)), floor_second(now - timedelta(minutes=5)))
    async with top_client(standin) as client:
        reconciler = make_reconciler(standin, pg, client, config)
        with pytest.raises(StoreError):
            await reconciler.backfill(shop, window)
        assert calls == 3
        [report] = await reconciler.reports.recent(10, shop)
        done = await reconciler.process(report, fresh=True)

    assert done.outcome == Outcome.RECOVERED.value
    stored = {int(r["tid"]) for r in await pg.pool.fetch("SELECT tid FROM trades")}
    assert len(stored) > 10  # more than the two batches applied before the failure
    listed = {t.tid for t in await reconciler.reports.trades(done.id)}
    assert listed == stored, sorted(stored - listed)[:5]
