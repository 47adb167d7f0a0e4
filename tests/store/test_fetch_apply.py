"""The one fetch → apply path (store/fetch_apply.py): how a fullinfo fetch ended, what is kept of a failed
one, and how trade failures are recorded and counted. Pure, with the in-memory trades table."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import pytest

from common.backoff import BackoffPolicy
from common.intervals import Interval
from common.metrics import Registry
from store.errors import StoreError
from store.fetch_apply import (
    FetchEnd,
    TradeFailure,
    TradeFailures,
    apply_fetched,
    dead_letter_counter,
    end_of,
    fetch_trade,
)
from store.memory_trades import MemoryTrades
from taobao.errors import (
    AppWideTopError,
    MalformedResponse,
    PermanentTopError,
    RateLimited,
    RetryableTopError,
    ServiceRejection,
    SessionExpired,
    TopError,
    TradeNotFound,
    error_from_response,
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
        (AppWideTopError("Insufficient isv permissions", code=11), FetchEnd.APP_FAILED),
        (AppWideTopError("HTTP 200 without a wrapper"), FetchEnd.APP_FAILED),
        (error_from_response({"code": 31, "msg": "Invalid Timestamp"}), FetchEnd.APP_FAILED),
        (error_from_response({"code": 99999, "sub_code": "isv.unknown-error"}), FetchEnd.APP_FAILED),
    ],
)
def test_every_fullinfo_error_means_one_thing_for_the_trade_and_its_shop(
    error: TopError, end: FetchEnd
) -> None:
    assert end_of(error) is end


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
    assert fetched.end is FetchEnd.TRADE
    assert fetched.trade is not None
    # A fetcher that does not stamp the read time gets it here: it decides which debts a store pays.
    assert fetched.trade.fetched_at is not None
    assert fetched.trade.model_copy(update={"fetched_at": None}) == trade
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
    at = datetime(2026, 11, 11, 10, 0, 0, tzinfo=UTC)
    failures = TradeFailures(
        trades, dead_letter_counter(registry), policy=BackoffPolicy(base=10, cap=40), now=lambda: at
    )
    window = Interval(at - timedelta(minutes=5), at)
    failure = TradeFailure(
        "backfill", "TradeNotFound", "fullinfo: no trade", '{"tid": 9}', 9, "shop-a", belongs=window
    )
    await failures.record(failure)
    [letter] = trades.dead_letters
    assert (letter.source, letter.tid, letter.shop, letter.payload) == (
        "backfill",
        9,
        "shop-a",
        b'{"tid": 9}',
    )
    # And the debt: unresolved for its shop and tid, in the window that named it, due after a backoff.
    row = trades.unresolved[("shop-a", 9)]
    assert (row.source, row.kind, row.attempts, row.belongs, row.modified) == (
        "backfill",
        "TradeNotFound",
        1,
        window,
        None,
    )
    assert at + timedelta(seconds=5) <= row.next_attempt <= at + timedelta(seconds=10)
    assert dead_letter_counter(registry).value(reason="TradeNotFound") == 1

    class Down:
        async def dead_letter(self, **kwargs: object) -> None:
            raise StoreError("dead_letter failed: connection lost")

        async def record_unresolved(self, *args: object, **kwargs: object) -> int:
            raise StoreError("recording failed: connection lost")

    with pytest.raises(StoreError):
        await TradeFailures(Down(), dead_letter_counter(registry)).record(failure)
    assert dead_letter_counter(registry).value(reason="TradeNotFound") == 1


async def test_a_failure_again_grows_the_rows_attempts_and_backoff_without_a_new_dead_letter() -> None:
    trades = MemoryTrades()
    clock = [datetime(2026, 11, 11, 10, 0, 0, tzinfo=UTC)]
    failures = TradeFailures(
        trades,
        dead_letter_counter(Registry()),
        policy=BackoffPolicy(base=10, cap=40),
        now=lambda: clock[0],
        rng=random.Random(7),
    )
    second = Interval(clock[0], clock[0] + timedelta(seconds=1))
    await failures.record(TradeFailure("stream", "TradeNotFound", "no", "{}", 9, "shop-a", belongs=second))
    delays = []
    for _ in range(4):
        clock[0] += timedelta(minutes=1)
        await failures.record(TradeFailure("redrive", "TradeNotFound", "no", b"", 9, "shop-a"), history=False)
        row = trades.unresolved[("shop-a", 9)]
        delays.append((row.next_attempt - clock[0]).total_seconds())
    assert row.attempts == 5
    assert row.source == "stream"
    assert len(trades.dead_letters) == 1
    # Each delay in [ceiling/2, ceiling] of 20, 40, 40, 40 (capped), jittered.
    for delay, ceiling in zip(delays, (20, 40, 40, 40), strict=True):
        assert ceiling / 2 <= delay <= ceiling
    # The stretch grows to hold where the redrive said it belongs (here: the second of now).
    assert row.belongs.start == second.start
    assert row.belongs.end > second.end


async def test_applying_fetched_trades_records_what_the_store_could_not_keep_whole() -> None:
    registry = Registry()
    trades = MemoryTrades()
    good, bad, odd, nul = fresh_tids(4)
    batch = [
        Trade.model_validate(trade_json(good, 1)),
        Trade.model_validate({"tid": bad, "seller_nick": "shop-a"}),  # no `modified`
        Trade.model_validate({**trade_json(odd, 1), "end_time": "0001-01-01 00:00:00"}),
        Trade.model_validate({**trade_json(nul, 1), "buyer_message": "a\x00b"}),
    ]
    failures = TradeFailures(trades, dead_letter_counter(registry))
    result = await apply_fetched(trades, batch, source="sweep", failures=failures, shop="shop-a")
    assert (result.changed, result.rejected) == (tuple(sorted((good, odd, nul))), (bad,))
    assert sorted(key[1] for key in trades.unresolved) == sorted((bad, odd))
    assert trades.unresolved[("shop-a", odd)].stored is True
    assert trades.unresolved[("shop-a", bad)].stored is False
    counter = dead_letter_counter(registry)
    assert (counter.value(reason="invalid_trade"), counter.value(reason="out_of_range_field")) == (1, 1)
    assert counter.value(reason="text_replaced") == 1  # a history row, not a debt
    assert {letter.tid for letter in trades.dead_letters} == {bad, odd, nul}


async def test_a_store_of_the_trade_pays_its_debt_and_a_flawed_one_does_not() -> None:
    trades = MemoryTrades()
    failures = TradeFailures(trades, dead_letter_counter(Registry()))
    [tid] = fresh_tids(1)
    odd = Trade.model_validate({**trade_json(tid, 1), "post_fee": "1E-20000"})
    await apply_fetched(trades, [odd], source="stream", failures=failures)
    assert ("shop-a", tid) in trades.unresolved  # stored with post_fee empty, and owed
    await apply_fetched(trades, [odd], source="redrive", failures=failures)
    assert trades.unresolved[("shop-a", tid)].attempts == 2  # the same broken answer pays nothing
    clean = Trade.model_validate(trade_json(tid, 1))
    await apply_fetched(trades, [clean], source="redrive", failures=failures)
    assert trades.unresolved == {}
    assert trades.rows[tid].trade.post_fee == clean.post_fee


async def test_an_older_version_does_not_pay_for_a_newer_one_and_a_read_before_the_failure_pays_nothing() -> (
    None
):
    trades = MemoryTrades()
    at = datetime.now(UTC)
    failures = TradeFailures(trades, dead_letter_counter(Registry()), now=lambda: at)
    a, b = fresh_tids(2)
    newer = Trade.model_validate(trade_json(a, 5))
    assert newer.modified is not None
    await failures.record(
        TradeFailure("backfill", "refused_by_database", "no", "{}", a, "shop-a", modified=newer.modified)
    )
    await apply_fetched(trades, [Trade.model_validate(trade_json(a, 4))], source="stream", failures=failures)
    assert ("shop-a", a) in trades.unresolved
    await apply_fetched(trades, [newer], source="stream", failures=failures)
    assert ("shop-a", a) not in trades.unresolved
    # No version known (a push the detail store did not know yet): a read after the failure pays it.
    await failures.record(TradeFailure("stream", "TradeNotFound", "no", "{}", b, "shop-a"))
    early = Trade.model_validate(trade_json(b, 1)).model_copy(
        update={"fetched_at": at - timedelta(seconds=1)}
    )
    await apply_fetched(trades, [early], source="stream", failures=failures)
    assert ("shop-a", b) in trades.unresolved
    late = early.model_copy(update={"fetched_at": at + timedelta(seconds=1)})
    await apply_fetched(trades, [late], source="stream", failures=failures)
    assert ("shop-a", b) not in trades.unresolved
