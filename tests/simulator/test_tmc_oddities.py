"""The stand-in TMC server's hostile knobs, seen by a bare WebSocket client: close reasons holding a NUL,
oversize pushes, headers this protocol version does not define, and refund topics carrying a tid."""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import fields
from typing import Any

import aiohttp
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from simulator.change_publisher import REFUND_TOPICS
from simulator.market import MarketChange
from simulator.standin import StandIn, StandInConfig
from simulator.tmc_faults import TmcFaults
from taobao.tmc import codec
from tests.simulator.toputil import permit_every_shop

MIB = 1024 * 1024


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    """A fresh stand-in per test: its TMC queue starts empty, so no test sees another's messages."""
    stand_in = StandIn(StandInConfig(seed=33, shops=3, market_rate=0, history_trades=400, history_days=30))
    async with stand_in:
        await permit_every_shop(stand_in)
        yield stand_in


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@contextlib.asynccontextmanager
async def tmc_client(standin: StandIn, max_size: int | None = None) -> AsyncIterator[ClientConnection]:
    """A bare client that has done CONNECT/CONNECTACK on the stand-in's TMC server. Every connection
    of the app's group gets the same token: `standin.tmc.token_for(standin.app_key)`."""
    assert standin.tmc_url is not None
    async with connect(standin.tmc_url, compression=None, max_size=max_size) as ws:
        request = codec.connect_request(
            app_key=standin.app_key, group_name="default", timestamp_ms=int(time.time() * 1000),
            secret=standin.app_secret, sdk="stand-in-test",
        )  # fmt: skip
        await ws.send(codec.encode(request))
        ack = codec.decode(await _frame(ws))
        assert ack.message_type is codec.MessageType.CONNECTACK
        assert ack.token
        yield ws


async def _frame(ws: ClientConnection, within: float = 5.0) -> bytes:
    async with asyncio.timeout(within):
        frame = await ws.recv()
    assert isinstance(frame, bytes)
    return frame


async def _push(ws: ClientConnection) -> codec.Message:
    message = codec.decode(await _frame(ws))
    assert message.message_type is codec.MessageType.SEND
    return message


async def _confirm(ws: ClientConnection, standin: StandIn, *messages: codec.Message) -> None:
    token = standin.tmc.token_for(standin.app_key)
    for message in messages:
        message_id = codec.message_id_of(message)
        assert message_id is not None
        await ws.send(codec.encode(codec.confirm(token, message_id)))
    await _wait_drained(standin)


async def _wait_drained(standin: StandIn, within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        await standin.tmc.wait_drained(standin.app_key)


async def _admin_tmc(http: aiohttp.ClientSession, standin: StandIn, patch: dict[str, Any]) -> dict[str, Any]:
    async with http.post(standin.base_url + "/__standin/tmc", json=patch) as response:
        body: dict[str, Any] = await response.json()
        assert response.status == 200, body
        return body


def _step_until(standin: StandIn, wanted: str, within: int = 5000) -> list[MarketChange]:
    """Step the market one change at a time until a change of topic `wanted`; every change made."""
    made: list[MarketChange] = []
    for _ in range(within):
        made += standin.market.step(1)
        if made[-1].topic == wanted:
            return made
    raise AssertionError(f"no {wanted} within {within} changes")


async def test_a_close_reason_can_hold_a_nul(standin: StandIn, http: aiohttp.ClientSession) -> None:
    async with tmc_client(standin) as ws:
        (change,) = standin.market.step(1)
        first = await _push(ws)  # received, not confirmed
        await _admin_tmc(http, standin, {"close_now": True})
        with pytest.raises(ConnectionClosed) as closed:
            await _frame(ws)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1011, "reach max idle time\x00")

    # Periodic closes, with another code and reason; the unconfirmed push comes back on the next session.
    await _admin_tmc(http, standin, {"close_every": 0.3, "close_code": 1000, "close_reason": "bye\x00"})
    async with tmc_client(standin) as ws:
        again = await _push(ws)
        assert codec.message_id_of(again) == codec.message_id_of(first)
        assert json.loads(str(again.content["content"]))["tid"] == change.tid
        with pytest.raises(ConnectionClosed) as closed:
            await _frame(ws, within=5.0)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1000, "bye\x00")
    assert standin.tmc.stats.closed >= 2
    assert standin.market.change_count == 1  # closing connections changes no trade

    summary = await _admin_tmc(http, standin, {"close_every": None})
    assert summary["faults"]["close_every"] is None
    async with tmc_client(standin) as ws:
        await _confirm(ws, standin, await _push(ws))
        with pytest.raises(TimeoutError):  # nothing closes it any more
            await _frame(ws, within=1.0)


async def test_a_close_asked_for_while_nobody_is_connected_lands_on_the_next_client(
    standin: StandIn, http: aiohttp.ClientSession
) -> None:
    summary = await _admin_tmc(http, standin, {"close_next": 1, "close_next_after": 0.2})
    assert summary["closed"] == 0  # nobody to close yet
    async with tmc_client(standin) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await _frame(ws)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1011, "reach max idle time\x00")
    assert standin.tmc.faults.close_next == 0
    # Two live clients and one close: only the older one goes.
    await _admin_tmc(http, standin, {"close_next": 1, "close_next_after": 0.5})
    async with tmc_client(standin) as older, tmc_client(standin) as newer:
        with pytest.raises(ConnectionClosed):
            await _frame(older)
        with pytest.raises(TimeoutError):  # the newer one stays up
            await _frame(newer, within=1.0)
    assert standin.tmc.stats.closed == 2


async def test_an_oversize_push_breaks_a_client_with_a_smaller_limit(
    standin: StandIn, http: aiohttp.ClientSession
) -> None:
    await _admin_tmc(http, standin, {"oversize_next": 1})
    async with tmc_client(standin, max_size=2 * MIB) as ws:
        (change,) = standin.market.step(1)
        truth = dict(standin.market.trade(change.tid) or {})
        with pytest.raises(ConnectionClosed) as closed:
            await _frame(ws)
    assert closed.value.sent is not None
    assert closed.value.sent.code == 1009  # the client's own "message too big"

    async with tmc_client(standin, max_size=None) as ws:
        big = await _push(ws)
        content = str(big.content["content"])
        assert len(content.encode("utf-8")) > 2 * MIB + 1024
        document = json.loads(content)
        assert {k: v for k, v in document.items() if k != "padding"} == change.content
        assert document["tid"] == change.tid
        # Only that one: the next message is ordinary.
        (after,) = standin.market.step(1)
        small = await _push(ws)
        assert json.loads(str(small.content["content"])) == after.content
    assert standin.tmc.stats.oversized == 1
    assert standin.market.trade(change.tid) == truth  # the padding is in the message, not the trade

    await _admin_tmc(http, standin, {"oversize_every": 2, "oversize_bytes": 100_000})
    async with tmc_client(standin) as ws:
        standin.market.step(4)
        sizes = []
        for _ in range(6):  # the two above come back unconfirmed, then the four new ones
            sizes.append(len(str((await _push(ws)).content["content"]).encode("utf-8")))
    assert sorted(size > 100_000 for size in sizes[2:]) == [False, False, True, True]
    assert standin.tmc.stats.oversized == 3


async def test_pushes_with_headers_this_version_does_not_define(
    standin: StandIn, http: aiohttp.ClientSession
) -> None:
    await _admin_tmc(http, standin, {"unknown_header_fraction": 1.0})
    async with tmc_client(standin) as ws:
        (change,) = standin.market.step(1)
        truth = standin.truth()
        frame = await _frame(ws)
        key = b"x_trace_id"
        assert struct.pack("<h", 1) + struct.pack("<i", len(key)) + key + b"\x08" in frame
        # A top-link reader takes the unknown value format for a counted string.
        message = codec.decode(frame)
        assert isinstance(message.content["x_trace_id"], str)
        assert json.loads(str(message.content["content"])) == change.content
        assert message.content["topic"] == change.topic

        await _admin_tmc(http, standin, {"unknown_header_kind": "header_type"})
        (second,) = standin.market.step(1)
        frame = await _frame(ws)
        with pytest.raises(codec.TmcDecodeError, match="unknown header type 6"):
            codec.decode(frame)

        await _admin_tmc(http, standin, {"unknown_header_fraction": 0.0})
        (plain,) = standin.market.step(1)
        message = await _push(ws)
        assert "x_trace_id" not in message.content
        assert json.loads(str(message.content["content"])) == plain.content
    assert standin.tmc.stats.unknown_headers == 2
    # Odd frames, same trades (those the later steps did not change).
    untouched = set(truth.trades) - {second.tid, plain.tid}
    assert standin.truth(tids=untouched).trades == {t: truth.trades[t] for t in untouched}
    with pytest.raises(AssertionError):
        await _admin_tmc(http, standin, {"unknown_header_kind": "nope"})


def _refunded(standin: StandIn, change: MarketChange) -> dict[str, Any] | None:
    """The sub-order a change refunded, or None (a close before payment, or not a refund at all)."""
    if change.topic not in ("taobao_trade_TradePartlyRefund", "taobao_trade_TradeClose"):
        return None
    trade = standin.market.trade(change.tid) or {}
    order = next(o for o in trade["orders"]["order"] if o["oid"] == change.content["oid"])
    return order if order["refund_status"] == "SUCCESS" else None


def _expected_topics(standin: StandIn, made: list[MarketChange]) -> list[str]:
    """Each change's trade topic, followed by the refund topics when it refunded a sub-order."""
    out: list[str] = []
    for change in made:
        out.append(change.topic)
        if _refunded(standin, change) is not None:
            out += REFUND_TOPICS
    return out


async def test_refund_topics_carry_the_tid_of_the_refunded_trade(
    standin: StandIn, http: aiohttp.ClientSession
) -> None:
    await _admin_tmc(http, standin, {"refund_topics": True})
    async with tmc_client(standin) as ws:
        made = _step_until(standin, "taobao_trade_TradePartlyRefund")
        expected = _expected_topics(standin, made)
        pushed = [await _push(ws) for _ in expected]
        await _confirm(ws, standin, *pushed)  # and nothing more was pending
    assert [str(m.content["topic"]) for m in pushed] == expected
    refund = made[-1]
    order = _refunded(standin, refund)
    assert order is not None
    for message in pushed[-2:]:
        content = json.loads(str(message.content["content"]))
        assert content["tid"] == refund.tid
        assert (content["oid"], content["refund_id"], content["refund_fee"]) == (
            order["oid"], order["refund_id"], order["payment"],
        )  # fmt: skip
    # Refund messages are not market changes: the truth's change log has trade topics only.
    assert standin.market.change_count == len(made)
    assert all(c.topic.startswith("taobao_trade_") for c in standin.market.changes)

    # Off: the next refund announces only its trade topic.
    await _admin_tmc(http, standin, {"refund_topics": False})
    async with tmc_client(standin) as ws:
        more = _step_until(standin, "taobao_trade_TradePartlyRefund")
        messages = [await _push(ws) for _ in more]
        await _confirm(ws, standin, *messages)  # nothing else was published
    assert [str(m.content["topic"]) for m in messages] == [c.topic for c in more]


async def test_withheld_messages_name_the_market_change_they_announced(
    standin: StandIn, http: aiohttp.ClientSession
) -> None:
    await _admin_tmc(http, standin, {"refund_topics": True, "lose_fraction": 1.0})
    made = _step_until(standin, "taobao_trade_TradePartlyRefund")
    withheld = (await _admin_tmc(http, standin, {}))["withheld"]
    trade_messages = [w for w in withheld if w["topic"].startswith("taobao_trade_")]
    assert [(w["seq"], w["tid"]) for w in trade_messages] == [(c.seq, c.tid) for c in made]
    others = [w for w in withheld if not w["topic"].startswith("taobao_trade_")]
    refunds = [c for c in made if _refunded(standin, c) is not None]
    assert [w["topic"] for w in others] == list(REFUND_TOPICS) * len(refunds)
    assert [w["tid"] for w in others] == [c.tid for c in refunds for _ in REFUND_TOPICS]
    assert all(w["seq"] is None for w in others)


def test_every_knob_is_off_by_default() -> None:
    faults = TmcFaults()
    assert faults.close_every is None
    assert (faults.oversize_every, faults.oversize_next, faults.unknown_header_fraction) == (0, 0, 0.0)
    assert faults.refund_topics is False
    assert {f.name for f in fields(TmcFaults)} >= {"close_code", "close_reason", "oversize_bytes"}
