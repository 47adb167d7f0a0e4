"""The stand-in TMC server's protocol checks, fault knobs and ground truth, over real sockets."""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import websockets
from websockets.asyncio.client import ClientConnection, connect

from common.backoff import Backoff, BackoffPolicy
from simulator.tmc_faults import TmcFaults
from simulator.tmc_server import TmcServer, TmcServerConfig
from taobao.tmc import codec
from tests.tmc.helpers import (
    APP_KEY,
    APP_SECRET,
    Recorder,
    make_session,
    publish,
    running,
    running_server,
    wait_until,
)


@contextlib.asynccontextmanager
async def logged_in(server: TmcServer, group: str = "default") -> AsyncIterator[tuple[ClientConnection, str]]:
    """A bare WebSocket client that has done CONNECT/CONNECTACK; yields it and the token."""
    async with connect(server.url, compression=None) as ws:
        request = codec.connect_request(
            app_key=APP_KEY, group_name=group, timestamp_ms=1700000000000, secret=APP_SECRET, sdk="raw"
        )
        await ws.send(codec.encode(request))
        ack = await _next(ws)
        assert ack.message_type is codec.MessageType.CONNECTACK
        assert ack.flag == 1
        assert ack.token
        yield ws, ack.token


async def _next(ws: ClientConnection) -> codec.Message:
    frame = await ws.recv()
    assert isinstance(frame, bytes)
    return codec.decode(frame)


async def _rejection(ws: ClientConnection, frame: bytes | str) -> codec.Message:
    await ws.send(frame)
    ack = await _next(ws)
    assert ack.message_type is codec.MessageType.SENDACK
    assert ack.status_code == 400
    return ack


async def test_the_token_is_stable_per_app_and_group() -> None:
    async with running_server() as server:
        async with logged_in(server) as (_, first), logged_in(server) as (_, second):
            pass
        async with logged_in(server, group="erp") as (_, other):
            pass
    assert first == second == server.token_for(APP_KEY)
    assert other != first


async def test_malformed_client_sends_are_answered_with_a_sendack_error() -> None:
    async with running_server() as server, logged_in(server) as (ws, token):
        flagged = codec.Message(message_type=codec.MessageType.SEND, flag=7, token="not-the-token")
        ack = await _rejection(ws, codec.encode(flagged))
        assert (ack.status_phrase, ack.flag, ack.token) == ("unknown token", 7, "not-the-token")

        truncated = await _rejection(ws, b"\x02\x02\x05\x00")
        assert str(truncated.status_phrase).startswith("malformed message: truncated")
        assert (await _rejection(ws, "text")).status_phrase == "text frames are not TMC messages"

        int32_kind = codec.Message(
            message_type=codec.MessageType.SEND, token=token, content={"__kind": codec.Int32(2)}
        )
        assert (await _rejection(ws, codec.encode(int32_kind))).status_phrase == "__kind must be a Byte"

        # tmcpy-style confirm: the id written with the smallest width that fits
        # (docs/tmc-protocol.md#codec-pitfalls).
        narrow = codec.Message(
            message_type=codec.MessageType.SEND,
            token=token,
            content={"__kind": codec.Byte(2), "id": codec.Int32(5)},
        )
        assert (await _rejection(ws, codec.encode(narrow))).status_phrase == "id must be an Int64"

        publish_kind = codec.Message(
            message_type=codec.MessageType.SEND, token=token, content={"__kind": codec.Byte(3)}
        )
        assert (await _rejection(ws, codec.encode(publish_kind))).status_phrase == "unsupported __kind 3"

        # The connection survived all of it and still serves messages.
        publish(server, 1)
        pushed = await _next(ws)
        assert pushed.token == token
        assert server.stats.malformed == 6


async def test_confirms_of_any_width_are_accepted_when_not_strict() -> None:
    async with (
        running_server(TmcServerConfig(strict_types=False)) as server,
        logged_in(server) as (ws, token),
    ):
        publish(server, 1)
        pushed = codec.parse_push(await _next(ws))
        loose = codec.Message(
            message_type=codec.MessageType.SEND,
            token=token,
            content={"__kind": codec.Int32(2), "id": codec.Int64(pushed.id)},
        )
        await ws.send(codec.encode(loose))
        await wait_until(lambda: server.pending(APP_KEY) == 0, what="the loose confirm")


async def test_a_push_carries_the_token_and_the_section_6_fields() -> None:
    published = datetime(2024, 5, 1, 4, 0, 0, 123000, tzinfo=UTC)
    async with running_server(TmcServerConfig(publisher="4272")) as server, logged_in(server) as (ws, token):
        message_id = server.publish(
            APP_KEY,
            topic="taobao_trade_TradeCreate",
            content='{"tid": 1}',
            nick="店",
            user_id=9,
            time=published,
        )
        pushed = await _next(ws)

    fields = pushed.content
    assert pushed.message_type is codec.MessageType.SEND
    assert pushed.token == token
    assert list(fields) == ["id", "topic", "content", "time", "outtime", "publisher", "userid", "nick"]
    assert type(fields["id"]) is codec.Int64
    assert fields["id"] == message_id
    assert type(fields["userid"]) is codec.Int64
    assert fields["time"] == published
    assert isinstance(fields["outtime"], datetime)
    assert (fields["topic"], fields["content"], fields["publisher"], fields["nick"]) == (
        "taobao_trade_TradeCreate",
        '{"tid": 1}',
        "4272",
        "店",
    )


async def test_unknown_paths_and_app_keys_are_refused() -> None:
    async with running_server() as server:
        with pytest.raises(websockets.exceptions.InvalidStatus, match="404"):
            async with connect(server.url + "elsewhere"):
                pass
        async with connect(server.url) as ws:
            request = codec.connect_request(
                app_key="nobody", group_name="default", timestamp_ms=1, secret="x", sdk="raw"
            )
            await ws.send(codec.encode(request))
            ack = await _next(ws)
            assert (ack.status_code, ack.status_phrase, ack.token) == (401, "invalid app_key", None)
        with pytest.raises(ValueError, match="unknown app_key"):
            server.publish("nobody", topic="t", content="{}", nick="n", user_id=1, time=datetime.now(UTC))
    assert server.stats.refused == 1


async def test_lost_messages_are_recorded_as_withheld_with_their_tids() -> None:
    faults = TmcFaults(lose_fraction=0.3)
    async with running_server(faults=faults) as server:
        rec = Recorder()
        session = make_session(server, rec)
        async with running(session):
            ids = publish(server, 100, first_tid=5000)
            await wait_until(lambda: server.pending(APP_KEY) == 0, what="every delivered message confirmed")

    withheld = server.withheld
    assert 10 <= len(withheld) <= 50
    assert {w.reason for w in withheld} == {"lose_fraction"}
    assert sorted(rec.ids() + [w.id for w in withheld]) == ids
    assert {w.tid for w in withheld} == {5000 + ids.index(w.id) for w in withheld}


async def test_messages_published_while_nobody_listens_can_be_lost_like_the_old_stream() -> None:
    faults = TmcFaults(lose_while_disconnected=True)
    async with running_server(faults=faults) as server:
        early = publish(server, 3, first_tid=1)
        rec = Recorder()
        session = make_session(server, rec)
        async with running(session):
            await wait_until(lambda: len(server.connections()) == 1, what="connected")
            later = publish(server, 2, first_tid=10)
            await wait_until(lambda: len(rec.messages) == 2, what="the later messages")

    assert rec.ids() == later
    assert [(w.id, w.tid, w.reason) for w in server.withheld] == [
        (early[0], 1, "disconnected"),
        (early[1], 2, "disconnected"),
        (early[2], 3, "disconnected"),
    ]


async def test_duplicates_and_reordering_are_injected_and_counted() -> None:
    faults = TmcFaults(duplicate_fraction=0.2, reorder_fraction=0.2, reorder_delay=0.05)
    async with running_server(TmcServerConfig(seed=7), faults) as server:
        rec = Recorder()
        session = make_session(server, rec)
        async with running(session):
            await wait_until(lambda: len(server.connections()) == 1, what="connected")
            ids = publish(server, 100)
            await wait_until(lambda: server.pending(APP_KEY) == 0, what="an empty queue")
            await wait_until(
                lambda: len(rec.messages) == 100 + server.stats.duplicated, what="the duplicates too"
            )

    assert server.stats.duplicated > 0
    assert server.stats.reordered > 0
    assert sorted(set(rec.ids())) == ids
    assert len(rec.ids()) == 100 + server.stats.duplicated
    first_seen = list(dict.fromkeys(rec.ids()))
    assert first_seen != ids  # held-back messages were overtaken


async def test_a_restart_keeps_the_queue() -> None:
    async with running_server() as server:
        rec = Recorder()
        session = make_session(server, rec)
        async with running(session):
            await wait_until(lambda: session.connected, what="connected")
            port = server.port
            await server.stop()
            ids = publish(server, 3)  # accepted while the server is down
            await server.start(port=port)
            await wait_until(lambda: server.pending(APP_KEY) == 0, what="delivery after the restart")

    assert rec.ids() == ids
    assert session.counters.reconnects >= 1


def test_backoff_grows_with_jitter_caps_and_resets() -> None:
    backoff = Backoff(BackoffPolicy(base=1.0, cap=8.0), random.Random(3))
    delays = [backoff.next_delay() for _ in range(8)]
    ceilings = [1, 2, 4, 8, 8, 8, 8, 8]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == len(delays)  # jittered
    backoff.reset()
    assert 0.5 <= backoff.next_delay() <= 1.0
    with pytest.raises(ValueError, match="base <= cap"):
        BackoffPolicy(base=2.0, cap=1.0)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"content": "\ud800"}, "cannot be pushed"),
        ({"user_id": 2**63}, "does not fit"),
        ({"time": datetime(2024, 1, 1)}, "naive datetime"),  # naive on purpose
        ({"topic": ""}, "empty topic"),
    ],
)
def test_publish_refuses_what_could_not_be_pushed(change: dict[str, object], expected: str) -> None:
    server = TmcServer({APP_KEY: APP_SECRET})
    fields: dict[str, object] = {
        "topic": "t",
        "content": "{}",
        "nick": "n",
        "user_id": 1,
        "time": datetime.now(UTC),
        **change,
    }
    with pytest.raises(ValueError, match=expected):
        server.publish(APP_KEY, **fields)  # type: ignore[arg-type]
    assert server.pending(APP_KEY) == 0
