"""TOP answers are read up to a size cap: a larger one is an error of that call (for a trade's fetch,
that trade's: MalformedResponse, never retried), not a process holding whatever the gateway sends."""

from __future__ import annotations

import pytest

from taobao.errors import MalformedResponse
from taobao.taxonomy import ErrorKind
from tests.taobao.conftest import ClientFactory
from tests.taobao.gateway import SESSION, Reply, ScriptedGateway, trade_reply

TID = 2899536456494937165
FULLINFO = "taobao.trade.fullinfo.get"
CAP = 100_000


async def test_an_answer_past_the_cap_is_an_error_of_the_trade(
    make_client: ClientFactory, gateway: ScriptedGateway
) -> None:
    client = make_client(max_answer_bytes=CAP)
    # Gzipped on the wire (a few hundred bytes): the cap counts what it decompresses to.
    gateway.then(trade_reply(TID, seller_memo="x" * (2 * CAP)))
    with pytest.raises(MalformedResponse, match=f"larger than {CAP} bytes") as caught:
        await client.trade_fullinfo(SESSION, TID)
    assert caught.value.tid == TID
    assert caught.value.kind is ErrorKind.PERMANENT
    assert len(gateway.requests) == 1  # not retried
    assert client.stats.calls[(FULLINFO, "permanent")] == 1


async def test_an_uncompressed_answer_past_the_cap_is_refused_too(
    make_client: ClientFactory, gateway: ScriptedGateway
) -> None:
    client = make_client(max_answer_bytes=CAP)
    # Sent as it is: its Content-Length is already past the cap.
    body = bytes(range(256)) * (CAP // 128)
    gateway.then(Reply(body=body, headers={"Content-Encoding": "identity"}))
    with pytest.raises(MalformedResponse, match="larger than"):
        await client.trade_fullinfo(SESSION, TID)


async def test_an_answer_within_the_cap_is_read_whole(
    make_client: ClientFactory, gateway: ScriptedGateway
) -> None:
    client = make_client(max_answer_bytes=CAP)
    gateway.then(trade_reply(TID, seller_memo="x" * (CAP // 2)))
    trade = await client.trade_fullinfo(SESSION, TID)
    assert trade.raw["seller_memo"] == "x" * (CAP // 2)
