"""The stream's workers and the reconciler's backfill take one fetch → apply path (store/fetch_apply.py):
a trade TOP does not know, or one the store refuses, is recorded the same way by both (a dead letter for
the trade: shop, tid, reason) and counted in the one `dead_letters_total` series."""

from __future__ import annotations

from datetime import timedelta

from common.intervals import Interval
from taobao.errors import TradeNotFound
from tests.listener.fakes import message
from tests.listener.harness import pipeline
from tests.reconciler.fakes import T0, unit_reconciler


def not_found(tid: int) -> TradeNotFound:
    return TradeNotFound("trade not found", sub_code="isv.trade-not-exist", tid=tid)


async def test_a_trade_that_does_not_exist_is_recorded_alike_by_the_stream_and_the_backfill() -> None:
    async with pipeline() as stream:
        unit = unit_reconciler(registry=stream.metrics.registry)
        stream.fetcher.errors[100] = [not_found(100)]
        await stream.deliver(message(1, 100, shop="shop-a"))
        await stream.settled()
        unit.top.change("shop-a", 200, T0 - timedelta(hours=2))
        unit.top.fullinfo_errors[200] = not_found(200)
        report = await unit.reconciler.backfill(
            "shop-a", Interval(T0 - timedelta(hours=3), T0 - timedelta(hours=1))
        )

    [streamed] = stream.store.dead_letters
    [backfilled] = unit.db.trades.dead_letters
    assert (streamed["shop"], streamed["tid"]) == ("shop-a", 100)
    assert (backfilled.shop, backfilled.tid) == ("shop-a", 200)
    assert str(streamed["reason"]).startswith("fullinfo: ")
    assert backfilled.reason.startswith("fullinfo: ")
    assert stream.journal.confirmed == [1]  # the stream's message is settled by the record
    # Both are debts now: the stream's at its message's second, the backfill's in the window that named it.
    assert [d.tid for d in stream.store.unresolved] == [100]
    assert [key[1] for key in unit.db.trades.unresolved] == [200]
    # The window was read, but its report stays open and the window unproven while the trade is owed.
    assert report.outcome is None
    assert (report.not_found, report.dead_letters) == (1, 1)
    assert await unit.reconciler.ledger.intervals("shop-a") == []
    # One series for both.
    assert unit.reconciler.metrics.dead_letters is stream.metrics.dead_letters
    assert stream.metrics.dead_letters.value(reason="TradeNotFound") == 2


async def test_a_trade_the_store_refuses_counts_in_the_same_series_on_both_paths() -> None:
    async with pipeline() as stream:
        unit = unit_reconciler(registry=stream.metrics.registry)
        stream.store.reject = {100}
        await stream.deliver(message(1, 100, shop="shop-a"))
        await stream.settled()
        unit.top.change("shop-a", 200, T0 - timedelta(hours=2))
        unit.db.trades.refuse = lambda trade: "a CHECK on trades" if trade.tid == 200 else None
        await unit.reconciler.backfill("shop-a", Interval(T0 - timedelta(hours=3), T0 - timedelta(hours=1)))

    assert stream.journal.confirmed == [1]  # recorded unresolved before the confirm
    assert [letter.tid for letter in unit.db.trades.dead_letters] == [200]
    # One refused trade on each path, under the same label of the same series.
    assert unit.reconciler.metrics.dead_letters is stream.metrics.dead_letters
    assert stream.metrics.dead_letters.value(reason="invalid_trade") == 1  # the fake stream store's
    assert stream.metrics.dead_letters.value(reason="refused_by_database") == 1
