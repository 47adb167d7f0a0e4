"""Increment backfill against the stand-in over real sockets and a real PostgreSQL:
docs/sync-rules.md#rule-index as the gateway saw them (docs/sync-rules.md#explicit-type types,
docs/sync-rules.md#backward-paging, docs/sync-rules.md#count-then-walk-back pages last → first after one
counting call, docs/sync-rules.md#overlap overlap, docs/sync-rules.md#fields-tid, docs/sync-rules.md#page-size
fields=tid and page size 100, windows ≤ 23:59:59), service rejections narrowing the window, ISV errors never
retried, and the ledger never advancing over a failed window."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from common.intervals import Interval
from reconciler.backfill import BackfillConfig, WindowReader
from reconciler.plan import Window, floor_second
from simulator.compare import compare_with_market
from simulator.gateway import CallRecord
from simulator.standin import StandIn, StandInConfig
from store.coverage import ProvenBy
from store.gap_reports import Outcome, PassCounts
from store.pg import PgStore
from store.pg_reconciler import PgTrades
from taobao.client import TopClient
from taobao.fields import ALL_TRADE_TYPES, TRADES_SOLD_INCREMENT_GET
from taobao.limiter import Priority
from taobao.models import TradePage
from taobao.timefmt import parse_top_time
from tests.reconciler.conftest import make_reconciler, small_config, top_client, wait_for_async


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    stand_in = StandIn(StandInConfig(seed=61, shops=2, market_rate=0, history_trades=3000, history_days=4))
    async with stand_in:
        yield stand_in


def truth_tids(standin: StandIn, shop: str, lo: datetime, hi: datetime) -> list[int]:
    """Trades of `shop` whose current `modified` is in [lo, hi]."""
    index = standin.market.shop_index(shop)
    return [
        rec.tid for rec in standin.market.records(index) if lo.timestamp() <= rec.modified <= hi.timestamp()
    ]


def list_calls(standin: StandIn, shop: str) -> list[CallRecord]:
    return standin.stats.calls_of(TRADES_SOLD_INCREMENT_GET, shop)


def window_of(call: CallRecord) -> tuple[datetime, datetime]:
    return parse_top_time(call.params["start_modified"]), parse_top_time(call.params["end_modified"])


async def test_a_manual_backfill_follows_the_seed_rules_and_ends_equal_to_the_truth(
    standin: StandIn, pg: PgStore
) -> None:
    shop = standin.shops[0].nick
    async with top_client(standin) as client:
        reconciler = make_reconciler(standin, pg, client, small_config(max_span=timedelta(hours=20)))
        now = datetime.now(UTC)
        since, until = floor_second(now - timedelta(days=2)), floor_second(now - timedelta(hours=3))
        report = await reconciler.backfill(shop, Interval(since, until))

    expected = truth_tids(standin, shop, since, until)
    assert len(expected) > 300  # several pages per window
    comparison = await compare_with_market(pg.pool, standin.market, expected)
    assert comparison.ok, comparison.to_json()

    calls = list_calls(standin, shop)
    windows: dict[tuple[datetime, datetime], list[CallRecord]] = {}
    for call in calls:
        params = call.params
        # docs/sync-rules.md#explicit-type: every type, explicitly
        assert params["type"] == ",".join(ALL_TRADE_TYPES)
        assert params["fields"] == "tid,modified"  # docs/sync-rules.md#fields-tid-modified
        assert params["page_size"] == "100"
        start, end = window_of(call)
        assert timedelta(0) < end - start <= timedelta(hours=23, minutes=59, seconds=59)
        windows.setdefault((start, end), []).append(call)
    ordered = sorted(windows)
    # docs/sync-rules.md#overlap: shifted back by the overlap
    assert ordered[0][0] == since - timedelta(seconds=2)
    assert ordered[-1][1] == until
    for left, right in itertools.pairwise(ordered):
        assert left[1] == right[0]  # windows touch: no second left out
    paged = 0
    for (start, end), group in windows.items():
        count, *pages = group
        assert (count.params["page_no"], count.params["use_has_next"]) == ("1", "false")  # one counting call
        total = len(truth_tids(standin, shop, start, end))
        expected_pages = [str(n) for n in range((total + 99) // 100, 0, -1)] if total > 100 else []
        # docs/sync-rules.md#backward-paging: last page back to the first
        assert [p.params["page_no"] for p in pages] == expected_pages
        assert all(p.params["use_has_next"] == "true" for p in pages)
        paged += bool(pages)
    assert paged >= 2

    assert report.outcome == Outcome.RECOVERED.value
    assert report.trades_found == len(expected)
    assert report.trades_new == len(expected)  # an empty database: every trade is new
    assert report.list_calls == len(calls)
    assert report.fullinfo_calls == len(expected)
    proven = await reconciler.ledger.intervals(shop, kinds=[ProvenBy.BACKFILL])
    assert proven == [Interval(since - timedelta(seconds=2), until)]


class ModifyingClient(TopClient):
    """Runs `modify` (a change to the market) right after the `after`-th list call."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.after = 0
        self.modify: Callable[[], None] = lambda: None

    async def trades_sold_increment_get(self, session: str, **kwargs: Any) -> TradePage:
        page = await super().trades_sold_increment_get(session, **kwargs)
        self.after -= 1
        if self.after == 0:
            self.modify()
        return page


async def test_a_trade_modified_during_backward_paging_is_not_missed(standin: StandIn, pg: PgStore) -> None:
    market = standin.market
    shop = standin.shops[0].nick
    now = datetime.now(UTC)
    window = Window(floor_second(now - timedelta(days=1)), floor_second(now - timedelta(hours=1)), proof=True)
    before = sorted(
        (rec.modified, rec.tid)
        for rec in market.records(market.shop_index(shop))
        if window.start.timestamp() <= rec.modified <= window.end.timestamp()
    )
    assert len(before) > 250
    newest_first = [tid for _, tid in reversed(before)]
    moved = newest_first[5]  # on page 1: when it leaves the window, everything older shifts up by one

    def modify() -> None:
        rec = market.record(moved)
        assert rec is not None
        market._apply("memo", rec)  # the market has no public "change this trade"; a memo fits any status

    # Walking forward under the same change skips the trade that slides from page 2 onto page 1.
    async with top_client(standin, cls=ModifyingClient) as forward:
        assert isinstance(forward, ModifyingClient)
        forward.after, forward.modify = 1, modify
        seen: list[int] = []
        for page_no in range(1, (len(before) + 99) // 100 + 1):
            page = await forward.trades_sold_increment_get(
                standin.shops[0].session,
                start_modified=window.start,
                end_modified=window.end,
                page_no=page_no,
            )
            seen += [t.tid for t in page.trades]
    skipped = set(newest_first) - set(seen) - {moved}
    assert skipped == {newest_first[100]}

    # The backfill walks backward: the same change (another trade, right after the last page was read)
    # only makes a row come twice.
    before = sorted(
        (rec.modified, rec.tid)
        for rec in market.records(market.shop_index(shop))
        if window.start.timestamp() <= rec.modified <= window.end.timestamp()
    )
    newest_first = [tid for _, tid in reversed(before)]
    moved = newest_first[5]
    async with top_client(standin, cls=ModifyingClient) as client:
        assert isinstance(client, ModifyingClient)
        client.after, client.modify = 2, modify  # right after the count and the last page
        config = BackfillConfig(concurrency=8)
        reader = WindowReader(client, PgTrades(pg), config, now=lambda: datetime.now(UTC))
        counts = PassCounts()
        result = await reader.read(
            shop,
            standin.shops[0].session,
            [window],
            priority=Priority.BACKFILL,
            source="backfill",
            counts=counts,
        )
    assert result.failure is None
    assert result.read == [window]
    assert market.record(moved).modified > window.end.timestamp()  # type: ignore[union-attr]
    comparison = await compare_with_market(pg.pool, market, newest_first)
    assert comparison.ok, comparison.to_json()


async def test_trade_service_rejection_narrows_the_window_and_waits_before_retrying(
    standin: StandIn, pg: PgStore
) -> None:
    shop = standin.shops[1].nick
    waits: list[float] = []
    standin.faults.trade_service_rejection_rate = 1.0

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        standin.faults.trade_service_rejection_rate = 0.0  # the platform has calmed down meanwhile

    now = datetime.now(UTC)
    since, until = floor_second(now - timedelta(hours=30)), floor_second(now - timedelta(hours=6))
    async with top_client(standin) as client:
        config = small_config(
            overlap=timedelta(0), backfill=BackfillConfig(concurrency=8, rejection_retry_seconds=180.0)
        )
        reconciler = make_reconciler(standin, pg, client, config, sleep=sleep)
        report = await reconciler.backfill(shop, Interval(since, until))

    assert waits == [180.0]  # the configured delay (3 minutes, as the platform asks), once
    calls = list_calls(standin, shop)
    assert calls[0].sub_code == "isv.trade-service-rejection"
    assert window_of(calls[0]) == (since, since + timedelta(hours=12))
    later = {window_of(c) for c in calls[1:]}
    assert (since, since + timedelta(hours=6)) in later  # the rejected window, narrowed to halves
    assert (since + timedelta(hours=6), since + timedelta(hours=12)) in later
    assert report.outcome == Outcome.RECOVERED.value
    assert report.rejections == 1
    expected = truth_tids(standin, shop, since, until)
    assert (await compare_with_market(pg.pool, standin.market, expected)).ok


async def test_an_isv_error_is_not_retried_and_the_window_stays_a_gap(standin: StandIn, pg: PgStore) -> None:
    shop = standin.shops[1].nick
    now = datetime.now(UTC)
    since, until = floor_second(now - timedelta(hours=10)), floor_second(now - timedelta(hours=2))
    async with top_client(standin) as client:
        # A type the platform does not know: isv.invalid-parameter:type, a mistake retrying cannot fix.
        config = small_config(backfill=BackfillConfig(types=("fixed", "no_such_type")))
        reconciler = make_reconciler(standin, pg, client, config)
        report = await reconciler.backfill(shop, Interval(since, until))

    calls = list_calls(standin, shop)
    assert len(calls) == 1
    assert calls[0].sub_code == "isv.invalid-parameter:type"
    assert report.outcome == Outcome.FAILED.value
    assert report.reason is not None
    assert "isv.invalid-parameter:type" in report.reason
    assert report.windows_failed == 1
    assert await reconciler.ledger.intervals(shop) == []  # nothing proven
    assert await reconciler.ledger.gaps(shop, since, until) == [Interval(since, until)]
    # Failed for good: the reconciler's own rounds leave it alone (only a manual backfill retries it).
    await reconciler.recover(fresh=True)
    assert len(list_calls(standin, shop)) == 1


async def test_isp_errors_are_retried_and_a_window_that_still_fails_is_read_again_later(
    standin: StandIn, pg: PgStore
) -> None:
    shop = standin.shops[0].nick
    standin.faults.isp_error_rate = 0.25
    now = datetime.now(UTC)
    since, until = floor_second(now - timedelta(hours=20)), floor_second(now - timedelta(hours=1))
    async with top_client(standin) as client:
        reconciler = make_reconciler(standin, pg, client)
        report = await reconciler.backfill(shop, Interval(since, until))
        retries = sum(client.stats.retries.values())

        async def recovered() -> bool:
            # A call can still fail after all its retries: the report is then partial, and later rounds
            # read what is left of its window.
            current = await reconciler.reports.get(report.id)
            if current.is_open:
                await reconciler.recover(fresh=True)
                current = await reconciler.reports.get(report.id)
            return current.outcome == Outcome.RECOVERED.value

        await wait_for_async(recovered, 30, "the report to be recovered")
    assert retries > 10
    expected = truth_tids(standin, shop, since, until)
    assert (await compare_with_market(pg.pool, standin.market, expected)).ok
    assert await reconciler.ledger.gaps(shop, since, until) == []
