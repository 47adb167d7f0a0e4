"""Odd values: text a buyer really typed (the truth holds it) and values broken on the way out (the
truth stays clean, and the answer is right again once the knob is off)."""

from __future__ import annotations

import json
import re
from datetime import UTC
from decimal import Decimal

import aiohttp
import pytest

from simulator.odd_values import BEFORE_YEAR_ONE, ODD_BUYER_TEXT
from simulator.standin import StandIn
from simulator.truth import trade_digest
from taobao.timefmt import parse_top_time
from tests.simulator.toputil import LENIENT, TopCaller, create_in_shop

FULLINFO = "taobao.trade.fullinfo.get"
BROKEN_FIELDS = "tid,status,modified,end_time,post_fee,total_fee,payment,buyer_message"


def _paid_trade(standin: StandIn) -> int:
    """A shop-0 trade that has an end_time, a post fee and a total (a finished one)."""
    for rec in standin.market.records(0):
        raw = standin.market.trade(rec.tid) or {}
        if "end_time" in raw and raw["status"] == "TRADE_FINISHED" and raw["post_fee"] != "0.00":
            return rec.tid
    raise AssertionError("no finished trade with postage in shop 0")


async def test_a_buyer_typed_nul_and_a_lone_surrogate_the_truth_holds_them(
    top: TopCaller, standin: StandIn, http: aiohttp.ClientSession
) -> None:
    standin.faults.update({"odd_text_rate": 1.0})
    created = create_in_shop(standin)
    raw = standin.market.trade(created.tid) or {}
    assert raw["buyer_message"] == ODD_BUYER_TEXT
    assert "\x00" in raw["buyer_message"]
    assert "\ud800" in raw["buyer_message"]

    answer = await top.call(FULLINFO, fields="tid,buyer_message,has_buyer_message", tid=str(created.tid))
    assert answer.status == 200
    # Valid UTF-8 JSON text: the NUL and the surrogate travel as escapes, never as raw characters.
    assert "\x00" not in answer.text
    assert "\\u0000" in answer.text
    assert "\\ud800" in answer.text
    trade = json.loads(answer.text)["trade_fullinfo_get_response"]["trade"]
    assert trade["buyer_message"] == ODD_BUYER_TEXT
    assert trade["has_buyer_message"] is True

    # The admin truth carries it the same way, and its digest covers it.
    url = f"{standin.truth_url}?tids={created.tid}&fields=buyer_message"
    async with http.get(url) as response:
        assert response.status == 200
        entry = (await response.json())["trades"][str(created.tid)]
    assert entry["fields"] == {"buyer_message": ODD_BUYER_TEXT}
    assert entry["digest"] == trade_digest(raw)

    # Off again: new trades are ordinary, and the trade the buyer typed into keeps what was typed.
    standin.faults.update({"odd_text_rate": 0.0})
    ordinary = create_in_shop(standin)
    assert (standin.market.trade(ordinary.tid) or {}).get("buyer_message") != ODD_BUYER_TEXT
    again = await top.ok(FULLINFO, fields="tid,buyer_message", tid=str(created.tid))
    assert again["trade"]["buyer_message"] == ODD_BUYER_TEXT


async def test_a_buyer_memo_edit_is_a_real_change_holding_what_was_typed(
    top: TopCaller, standin: StandIn, http: aiohttp.ClientSession
) -> None:
    tid = next(iter(standin.market.records(0))).tid
    before = standin.market.change_count
    market_url = standin.base_url + "/__standin/market"
    async with http.post(market_url, json={"action": "buyer_memo", "tid": tid}) as r:
        assert r.status == 200
        body = json.loads(await r.text())
    (change,) = body["changes"]
    assert (change["tid"], change["topic"]) == (tid, "taobao_trade_TradeMemoModified")
    assert standin.market.change_count == before + 1
    raw = standin.market.trade(tid) or {}
    assert raw["buyer_memo"] == ODD_BUYER_TEXT
    assert raw["modified"] == change["modified"]
    trade = (await top.ok(FULLINFO, fields="tid,buyer_memo,modified", tid=str(tid)))["trade"]
    assert trade == {"tid": tid, "buyer_memo": ODD_BUYER_TEXT, "modified": raw["modified"]}
    async with http.post(market_url, json={"action": "buyer_memo"}) as r:
        assert r.status == 400


async def test_broken_values_for_named_tids_leave_the_truth_clean(top: TopCaller, standin: StandIn) -> None:
    tid = _paid_trade(standin)
    truth = dict(standin.market.trade(tid) or {})
    digest = trade_digest(truth)
    standin.faults.update({"odd_values_tids": [tid], "odd_nesting_depth": 3000})

    answer = await top.call(FULLINFO, fields=BROKEN_FIELDS, tid=str(tid))
    assert answer.status == 200
    text = answer.text
    assert f'"end_time":"{BEFORE_YEAR_ONE}"' in text
    assert '"post_fee":1E-20000' in text
    assert '"total_fee":"N/A"' in text
    nested = re.search(r'"trade_ext":(\[+)(\]+)', text)
    assert nested is not None
    assert len(nested.group(1)) == len(nested.group(2)) == 3000
    # What the values do to an ordinary client: the nesting beats a recursive parser...
    with pytest.raises(RecursionError):
        LENIENT.decode(text)
    # ... and without it, the exponent either vanishes (float) or survives as a decimal no money column
    # holds, and the date is before year 1 once it leaves GMT+8.
    standin.faults.update({"odd_values_kinds": ["date", "number", "money"]})
    flat = (await top.call(FULLINFO, fields=BROKEN_FIELDS, tid=str(tid))).text
    assert "trade_ext" not in flat
    as_float = LENIENT.decode(flat)["trade_fullinfo_get_response"]["trade"]
    assert as_float["post_fee"] == 0.0
    assert as_float["total_fee"] == "N/A"
    as_decimal = json.JSONDecoder(strict=False, parse_float=Decimal).decode(flat)
    assert as_decimal["trade_fullinfo_get_response"]["trade"]["post_fee"] == Decimal("1E-20000")
    with pytest.raises(OverflowError):
        parse_top_time(as_float["end_time"]).astimezone(UTC)
    # Untouched fields are the truth's, and unrequested broken fields are not added.
    assert as_float["payment"] == truth["payment"]
    narrow = (await top.ok(FULLINFO, fields="tid,payment", tid=str(tid)))["trade"]
    assert narrow == {"tid": tid, "payment": truth["payment"]}

    assert standin.market.trade(tid) == truth
    assert trade_digest(standin.market.trade(tid) or {}) == digest
    # Off: the answer is the truth again.
    standin.faults.update({"odd_values_tids": []})
    clean = (await top.ok(FULLINFO, fields=BROKEN_FIELDS, tid=str(tid)))["trade"]
    assert {k: clean[k] for k in ("end_time", "post_fee", "total_fee")} == {
        k: truth[k] for k in ("end_time", "post_fee", "total_fee")
    }
    assert "trade_ext" not in clean


async def test_a_share_of_trades_gets_broken_values_the_same_ones_every_call(
    top: TopCaller, standin: StandIn
) -> None:
    standin.faults.update({"odd_values_rate": 0.5, "odd_values_kinds": ["money"]})
    tids = [rec.tid for rec in list(standin.market.records(0))[:40]]

    async def hit() -> set[int]:
        out = set()
        for tid in tids:
            if (await top.ok(FULLINFO, fields="tid,total_fee", tid=str(tid)))["trade"]["total_fee"] == "N/A":
                out.add(tid)
        return out

    first = await hit()
    assert 5 <= len(first) <= 35
    assert await hit() == first
    assert standin.stats.faults["odd_values"] >= 2 * len(first)
