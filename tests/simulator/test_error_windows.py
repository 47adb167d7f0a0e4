"""App-wide error windows: for a while every call of some APIs (or all) gets one kind of refusal, then
the gateway answers the truth again."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest

from simulator.standin import StandIn
from tests.simulator.toputil import Answer, TopCaller

FULLINFO = "taobao.trade.fullinfo.get"
SOLD = "taobao.trades.sold.get"
INCREMENT = "taobao.trades.sold.increment.get"

# kind → (code, sub_code) of the error answer
ERROR_KINDS: dict[str, tuple[int, str | None]] = {
    "permission": (11, "isv.permission-api-package-limit"),
    "ip-not-allowed": (11, "isv.permission-ip-whitelist-limit"),
    "invalid-signature": (25, None),
    "timestamp": (31, None),
    "unknown-code": (99999, "isv.unknown-error-99999"),
}


def _tid(standin: StandIn) -> str:
    return str(next(iter(standin.market.records(0))).tid)


async def _fullinfo(top: TopCaller, standin: StandIn) -> Answer:
    return await top.call(FULLINFO, fields="tid,status", tid=_tid(standin))


def _is_truth(answer: Answer, standin: StandIn) -> bool:
    data = answer.json
    if "trade_fullinfo_get_response" not in data:
        return False
    trade = data["trade_fullinfo_get_response"]["trade"]
    return bool(trade["status"] == (standin.market.trade(trade["tid"]) or {})["status"])


@pytest.mark.parametrize("kind", sorted(ERROR_KINDS))
async def test_an_error_window_refuses_every_call_of_its_methods(
    kind: str, top: TopCaller, standin: StandIn
) -> None:
    truth = standin.truth(digests=True)
    standin.faults.update({"error_window": kind, "error_window_methods": [FULLINFO, SOLD]})
    code, sub_code = ERROR_KINDS[kind]
    for answer in (await _fullinfo(top, standin), await top.call(SOLD, fields="tid")):
        assert answer.status == 200
        error = answer.error
        assert error["code"] == code
        assert error.get("sub_code") == sub_code
        assert error["msg"]
        assert error["request_id"]
    # Even a request that is wrong anyway gets the window's answer: it is checked first.
    wrong_secret = await top.request(FULLINFO, {"fields": "tid", "tid": _tid(standin)}, secret="old")
    assert wrong_secret.error["code"] == code
    if kind == "ip-not-allowed":
        assert "127.0.0.1" in error["sub_msg"]
        assert standin.app_key in error["sub_msg"]
    # Other methods are not in the window.
    assert "trades_sold_increment_get_response" in (
        await top.call(INCREMENT, fields="tid", start_modified="2024-01-01 00:00:00",
                       end_modified="2024-01-01 01:00:00")
    ).json  # fmt: skip
    assert standin.stats.log[-2].fault == f"error_window:{kind}"

    standin.faults.update({"error_window": ""})
    assert _is_truth(await _fullinfo(top, standin), standin)
    assert standin.truth(digests=True) == truth


async def test_a_proxy_answers_200_without_any_top_envelope(top: TopCaller, standin: StandIn) -> None:
    standin.faults.update({"error_window": "unwrapped-json"})
    answer = await _fullinfo(top, standin)
    assert answer.status == 200
    assert json.loads(answer.text) == {"result": "ok"}

    standin.faults.update({"error_window": "html-200"})
    async with top.http.post(top.api_url, data=top.system_params(SOLD) | {"sign": "x"}) as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        page = await response.text()
    assert page.lstrip().startswith("<!DOCTYPE html>")
    with pytest.raises(json.JSONDecodeError):
        json.loads(page)

    standin.faults.update({"error_window": ""})
    assert _is_truth(await _fullinfo(top, standin), standin)


async def test_a_window_with_an_end_closes_by_itself(
    top: TopCaller, standin: StandIn, http: aiohttp.ClientSession
) -> None:
    url = standin.base_url + "/__standin/faults"
    async with http.post(url, json={"error_window": "permission", "error_window_seconds": 1.0}) as response:
        assert response.status == 200
        knobs: dict[str, Any] = await response.json()
    opened = time.monotonic()
    assert knobs["error_window"] == "permission"
    assert 0 < knobs["error_window_until"] - time.time() <= 1.0
    assert (await _fullinfo(top, standin)).error["code"] == 11
    deadline = opened + 6
    while not _is_truth(answer := await _fullinfo(top, standin), standin):
        assert answer.error["code"] == 11
        assert time.monotonic() < deadline, "the window never closed"
        await asyncio.sleep(0.05)  # polling the gateway
    assert time.monotonic() - opened >= 0.9
    # Opened again without an end: it lasts until turned off, whatever end the last one had.
    standin.faults.update({"error_window": "timestamp"})
    assert standin.faults.error_window_until == 0
    assert (await _fullinfo(top, standin)).error["code"] == 31

    async with http.post(url, json={"error_window": "no-such-kind"}) as response:
        assert response.status == 400
