"""The topats initial-load task: validation, new → doing → done, a single-use zip with a matching MD5."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import datetime, timedelta
from typing import Any

import aiohttp

from simulator.clock import whole_seconds
from simulator.standin import StandIn
from simulator.topats import read_zip_lines
from taobao.timefmt import GMT8
from tests.simulator.toputil import TopCaller

CREATE = "taobao.topats.trades.sold.get"
RESULT = "taobao.topats.result.get"


def _day(offset: int) -> str:
    return (datetime.now(GMT8).date() + timedelta(days=offset)).strftime("%Y%m%d")


async def test_range_rules(top: TopCaller) -> None:
    today = (await top.call(CREATE, fields="tid", start_time=_day(-3), end_time=_day(0))).error
    assert today["sub_code"] == "isv.invalid-parameter:end_time"
    too_old = (await top.call(CREATE, fields="tid", start_time=_day(-91), end_time=_day(-1))).error
    assert too_old["sub_code"] == "isv.invalid-parameter:start_time"
    reversed_range = (await top.call(CREATE, fields="tid", start_time=_day(-2), end_time=_day(-5))).error
    assert reversed_range["sub_code"] == "isv.invalid-parameter:start_time"
    bad_format = (await top.call(CREATE, fields="tid", start_time="2024-01-01", end_time=_day(-1))).error
    assert bad_format["sub_code"] == "isv.invalid-parameter:start_time"
    missing = (await top.call(CREATE, start_time=_day(-3), end_time=_day(-1))).error
    assert missing["code"] == 40
    unknown = (await top.call(RESULT, task_id="1")).error
    assert unknown["sub_code"] == "isv.invalid-parameter:task_id"


async def test_task_lifecycle_and_zip(top: TopCaller, standin: StandIn, http: aiohttp.ClientSession) -> None:
    created = (
        await top.ok(
            CREATE, fields="tid,type,status,created,orders.oid", start_time=_day(-30), end_time=_day(-1)
        )
    )["task"]
    assert set(created) == {"task_id", "created"}
    task_id = str(created["task_id"])
    statuses: list[str] = []
    deadline = asyncio.get_running_loop().time() + 10
    task: dict[str, Any] = {}
    while not statuses or statuses[-1] != "done":
        assert asyncio.get_running_loop().time() < deadline, statuses
        task = (await top.ok(RESULT, task_id=task_id))["task"]
        if not statuses or statuses[-1] != task["status"]:
            statuses.append(task["status"])
        if task["status"] != "done":
            assert set(task) == {"task_id", "status"}
            await asyncio.sleep(0.05)  # polling, as a client would
    assert statuses[0] == "new"
    assert "doing" in statuses
    assert task["method"] == CREATE
    assert len(task["check_code"]) == 32
    assert task["check_code"] == task["check_code"].lower()

    async with http.get(task["download_url"]) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/octet-stream"
        assert response.headers["Content-Disposition"].startswith("attachment")
        data = await response.read()
    assert hashlib.md5(data).hexdigest() == task["check_code"]
    async with http.get(task["download_url"]) as again:
        assert again.status == 404  # single use

    lines = read_zip_lines(data)
    trades = [line["trade_fullinfo_get_response"]["trade"] for line in lines]
    start = whole_seconds(datetime.strptime(_day(-30), "%Y%m%d").replace(tzinfo=GMT8))
    end = whole_seconds(datetime.strptime(_day(0), "%Y%m%d").replace(tzinfo=GMT8)) - 1
    expected = {r.tid for r in standin.market.records(0) if start <= r.created <= end}
    assert {t["tid"] for t in trades} == expected
    assert all(set(t) <= {"tid", "type", "status", "created", "orders"} for t in trades)
    assert all(t["orders"]["order"][0].keys() == {"oid"} for t in trades)
    assert {t["type"] for t in trades} - {"fixed", "auction", "auto_delivery", "ec", "cod", "step"}

    fresh = (await top.ok(RESULT, task_id=task_id))["task"]
    assert fresh["download_url"] != task["download_url"]
    async with http.get(fresh["download_url"]) as response:
        assert hashlib.md5(await response.read()).hexdigest() == task["check_code"]
    other_shop = TopCaller.of(top.http, standin, shop=1)
    refused = (await other_shop.call(RESULT, task_id=task_id)).error
    assert refused["sub_code"] == "isv.invalid-parameter:task_id"
