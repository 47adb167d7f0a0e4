"""Malformed list pages: counts missing or garbled, pages shorter than promised, bodies unwrapped."""

from __future__ import annotations

from typing import Any

import pytest

from simulator.standin import StandIn
from simulator.trade_values import top_time
from tests.simulator.toputil import ALL_TYPES, TopCaller, trades_of

SOLD = "taobao.trades.sold.get"
INCREMENT = "taobao.trades.sold.increment.get"
FULLINFO = "taobao.trade.fullinfo.get"


def _params(standin: StandIn, method: str, **extra: str) -> dict[str, str]:
    base = {"fields": "tid", "type": ALL_TYPES, "page_size": "10", **extra}
    if method == INCREMENT:
        # A day of the shop's history that holds more than one page.
        newest = max(rec.modified for rec in standin.market.records(0))
        base |= {"start_modified": top_time(newest - 86399), "end_modified": top_time(newest)}
    return base


async def _page(top: TopCaller, method: str, params: dict[str, str]) -> dict[str, Any]:
    answer = await top.request(method, params)
    assert answer.status == 200
    return answer.body(method)


@pytest.mark.parametrize("method", [SOLD, INCREMENT])
async def test_each_malformation_and_the_truth_after_it(
    method: str, top: TopCaller, standin: StandIn
) -> None:
    truth = standin.truth()
    counted = _params(standin, method)
    has_next = _params(standin, method, use_has_next="true")
    honest = await _page(top, method, counted)
    honest_tids = [t["tid"] for t in trades_of(honest)]
    assert len(honest_tids) == 10
    assert honest["total_results"] > 10

    standin.faults.update({"malformed_page_rate": 1.0, "malformed_page_kinds": ["missing_total"]})
    body = await _page(top, method, counted)
    assert "total_results" not in body
    assert [t["tid"] for t in trades_of(body)] == honest_tids
    assert "has_next" not in await _page(top, method, has_next)

    standin.faults.update({"malformed_page_kinds": ["garbled_has_next"]})
    assert (await _page(top, method, has_next))["has_next"] == "maybe"

    standin.faults.update({"malformed_page_kinds": ["short_page"]})
    short = await _page(top, method, counted)
    kept = [t["tid"] for t in trades_of(short)]
    assert len(kept) < 10
    assert kept == honest_tids[: len(kept)]
    assert short["total_results"] > 10  # more pages are still promised
    assert (await _page(top, method, has_next))["has_next"] is True

    standin.faults.update({"malformed_page_kinds": ["empty_page"]})
    empty = await _page(top, method, counted)
    assert "trades" not in empty
    assert empty["total_results"] > 10
    assert (await _page(top, method, has_next))["has_next"] is True

    standin.faults.update({"malformed_page_kinds": ["unwrapped"]})
    data = (await top.request(method, counted)).json
    assert not any(key.endswith("_response") for key in data)
    assert [t["tid"] for t in data["trades"]] == honest_tids
    assert data["request_id"]

    # fullinfo is never malformed, and the stand-in lists the truth again once the knob is off.
    tid = str(honest_tids[0])
    assert (await top.ok(FULLINFO, fields="tid", tid=tid))["trade"]["tid"] == honest_tids[0]
    standin.faults.update({"malformed_page_rate": 0.0})
    again = await _page(top, method, counted)
    assert [t["tid"] for t in trades_of(again)] == honest_tids
    assert again["total_results"] == honest["total_results"]
    assert standin.truth() == truth  # the pages were malformed, not the trades


async def test_a_share_of_list_calls_is_malformed(top: TopCaller, standin: StandIn) -> None:
    standin.faults.update({"malformed_page_rate": 0.5, "malformed_page_kinds": ["empty_page"]})
    params = _params(standin, SOLD)
    empties = [("trades" not in await _page(top, SOLD, params)) for _ in range(40)]
    assert 5 <= sum(empties) <= 35
    faults = [r.fault for r in list(standin.stats.log)[-40:]]
    assert faults.count("malformed_page:empty_page") == sum(empties)
