"""The trade methods against ground truth: fields, envelopes, windows, ordering, default types, paging."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from simulator.clock import whole_seconds
from simulator.standin import StandIn
from simulator.trade_types import DEFAULT_QUERY_TYPES
from taobao.timefmt import parse_top_time
from tests.simulator.toputil import ALL_TYPES, TopCaller, now_minus, top_time, trades_of

FULLINFO = "taobao.trade.fullinfo.get"
SOLD = "taobao.trades.sold.get"
INCREMENT = "taobao.trades.sold.increment.get"
DAY = 86400


async def _walk(top: TopCaller, method: str, **params: str) -> list[dict[str, Any]]:
    """Every page, forward, with use_has_next=true."""
    out: list[dict[str, Any]] = []
    page = 1
    while True:
        body = await top.ok(method, use_has_next="true", page_size="100", page_no=str(page), **params)
        assert "total_results" not in body
        out.extend(trades_of(body))
        if not body["has_next"]:
            return out
        page += 1


def _shop_records(standin: StandIn, shop: int = 0) -> list[Any]:
    return list(standin.market.records(shop))


async def test_fullinfo_with_every_field_is_the_raw_trade(top: TopCaller, standin: StandIn) -> None:
    rec = _shop_records(standin)[7]
    raw = standin.market.trade(rec.tid)
    assert raw is not None
    body = await top.ok(FULLINFO, fields=",".join(raw), tid=str(rec.tid))
    assert body["trade"] == raw
    assert set(body) == {"trade", "request_id"}


async def test_fullinfo_fields_select_trade_and_order_fields(top: TopCaller, standin: StandIn) -> None:
    market = standin.market
    rec = next(r for r in _shop_records(standin) if len(market.materialize(r.current)["orders"]["order"]) > 1)
    raw = standin.market.materialize(rec.current)
    fields = "tid,status,no_such_field,orders.oid,orders.status"
    body = await top.ok(FULLINFO, fields=fields, tid=str(rec.tid))
    trade = body["trade"]
    assert set(trade) == {"tid", "status", "orders"}
    expected = [{"oid": o["oid"], "status": o["status"]} for o in raw["orders"]["order"]]
    assert trade["orders"]["order"] == expected
    whole = (await top.ok(FULLINFO, fields="tid,orders", tid=str(rec.tid)))["trade"]
    assert whole["orders"] == raw["orders"]
    no_orders = (await top.ok(FULLINFO, fields="tid,payment", tid=str(rec.tid)))["trade"]
    assert no_orders == {"tid": rec.tid, "payment": raw["payment"]}


async def test_fullinfo_of_another_shops_trade_does_not_exist(top: TopCaller, standin: StandIn) -> None:
    other = _shop_records(standin, shop=1)[0]
    error = (await top.call(FULLINFO, fields="tid", tid=str(other.tid))).error
    assert (error["code"], error["sub_code"]) == (15, "isv.trade-not-exist")


async def test_simplify_drops_the_wrappers(top: TopCaller) -> None:
    answer = await top.request(
        SOLD, {"fields": "tid,orders.oid", "page_size": "5"}, overrides={"simplify": "true"}
    )
    data = answer.json
    assert set(data) == {"total_results", "trades", "request_id"}
    assert isinstance(data["trades"], list)
    assert isinstance(data["trades"][0]["orders"], list)
    assert "oid" in data["trades"][0]["orders"][0]
    wrapped = await top.ok(SOLD, fields="tid,orders.oid", page_size="5")
    assert isinstance(wrapped["trades"]["trade"][0]["orders"]["order"], list)


async def test_sold_get_is_created_desc_within_three_months(top: TopCaller, standin: StandIn) -> None:
    before = whole_seconds(now_minus(0))
    since = top_time(now_minus(100 * DAY))
    trades = await _walk(top, SOLD, fields="tid,created", type=ALL_TYPES, start_created=since)
    after = whole_seconds(now_minus(0))
    created = [whole_seconds(parse_top_time(t["created"])) for t in trades]
    assert created == sorted(created, reverse=True)
    got = {t["tid"] for t in trades}
    records = _shop_records(standin)
    assert any(r.created < before - 90 * DAY for r in records), "the history should reach past the window"
    surely_in = {r.tid for r in records if r.created >= after - 90 * DAY}
    maybe_in = {r.tid for r in records if r.created >= before - 90 * DAY}
    assert surely_in <= got <= maybe_in


async def test_omitting_type_misses_trades_outside_the_default_subset(top: TopCaller) -> None:
    window = {"fields": "tid,type", "start_created": top_time(now_minus(30 * DAY))}
    default = await _walk(top, SOLD, **window)
    everything = await _walk(top, SOLD, type=ALL_TYPES, **window)
    default_tids = {t["tid"] for t in default}
    all_tids = {t["tid"] for t in everything}
    missed = [t for t in everything if t["tid"] not in default_tids]
    assert default_tids < all_tids
    assert missed
    assert all(t["type"] not in DEFAULT_QUERY_TYPES for t in missed)
    assert all(t["type"] in DEFAULT_QUERY_TYPES for t in default)
    # guarantee_trade is the query name for fixed + auction.
    guaranteed = await _walk(top, SOLD, type="guarantee_trade", **window)
    assert {t["type"] for t in guaranteed} <= {"fixed", "auction"}
    assert len(guaranteed) == sum(1 for t in everything if t["type"] in ("fixed", "auction"))


async def test_page_size_limits(top: TopCaller) -> None:
    for size in ("101", "0", "-3"):
        error = (await top.call(SOLD, fields="tid", page_size=size)).error
        assert (error["code"], error["sub_code"]) == (41, "isv.invalid-parameter:page_size")
    page_zero = (await top.call(SOLD, fields="tid", page_no="0")).error
    assert page_zero["sub_code"] == "isv.invalid-parameter:page_no"
    assert len(trades_of(await top.ok(SOLD, fields="tid", page_size="100"))) == 100
    assert len(trades_of(await top.ok(SOLD, fields="tid"))) == 40  # the default page size


async def test_total_results_or_has_next_and_empty_windows(top: TopCaller, standin: StandIn) -> None:
    counted = await top.ok(SOLD, fields="tid", page_size="10", type=ALL_TYPES)
    assert "has_next" not in counted
    assert counted["total_results"] > 10
    flagged = await top.ok(SOLD, fields="tid", page_size="10", type=ALL_TYPES, use_has_next="true")
    assert flagged["has_next"] is True
    assert "total_results" not in flagged
    last_page = -(-counted["total_results"] // 10)
    tail = await top.ok(
        SOLD, fields="tid", page_size="10", type=ALL_TYPES, use_has_next="true", page_no=str(last_page)
    )
    assert tail["has_next"] is False
    assert trades_of(tail)
    # An empty window: no trades key at all; with use_has_next only has_next=false and request_id.
    future = {"start_created": top_time(now_minus(-3600)), "end_created": top_time(now_minus(-7200))}
    empty = await top.ok(SOLD, fields="tid", use_has_next="true", **future)
    assert set(empty) == {"has_next", "request_id"}
    assert empty["has_next"] is False
    empty_counted = await top.ok(SOLD, fields="tid", **future)
    assert set(empty_counted) == {"total_results", "request_id"}
    assert empty_counted["total_results"] == 0


async def test_increment_get_is_modified_desc_and_matches_truth(top: TopCaller, standin: StandIn) -> None:
    standin.market.step(60)
    start, end = now_minus(DAY - 5), now_minus(-5)
    window = {
        "fields": "tid,modified,status",
        "type": ALL_TYPES,
        "start_modified": top_time(start),
        "end_modified": top_time(end),
    }
    counted = await top.ok(INCREMENT, page_size="50", **window)
    total = counted["total_results"]
    pages = -(-total // 50)
    seen: list[dict[str, Any]] = []
    for page in range(pages, 0, -1):  # last page first, as the docs ask
        seen = trades_of(await top.ok(INCREMENT, page_size="50", page_no=str(page), **window)) + seen
    modified = [whole_seconds(parse_top_time(t["modified"])) for t in seen]
    assert modified == sorted(modified, reverse=True)
    lo, hi = whole_seconds(start), whole_seconds(end)
    expected = {r.tid: r for r in _shop_records(standin) if lo <= r.modified <= hi}
    assert {t["tid"] for t in seen} == set(expected)
    for trade in seen:
        rec = expected[trade["tid"]]
        listed = (whole_seconds(parse_top_time(trade["modified"])), trade["status"])
        assert listed == (rec.modified, rec.status)


async def test_increment_get_span_and_order_of_bounds(top: TopCaller) -> None:
    start = now_minus(2 * DAY).replace(microsecond=0)
    base = {"fields": "tid", "start_modified": top_time(start)}
    one_day = await top.call(INCREMENT, end_modified=top_time(start + timedelta(seconds=DAY)), **base)
    assert "trades_sold_increment_get_response" in one_day.json
    too_far = top_time(start + timedelta(seconds=DAY + 1))
    over = (await top.call(INCREMENT, end_modified=too_far, **base)).error
    assert (over["code"], over["sub_code"]) == (15, "isv.invalid-parameter:end_modified")
    same = (await top.call(INCREMENT, end_modified=top_time(start), **base)).error
    assert (same["code"], same["sub_code"]) == (41, "isv.invalid-parameter:end_modified")
    missing = (await top.call(INCREMENT, fields="tid", end_modified=top_time(start))).error
    assert (missing["code"], missing["sub_code"]) == (40, "isv.missing-parameter:start_modified")


async def test_new_changes_show_in_increment_get_at_once_without_lag(
    top: TopCaller, standin: StandIn
) -> None:
    changes = [c for c in standin.market.step(80) if c.seller_nick == standin.shops[0].nick]
    assert changes
    window = {
        "fields": "tid,modified",
        "type": ALL_TYPES,
        "start_modified": top_time(now_minus(60)),
        "end_modified": top_time(now_minus(-5)),
    }
    listed = {t["tid"]: t["modified"] for t in await _walk(top, INCREMENT, **window)}
    for change in changes:
        assert change.tid in listed
        assert parse_top_time(listed[change.tid]) >= change.modified


async def test_status_filters_including_composites(top: TopCaller) -> None:
    closed = await _walk(top, SOLD, fields="tid,status", type=ALL_TYPES, status="ALL_CLOSED")
    assert {t["status"] for t in closed} == {"TRADE_CLOSED", "TRADE_CLOSED_BY_TAOBAO"}
    finished = await _walk(top, SOLD, fields="tid,status", type=ALL_TYPES, status="TRADE_FINISHED")
    assert finished
    assert {t["status"] for t in finished} == {"TRADE_FINISHED"}
