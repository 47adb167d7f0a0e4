"""A new shop's initial load against the stand-in: TOPATS up to yesterday 23:59:59 (GMT+8), then the
increment from today 00:00:00; resumed after an interruption without creating its tasks again; and
sold.get day by day (use_has_next, fields=tid, then fullinfo) when TOPATS is not available."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from common.intervals import Interval
from reconciler.initial_load import InitialLoader
from reconciler.load_plan import local_midnight
from simulator.compare import compare_with_market
from simulator.standin import StandIn, StandInConfig
from store.coverage import ProvenBy
from store.gap_reports import Cause
from store.pg import PgStore
from taobao.client import TopClient
from taobao.fields import (
    ALL_TRADE_TYPES,
    TOPATS_RESULT_GET,
    TOPATS_TRADES_SOLD_GET,
    TRADES_SOLD_GET,
    TRADES_SOLD_INCREMENT_GET,
)
from taobao.timefmt import GMT8, parse_top_time
from tests.reconciler.conftest import make_reconciler, top_client


@pytest.fixture
async def standin(request: pytest.FixtureRequest) -> AsyncIterator[StandIn]:
    trades, days = getattr(request, "param", (1500, 90))
    stand_in = StandIn(
        StandInConfig(seed=45, shops=1, market_rate=0, history_trades=trades, history_days=days)
    )
    async with stand_in:
        yield stand_in


def all_tids(standin: StandIn) -> list[int]:
    return [rec.tid for rec in standin.market.records()]


async def test_topats_history_then_the_increment_from_today(standin: StandIn, pg: PgStore) -> None:
    shop, session = standin.shops[0].nick, standin.shops[0].session
    standin.market.step(40)  # today's business: only the increment sees it
    async with top_client(standin) as client:
        reconciler = make_reconciler(standin, pg, client)
        state = await reconciler.loader.begin(shop, 90)
        state = await reconciler.loader.run(shop, session)
        assert state.done
        assert state.method == "topats"
        today = local_midnight(datetime.now(UTC))
        assert (state.since, state.until) == (today - timedelta(days=90), today)
        assert state.report_id is not None
        report = await reconciler.process(await reconciler.reports.get(state.report_id), fresh=True)
        proven = await reconciler.ledger.coverage(shop)

    assert (await compare_with_market(pg.pool, standin.market, all_tids(standin))).ok
    # History: three tasks of at most 30 days, whole days up to yesterday, polled and downloaded.
    creates = standin.stats.calls_of(TOPATS_TRADES_SOLD_GET)
    ranges = sorted((c.params["start_time"], c.params["end_time"]) for c in creates)
    days = [(date.fromisoformat(_dashed(a)), date.fromisoformat(_dashed(b))) for a, b in ranges]
    assert days[0][0] == (today - timedelta(days=90)).date()
    assert days[-1][1] == (today - timedelta(days=1)).date()  # yesterday
    assert all((b - a).days < 30 for a, b in days)
    assert all(b2 == b1 + timedelta(days=1) for (_, b1), (b2, _) in itertools.pairwise(days))
    assert standin.stats.calls_of(TOPATS_RESULT_GET)
    assert not standin.stats.calls_of(TRADES_SOLD_GET)
    # Then the increment, from today 00:00:00 (shifted back by the overlap).
    increments = standin.stats.calls_of(TRADES_SOLD_INCREMENT_GET)
    first = min(parse_top_time(c.params["start_modified"]) for c in increments)
    assert first == today - timedelta(seconds=2)
    kinds = {c.proven_by for c in proven}
    assert kinds == {ProvenBy.INITIAL_LOAD, ProvenBy.BACKFILL}
    assert Interval(state.since, state.until) in [c.interval for c in proven]
    assert report.cause == Cause.INITIAL_LOAD.value
    assert report.trades_found >= len(standin.market) - 40
    # The increment part is proven up to the lag horizon; the rest waits for it.
    assert report.progress_until is not None
    assert report.progress_until >= datetime.now(UTC) - timedelta(seconds=10)


class InterruptedClient(TopClient):
    """Dies (as a process would) on the second download."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.downloads = 0

    async def download_topats_result(self, url: str, dest: Any, *, check_code: str | None) -> None:
        self.downloads += 1
        if self.downloads == 2:
            raise RuntimeError("power cut")
        await super().download_topats_result(url, dest, check_code=check_code)


async def test_an_interrupted_load_resumes_with_its_tasks(standin: StandIn, pg: PgStore) -> None:
    shop, session = standin.shops[0].nick, standin.shops[0].session
    async with top_client(standin, cls=InterruptedClient) as client:
        reconciler = make_reconciler(standin, pg, client)
        await reconciler.loader.begin(shop, 90)
        with pytest.raises(RuntimeError, match="power cut"):
            await reconciler.loader.run(shop, session)
        parts = await reconciler.loader.parts(shop)
        assert [p.state for p in parts] == ["done", "started", "started"]
        assert all(p.task_id is not None for p in parts)
    creates = len(standin.stats.calls_of(TOPATS_TRADES_SOLD_GET))
    assert creates == 3

    async with top_client(standin) as client:
        loader: InitialLoader = make_reconciler(standin, pg, client).loader
        state = await loader.run(shop, session)
    assert state.done
    assert len(standin.stats.calls_of(TOPATS_TRADES_SOLD_GET)) == creates  # the tasks were polled again
    history = [rec.tid for rec in standin.market.records() if rec.created < state.until.timestamp()]
    assert state.trades == len(history)  # created before today: today's trades are the increment's
    assert (await compare_with_market(pg.pool, standin.market, history)).ok


@pytest.mark.parametrize("standin", [(900, 6)], indirect=True)
async def test_without_topats_each_day_is_read_through_sold_get(standin: StandIn, pg: PgStore) -> None:
    shop, session = standin.shops[0].nick, standin.shops[0].session
    # The platform has retired TOPATS: the stand-in answers it like an unknown method (code 22).
    standin.gateway._methods.pop(TOPATS_TRADES_SOLD_GET)
    async with top_client(standin) as client:
        reconciler = make_reconciler(standin, pg, client)
        await reconciler.loader.begin(shop, 7)
        state = await reconciler.loader.run(shop, session)
    assert state.done
    assert state.method == "sold_get"
    history = [rec.tid for rec in standin.market.records() if rec.created < state.until.timestamp()]
    assert state.trades == len(history)
    assert (await compare_with_market(pg.pool, standin.market, history)).ok

    calls = standin.stats.calls_of(TRADES_SOLD_GET)
    days: dict[str, list[str]] = {}
    for call in calls:
        p = call.params
        # docs/sync-rules.md#sold-get-paging, docs/sync-rules.md#fields-tid, docs/sync-rules.md#page-size
        assert (p["fields"], p["use_has_next"], p["page_size"]) == ("tid", "true", "100")
        assert p["type"] == ",".join(ALL_TRADE_TYPES)  # docs/sync-rules.md#explicit-type
        start, end = parse_top_time(p["start_created"]), parse_top_time(p["end_created"])
        assert start.astimezone(GMT8).time().isoformat() == "00:00:00"
        assert end - start == timedelta(hours=23, minutes=59, seconds=59)  # one day per slice
        days.setdefault(p["start_created"], []).append(p["page_no"])
    assert len(days) == 7
    for pages in days.values():
        assert pages == [str(n) for n in range(1, len(pages) + 1)]  # forward until has_next=false
    assert any(len(pages) > 1 for pages in days.values())


def _dashed(day: str) -> str:
    return f"{day[:4]}-{day[4:6]}-{day[6:]}"
