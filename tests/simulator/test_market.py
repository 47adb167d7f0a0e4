"""The order market on its own: lifecycles, modified times, changes vs truth, history, determinism."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime

import pytest

from simulator.clock import ManualClock, whole_seconds
from simulator.lifecycle import (
    ALL_STATUSES,
    CREATE_STATUSES,
    TOPIC_FIELDS,
    TOPIC_PREFIX,
    is_legal_move,
)
from simulator.market import Market, MarketChange, MarketConfig
from simulator.trade_types import DEFAULT_QUERY_TYPES, KNOWN_TYPES
from simulator.trade_values import cents
from taobao.models import Trade
from taobao.timefmt import parse_top_time

START = datetime(2026, 11, 11, 12, 0, tzinfo=UTC)


def _market(history: int = 300, seed: int = 11) -> tuple[Market, ManualClock]:
    clock = ManualClock(START)
    return Market(MarketConfig(seed=seed, shops=3, history_trades=history), clock=clock), clock


def _run(market: Market, clock: ManualClock, n: int, per_second: int = 7) -> list[MarketChange]:
    changes: list[MarketChange] = []
    while len(changes) < n:
        changes.extend(market.step(min(per_second, n - len(changes))))
        clock.advance(1)
    return changes


def test_lifecycles_follow_legal_moves_and_modified_never_goes_back() -> None:
    market, clock = _market()
    before = {rec.tid: (rec.status, rec.modified) for rec in market.records()}
    changes = _run(market, clock, 3000)
    last: dict[int, tuple[str, int]] = dict(before)
    topics = Counter(c.topic.removeprefix(TOPIC_PREFIX) for c in changes)
    for change in changes:
        modified = whole_seconds(change.modified)
        if change.topic == "taobao_trade_TradeCreate":
            assert change.tid not in last
            assert change.status in CREATE_STATUSES
        else:
            status, previous = last[change.tid]
            assert is_legal_move(status, change.status), (status, change.status, change.topic)
            assert modified >= previous
        last[change.tid] = (change.status, modified)
    # Every kind of change happens, including partial refunds and closes before payment.
    for name in (
        "TradeCreate",
        "TradeBuyerPay",
        "TradeSellerShip",
        "TradeSuccess",
        "TradeClose",
        "TradePartlyRefund",
        "TradeMemoModified",
        "TradeLogisticsAddressChanged",
        "TradeModifyFee",
    ):
        assert topics[name] > 0, name
    assert [c.seq for c in changes] == list(range(1, len(changes) + 1))


def test_every_change_is_reflected_in_truth_and_in_the_raw_trade() -> None:
    market, clock = _market()
    changes = _run(market, clock, 1500)
    latest: dict[int, MarketChange] = {}
    for change in changes:
        latest[change.tid] = change
    truth = market.truth(tids=latest)
    assert truth.change_count == len(changes)
    for tid, change in latest.items():
        fact = truth.trades[tid]
        assert fact.modified == change.modified
        assert fact.status == change.status
        raw = market.trade(tid)
        assert raw is not None
        assert raw["status"] == change.status
        assert parse_top_time(raw["modified"]) == change.modified
        assert fact.digest is not None


def test_refunds_close_orders_and_fully_refunded_trades_close() -> None:
    market, clock = _market()
    changes = _run(market, clock, 4000)
    refunds = [c for c in changes if c.topic == "taobao_trade_TradePartlyRefund"]
    assert refunds
    for change in refunds:
        raw = market.trade(change.tid)
        assert raw is not None
        order = next(o for o in raw["orders"]["order"] if o["oid"] == change.content["oid"])
        assert order["refund_status"] == "SUCCESS"
        assert order["status"] == "TRADE_CLOSED"
    for rec in market.records():
        raw = market.materialize(rec.current)
        orders = raw["orders"]["order"]
        if rec.status == "TRADE_CLOSED":
            assert all(o["refund_status"] == "SUCCESS" for o in orders)
        elif all(o["refund_status"] == "SUCCESS" for o in orders):
            pytest.fail(f"trade {rec.tid} has every order refunded but is {rec.status}")


def test_change_content_carries_the_topic_fields() -> None:
    market, clock = _market()
    for change in _run(market, clock, 800):
        name = change.topic.removeprefix(TOPIC_PREFIX)
        assert set(change.content) <= set(TOPIC_FIELDS[name])
        assert change.content["tid"] == change.tid
        if "payment" in change.content:
            assert isinstance(change.content["payment"], str)
            cents(change.content["payment"])
        if "seller_nick" in TOPIC_FIELDS[name]:
            assert change.content["seller_nick"] == change.seller_nick
        assert change.modified.tzinfo is not None
        assert change.seller_id == market.shops[market.shop_index(change.seller_nick) or 0].user_id


def test_trades_are_fullinfo_shaped_and_parse_into_the_model() -> None:
    market, clock = _market(history=400)
    _run(market, clock, 300)
    control_chars = 0
    types: Counter[str] = Counter()
    for rec in market.records():
        raw = market.materialize(rec.current)
        trade = Trade.model_validate(raw)
        assert trade.tid == rec.tid
        assert len(str(trade.tid)) == 19
        assert trade.tid > 2**53
        assert all(o.oid > 2**53 for o in trade.orders)
        assert isinstance(raw["payment"], str)
        assert isinstance(raw["orders"]["order"], list)
        assert raw["type"] in KNOWN_TYPES
        assert raw["status"] in ALL_STATUSES
        assert trade.created is not None
        assert trade.modified is not None
        assert trade.created <= trade.modified <= clock.now()
        types[raw["type"]] += 1
        text = raw.get("buyer_message", "") + raw.get("seller_memo", "")
        control_chars += any(ch in text for ch in "\t\n\r")
    assert control_chars > 0
    outside = sum(n for t, n in types.items() if t not in DEFAULT_QUERY_TYPES) / sum(types.values())
    assert 0.15 <= outside <= 0.25, outside


def test_same_seed_and_clock_give_the_same_market() -> None:
    first, clock_a = _market(seed=5)
    second, clock_b = _market(seed=5)
    a = _run(first, clock_a, 500)
    b = _run(second, clock_b, 500)
    assert [(c.tid, c.topic, c.modified, c.content) for c in a] == [
        (c.tid, c.topic, c.modified, c.content) for c in b
    ]
    assert first.truth().trades == second.truth().trades
    third, clock_c = _market(seed=6)
    assert [c.tid for c in _run(third, clock_c, 50)] != [c.tid for c in a[:50]]


def test_listeners_see_every_change_in_order_and_a_failing_one_does_not_stop_the_market() -> None:
    market, _ = _market(history=50)
    seen: list[int] = []

    def broken(_change: MarketChange) -> None:
        raise RuntimeError("listener bug")

    market.add_change_listener(broken)
    market.add_change_listener(lambda c: seen.append(c.seq))
    changes = market.step(40)
    assert seen == [c.seq for c in changes]


def test_history_of_100k_trades_spans_the_window_and_stays_consistent() -> None:
    clock = ManualClock(START)
    market = Market(MarketConfig(seed=3, shops=4, history_trades=100_000, history_days=90), clock=clock)
    assert len(market) == 100_000
    now = whole_seconds(START)
    oldest = min(rec.created for rec in market.records())
    assert now - 90 * 86400 <= oldest < now - 80 * 86400
    assert all(rec.created <= rec.modified <= now for rec in market.records())
    statuses = Counter(rec.status for rec in market.records())
    assert statuses["TRADE_FINISHED"] > statuses["WAIT_BUYER_PAY"]
    # A sample rebuilds to the indexed state.
    for rec in list(market.records())[::5000]:
        raw = market.materialize(rec.current)
        assert (raw["tid"], raw["status"], raw["type"]) == (rec.tid, rec.status, rec.type)
        assert whole_seconds(parse_top_time(raw["modified"])) == rec.modified


def test_versions_keep_what_lagging_lists_need_and_drop_the_rest() -> None:
    clock = ManualClock(START)
    market = Market(MarketConfig(seed=2, shops=1, version_retention_seconds=600), clock=clock)
    created = market.step(1)[0]
    rec = market.record(created.tid)
    assert rec is not None
    t0 = rec.modified
    assert market.visible_version(rec, t0 - 1) is None
    for _ in range(20):
        clock.advance(120)
        market._apply("memo", rec)
    assert rec.modified == t0 + 20 * 120
    visible = market.visible_version(rec, rec.modified - 300)
    assert visible is not None
    assert visible[0] == rec.modified - 360
    assert len(rec.versions) <= 7


async def test_market_runs_at_a_rate_pauses_and_stops() -> None:
    market, _ = _market(history=50)
    market.start(rate=500)
    try:
        deadline = asyncio.get_running_loop().time() + 5
        while market.change_count < 50:
            assert asyncio.get_running_loop().time() < deadline, "market did not move"
            await asyncio.sleep(0.01)
        market.pause()
        await asyncio.sleep(0.02)  # let a step already due finish
        paused_at = market.change_count
        await asyncio.sleep(0.2)  # at 500/s an unpaused market would make ~100 changes here
        assert market.change_count == paused_at
        market.resume()
        while market.change_count < paused_at + 20:
            assert asyncio.get_running_loop().time() < deadline + 5, "market did not resume"
            await asyncio.sleep(0.01)
    finally:
        await market.stop()
    assert not market.running
