"""The one fetch → apply path (store/fetch_apply.py): how a fullinfo fetch ended, what is kept of a failed
one, and how trade failures are recorded and counted. Pure, with the in-memory trades table."""

from __future__ import annotations

import json

import pytest

from common.metrics import Registry
from store.errors import StoreError
from store.fetch_apply import (
    FetchEnd,
    TradeFailure,
    TradeFailures,
    apply_fetched,
    classify,
    dead_letter_counter,
    fetch_trade,
)
from store.memory_trades import MemoryTrades
from taobao.errors import (
    MalformedResponse,
    PermanentTopError,
    RateLimited,
    RetryableTopError,
    ServiceRejection,
    SessionExpired,
    TopError,
    TradeNotFound,
)
from taobao.limiter import Priority
from taobao.models import Trade
from tests.store.factory import fresh_tids, trade_json


@pytest.mark.parametrize(
    ("error", "end"),
    [
        (SessionExpired("invalid session", code=27), FetchEnd.SHOP_REJECTED),
        (TradeNotFound("no trade", sub_code="isv.trade-not-exist"), FetchEnd.TRADE_FAILED),
        (MalformedResponse("no trade object"), FetchEnd.TRADE_FAILED),
        (PermanentTopError("invalid arguments", code=41), FetchEnd.TRADE_FAILED),
        (RetryableTopError("HTTP 502"), FetchEnd.RETRY_LATER),
        (RateLimited("banned", code=7, ban_seconds=30), FetchEnd.RETRY_LATER),
        (ServiceRejection("slow", sub_code="isv.trade-service-rejection"), FetchEnd.RETRY_LATER),
    ],
)
def test_every_fullinfo_error_means_one_thing_for_the_trade_and_its_shop(
    error: TopError, end: FetchEnd
) -> None:
    assert classify(error) is end


class Fetcher:
    def __init__(self, outcome: Trade | Exception) -> None:
        self.outcome = outcome
        self.calls: list[tuple[str, int, Priority]] = []

    async def trade_fullinfo(self, session: str, tid: int, *, priority: Priority = Priority.STREAM) -> Trade:
        self.calls.append((session, tid, priority))
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


async def test_a_fetch_says_how_it_ended_and_keeps_what_a_failure_leaves() -> None:
    trade = Trade.model_validate(trade_json(7, 1))
    fetched = await fetch_trade(Fetcher(trade), "s", 7, priority=Priority.SWEEP)
    assert (fetched.end, fetched.trade) == (FetchEnd.TRADE, trade)
    malformed = await fetch_trade(
        Fetcher(MalformedResponse("bad", payload='{"x": 1}')), "s", 7, priority=Priority.SWEEP
    )
    assert (malformed.end, malformed.kind, malformed.payload()) == (
        FetchEnd.TRADE_FAILED,
        "MalformedResponse",
        '{"x": 1}',
    )
    missing = await fetch_trade(Fetcher(TradeNotFound("no trade")), "s", 7, priority=Priority.SWEEP)
    assert json.loads(missing.payload()) == {"tid": 7}
    assert missing.reason.startswith("fullinfo: ")
    with pytest.raises(RuntimeError):  # a defect is the caller's to handle
        await fetch_trade(Fetcher(RuntimeError("bug")), "s", 7, priority=Priority.SWEEP)


async def test_a_trade_failure_is_written_then_counted_and_not_counted_when_it_could_not_be_written() -> None:
    registry = Registry()
    trades = MemoryTrades()
    failures = TradeFailures(trades, dead_letter_counter(registry))
    failure = TradeFailure("backfill", "TradeNotFound", "fullinfo: no trade", '{"tid": 9}', 9, "shop-a")
    await failures.record(failure)
    [letter] = trades.dead_letters
    assert (letter.source, letter.tid, letter.shop, letter.payload) == (
        "backfill",
        9,
        "shop-a",
        b'{"tid": 9}',
    )
    assert dead_letter_counter(registry).value(reason="TradeNotFound") == 1

    class Down:
        async def dead_letter(self, **kwargs: object) -> None:
            raise StoreError("dead_letter failed: connection lost")

    with pytest.raises(StoreError):
        await TradeFailures(Down(), dead_letter_counter(registry)).record(failure)
    assert dead_letter_counter(registry).value(reason="TradeNotFound") == 1


async def test_applying_fetched_trades_counts_the_ones_the_store_quarantined() -> None:
    registry = Registry()
    trades = MemoryTrades()
    good, bad = fresh_tids(2)
    batch = [Trade.model_validate(trade_json(good, 1)), Trade.model_validate(trade_json(bad, 1, note="\x00"))]
    result = await apply_fetched(
        trades, batch, source="sweep", failures=TradeFailures(trades, dead_letter_counter(registry))
    )
    assert (result.changed, result.rejected) == ((good,), (bad,))
    assert [letter.tid for letter in trades.dead_letters] == [bad]
    assert dead_letter_counter(registry).value(reason="invalid_trade") == 1
