"""Each fault knob is observable by a client; the admin surface reads and changes them at run time."""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp
import pytest

from simulator.standin import StandIn
from simulator.trade_values import top_time as fmt_time
from simulator.truth import trade_digest
from tests.simulator.toputil import ALL_TYPES, LENIENT, TopCaller, now_minus, top_time, trades_of

FULLINFO = "taobao.trade.fullinfo.get"
SOLD = "taobao.trades.sold.get"
INCREMENT = "taobao.trades.sold.increment.get"


def _tid(standin: StandIn) -> str:
    return str(next(iter(standin.market.records(0))).tid)


async def _fullinfo_ok(top: TopCaller, standin: StandIn) -> bool:
    return "trade_fullinfo_get_response" in (await top.call(FULLINFO, fields="tid", tid=_tid(standin))).json


async def _admin(
    http: aiohttp.ClientSession, standin: StandIn, path: str, body: Any = None
) -> tuple[int, Any]:
    url = standin.base_url + "/__standin/" + path
    if body is None:
        async with http.get(url) as response:
            return response.status, await response.json()
    async with http.post(url, json=body) as response:
        return response.status, await response.json()


async def test_rate_limit_bans_with_the_documented_sentence(top: TopCaller, standin: StandIn) -> None:
    clock = [1000.25]
    injector = standin.gateway.injector
    injector.monotonic = lambda: clock[0]
    try:
        standin.faults.update({"rate_limit_per_second": 3, "ban_seconds": 5})
        answers = [await top.call(FULLINFO, fields="tid", tid=_tid(standin)) for _ in range(4)]
        assert all("trade_fullinfo_get_response" in a.json for a in answers[:3])
        error = answers[3].error
        assert (error["code"], error["sub_code"]) == (7, "accesscontrol.limited-by-app-access-count")
        assert error["sub_msg"] == "This ban will last for 5 more seconds"
        clock[0] += 3.5  # a new second, but still banned
        during = (await top.call(FULLINFO, fields="tid", tid=_tid(standin))).error
        assert during["sub_msg"] == "This ban will last for 2 more seconds"
        clock[0] += 2
        assert await _fullinfo_ok(top, standin)
        standin.faults.update({"rate_limit_scope": "api", "ban_seconds": 2})
        clock[0] += 1
        for _ in range(3):
            await top.call(SOLD, fields="tid")
        api_level = (await top.call(SOLD, fields="tid")).error
        assert api_level["sub_code"] == "accesscontrol.limited-by-api-access-count"
        # The ban is per API at this scope: another method still passes.
        assert await _fullinfo_ok(top, standin)
    finally:
        injector.monotonic = time.monotonic


async def test_isp_errors_hit_the_chosen_methods_only(top: TopCaller, standin: StandIn) -> None:
    standin.faults.update({"isp_error_rate": 1.0, "methods": [FULLINFO]})
    error = (await top.call(FULLINFO, fields="tid", tid=_tid(standin))).error
    assert error["code"] == 15
    assert error["sub_code"].startswith("isp.")
    assert "trades_sold_get_response" in (await top.call(SOLD, fields="tid")).json
    standin.faults.update({"isp_error_code": 520})
    assert (await top.call(FULLINFO, fields="tid", tid=_tid(standin))).error["code"] == 520


async def test_isp_error_rate_is_a_share_of_calls(top: TopCaller, standin: StandIn) -> None:
    standin.faults.update({"isp_error_rate": 0.5})
    outcomes = [not await _fullinfo_ok(top, standin) for _ in range(40)]
    assert 5 <= sum(outcomes) <= 35


async def test_trade_service_rejection_on_list_calls(top: TopCaller, standin: StandIn) -> None:
    standin.faults.update({"trade_service_rejection_rate": 1.0})
    error = (await top.call(SOLD, fields="tid")).error
    assert (error["code"], error["sub_code"]) == (520, "isv.trade-service-rejection")
    assert "3分钟" in error["sub_msg"]
    assert await _fullinfo_ok(top, standin)


async def _listed(top: TopCaller, start: int, end: int) -> dict[int, str]:
    """tid → listed modified for every page of increment.get over [start, end] (epoch seconds)."""
    out: dict[int, str] = {}
    page = 1
    while True:
        body = await top.ok(
            INCREMENT,
            fields="tid,modified",
            type=ALL_TYPES,
            page_size="100",
            page_no=str(page),
            use_has_next="true",
            start_modified=fmt_time(start),
            end_modified=fmt_time(end),
        )
        out.update({t["tid"]: t["modified"] for t in trades_of(body)})
        if not body["has_next"]:
            return out
        page += 1


async def test_list_lag_hides_recent_changes_but_fullinfo_is_current(
    top: TopCaller, standin: StandIn, http: aiohttp.ClientSession
) -> None:
    status, knobs = await _admin(http, standin, "faults", {"list_lag_seconds": 3600})
    assert status == 200
    assert knobs["list_lag_seconds"] == 3600
    market = standin.market
    shop = standin.shops[0].nick
    before = {rec.tid: rec.modified for rec in market.records(0)}
    changes = [c for c in market.step(150) if c.seller_nick == shop]
    now = int(time.time())
    created = {c.tid for c in changes if c.topic == "taobao_trade_TradeCreate"}
    changed_old = sorted({c.tid for c in changes if c.tid in before and before[c.tid] <= now - 3700})[:5]
    assert created
    assert changed_old

    recent = await _listed(top, now - 3000, now + 5)
    assert not created & set(recent)
    since = fmt_time(now - 3000)
    sold = await top.ok(SOLD, fields="tid", type=ALL_TYPES, page_size="100", start_created=since)
    assert not created & {t["tid"] for t in trades_of(sold)}
    for tid in changed_old:
        # Lists still show the version from before the change, at its old `modified` ...
        around_old = await _listed(top, before[tid] - 60, before[tid] + 60)
        assert around_old.get(tid) == fmt_time(before[tid])
        assert tid not in recent
        # ... while fullinfo shows the trade as it is now.
        full = (await top.ok(FULLINFO, fields="tid,modified", tid=str(tid)))["trade"]
        assert full["modified"] == (market.trade(tid) or {})["modified"]
        assert full["modified"] != fmt_time(before[tid])

    await _admin(http, standin, "faults", {"list_lag_seconds": 0})
    current = await _listed(top, now - 3000, now + 5)
    assert created <= set(current)
    for tid in changed_old:
        assert current[tid] == (market.trade(tid) or {})["modified"]
        assert tid not in await _listed(top, before[tid] - 60, before[tid] + 60)


async def test_peak_mode_lists_without_orders(top: TopCaller, standin: StandIn) -> None:
    standin.faults.update({"peak_mode": True})
    body = await top.ok(SOLD, fields="tid,payment,oaid,orders", page_size="5")
    for trade in trades_of(body):
        assert "orders" not in trade
        assert "oaid" not in trade
        assert "payment" in trade
    tid = str(trades_of(body)[0]["tid"])
    assert "orders" in (await top.ok(FULLINFO, fields="tid,orders", tid=tid))["trade"]


async def test_non_200_answers(top: TopCaller, standin: StandIn) -> None:
    standin.faults.update({"non_200_rate": 1.0, "non_200_status": 503})
    answer = await top.call(FULLINFO, fields="tid", tid=_tid(standin))
    assert answer.status == 503


async def test_garbled_bodies_do_not_parse(top: TopCaller, standin: StandIn) -> None:
    standin.faults.update({"garbled_rate": 1.0})
    answer = await top.call(FULLINFO, fields="tid,buyer_nick", tid=_tid(standin))
    assert answer.status == 200
    with pytest.raises(json.JSONDecodeError):
        LENIENT.decode(answer.text)


async def test_latency_is_added_to_each_call(top: TopCaller, standin: StandIn) -> None:
    standin.faults.update({"latency_ms": 250})
    started = time.perf_counter()
    await top.call(FULLINFO, fields="tid", tid=_tid(standin))
    assert time.perf_counter() - started >= 0.25


async def test_control_characters_go_out_raw_unless_turned_off(top: TopCaller, standin: StandIn) -> None:
    rec = next(
        r
        for r in standin.market.records(0)
        if any(ch in (standin.market.trade(r.tid) or {}).get("buyer_message", "") for ch in "\t\n")
    )
    raw = standin.market.trade(rec.tid)
    assert raw is not None
    answer = await top.call(FULLINFO, fields="tid,buyer_message", tid=str(rec.tid))
    assert any(ch in answer.text for ch in "\t\n")
    with pytest.raises(json.JSONDecodeError):
        json.loads(answer.text)
    assert answer.body(FULLINFO)["trade"]["buyer_message"] == raw["buyer_message"]
    standin.faults.update({"raw_control_chars": False})
    escaped = await top.call(FULLINFO, fields="tid,buyer_message", tid=str(rec.tid))
    strict = json.loads(escaped.text)
    assert strict["trade_fullinfo_get_response"]["trade"]["buyer_message"] == raw["buyer_message"]


async def test_admin_surface_reads_and_changes_state(
    top: TopCaller, standin: StandIn, http: aiohttp.ClientSession
) -> None:
    status, error = await _admin(http, standin, "faults", {"no_such_knob": 1})
    assert status == 400
    assert "no_such_knob" in error["error"]
    status, _ = await _admin(http, standin, "faults", {"isp_error_rate": 3})
    assert status == 400
    status, market = await _admin(http, standin, "market", {"action": "step", "n": 5})
    assert status == 200
    assert len(market["changes"]) == 5
    assert market["change_count"] == standin.market.change_count
    tid = market["changes"][-1]["tid"]
    status, truth = await _admin(http, standin, f"truth?tids={tid}")
    entry = truth["trades"][str(tid)]
    assert entry["tid"] == tid
    assert entry["digest"] == trade_digest(standin.market.trade(tid) or {})
    assert entry["modified"] == market["changes"][-1]["modified"]
    assert truth["change_count"] == standin.market.change_count
    nick = standin.shops[1].nick
    status, by_shop = await _admin(http, standin, f"truth?shop={nick}&digest=0&changes=1")
    assert by_shop["trade_count"] == len(list(standin.market.records(1)))
    assert {e["seller_nick"] for e in by_shop["trades"].values()} == {nick}
    assert all(e["digest"] is None for e in by_shop["trades"].values())
    assert [c["seq"] for c in by_shop["changes"]] == list(range(1, standin.market.change_count + 1))
    status, digested = await _admin(http, standin, f"truth?shop={nick}")
    sample = next(iter(digested["trades"].values()))
    assert sample["digest"] == trade_digest(standin.market.trade(sample["tid"]) or {})
    standin.stats.reset()
    await top.call(SOLD, fields="tid", page_no="2", start_created=top_time(now_minus(3600)))
    status, stats = await _admin(http, standin, "stats")
    assert stats["calls"] == {SOLD: 1}
    recent = stats["recent"][-1]
    assert recent["shop"] == standin.shops[0].nick
    assert recent["params"]["page_no"] == "2"
    assert "start_created" in recent["params"]
    assert "session" not in recent["params"]
    assert standin.stats.calls_of(SOLD)[0].params["page_no"] == "2"
