"""Detail lag: right after a trade's TradeCreate is published, fullinfo does not know the trade yet."""

from __future__ import annotations

import asyncio
import time

from simulator.standin import StandIn
from tests.simulator.toputil import TopCaller, create_in_shop, trades_of

FULLINFO = "taobao.trade.fullinfo.get"
SOLD = "taobao.trades.sold.get"


async def test_fullinfo_says_not_exist_until_the_detail_store_catches_up(
    top: TopCaller, standin: StandIn
) -> None:
    lag = 1.5
    standin.faults.update({"detail_lag_seconds": lag})
    created = create_in_shop(standin)
    published = time.monotonic()
    truth_before = standin.truth(tids=[created.tid]).trades[created.tid]

    answer = await top.call(FULLINFO, fields="tid,status,modified", tid=str(created.tid))
    error = answer.error
    # The very answer an unknown tid gets: a client cannot tell the two apart.
    unknown = (await top.call(FULLINFO, fields="tid", tid="1")).error
    assert {k: v for k, v in error.items() if k != "request_id"} == {
        k: v for k, v in unknown.items() if k != "request_id"
    }
    assert (error["code"], error["sub_code"]) == (15, "isv.trade-not-exist")
    assert error["msg"] == "Remote Service Error"
    assert error["sub_msg"]
    assert standin.stats.log[-2].fault == "detail_lag"
    # Lists already show it, and older trades answer as usual meanwhile.
    listed = await top.ok(SOLD, fields="tid", page_size="5")
    assert created.tid in {t["tid"] for t in trades_of(listed)}
    older = next(iter(standin.market.records(0))).tid
    assert (await top.ok(FULLINFO, fields="tid", tid=str(older)))["trade"]["tid"] == older

    deadline = published + lag + 5
    while True:
        answer = await top.call(FULLINFO, fields="tid,status,modified", tid=str(created.tid))
        if "trade_fullinfo_get_response" in answer.json:
            break
        assert answer.error["sub_code"] == "isv.trade-not-exist"
        assert time.monotonic() < deadline, "fullinfo never caught up"
        await asyncio.sleep(0.05)  # polling the gateway
    assert time.monotonic() - published >= lag - 0.05
    trade = answer.body(FULLINFO)["trade"]
    current = standin.market.trade(created.tid) or {}
    assert (trade["status"], trade["modified"]) == (current["status"], current["modified"])
    # The lag hid the trade; it did not change it.
    assert standin.truth(tids=[created.tid]).trades[created.tid] == truth_before


async def test_without_the_knob_a_new_trade_answers_at_once(top: TopCaller, standin: StandIn) -> None:
    standin.faults.update({"detail_lag_seconds": 60})
    hidden = create_in_shop(standin)
    hidden_answer = await top.call(FULLINFO, fields="tid", tid=str(hidden.tid))
    assert hidden_answer.error["sub_code"] == "isv.trade-not-exist"
    standin.faults.update({"detail_lag_seconds": 0})
    assert (await top.ok(FULLINFO, fields="tid", tid=str(hidden.tid)))["trade"]["tid"] == hidden.tid
    fresh = create_in_shop(standin)
    assert (await top.ok(FULLINFO, fields="tid", tid=str(fresh.tid)))["trade"]["tid"] == fresh.tid
