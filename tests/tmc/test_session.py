"""TmcSession against the stand-in TMC server over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time

import pytest
from pydantic import SecretStr
from websockets.asyncio.server import ServerConnection, serve

from common.backoff import BackoffPolicy
from listener.session import SessionTiming, TmcConnectRefused, TmcSession
from simulator.tmc_faults import TmcFaults
from simulator.tmc_server import TmcServerConfig
from taobao.tmc import codec
from taobao.tmc.events import Connected, Disconnected, Refused, SessionEvent, TmcMessage
from tests.tmc.helpers import (
    APP_KEY,
    APP_SECRET,
    FAST_TIMING,
    BlockedHandler,
    Recorder,
    holds_for,
    make_session,
    publish,
    running,
    running_server,
    wait_until,
)


def _of(events: list[SessionEvent], kind: type) -> list[SessionEvent]:
    return [e for e in events if isinstance(e, kind)]


async def test_connect_is_signed_and_every_send_carries_the_token() -> None:
    seen: list[codec.Message] = []

    async def fake_tmc(ws: ServerConnection) -> None:
        first = await ws.recv()
        assert isinstance(first, bytes)
        connect = codec.decode(first)
        seen.append(connect)
        await ws.send(codec.encode(codec.connect_ack(connect, token="tok-1")))
        async for frame in ws:
            assert isinstance(frame, bytes)
            seen.append(codec.decode(frame))

    async with serve(fake_tmc, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        rec = Recorder()
        session = TmcSession(
            url=f"ws://127.0.0.1:{port}/",
            app_key=APP_KEY,
            app_secret=SecretStr(APP_SECRET),
            handler=rec,
            group_name="erp",
            timing=FAST_TIMING,
            on_state=rec.on_state,
        )
        before_ms = time.time_ns() // 1_000_000
        async with running(session):
            await wait_until(lambda: len(seen) >= 2, what="CONNECT and the first PullRequest")
            await session.confirm(2**60)
            await session.fail(2**60 + 1, "why " * 100)
            await wait_until(lambda: len(seen) >= 4, what="confirm and fail")

    connect = seen[0]
    fields = connect.content
    assert connect.message_type is codec.MessageType.CONNECT
    assert connect.flag == 1
    assert connect.token is None
    assert (fields["app_key"], fields["group_name"], fields["sdk"]) == (
        APP_KEY,
        "erp",
        "taobao-order-sync-0.1",
    )
    assert fields["intranet_ip"] == "127.0.0.1"
    assert isinstance(fields["timestamp"], str)
    assert before_ms <= int(fields["timestamp"]) <= time.time_ns() // 1_000_000
    expected = codec.connect_sign(
        app_key=APP_KEY, group_name="erp", timestamp=fields["timestamp"], secret=APP_SECRET
    )
    assert fields["sign"] == expected
    sends = seen[1:]
    assert all(m.message_type is codec.MessageType.SEND and m.token == "tok-1" for m in sends)
    kinds = [m.kind for m in sends]
    assert kinds[0] == codec.MessageKind.PULL_REQUEST
    confirm = next(m for m in sends if m.kind == codec.MessageKind.CONFIRM)
    failed = next(m for m in sends if m.kind == codec.MessageKind.FAILED)
    assert type(confirm.content["id"]) is codec.Int64
    assert confirm.content["id"] == 2**60
    assert failed.content["id"] == 2**60 + 1
    assert failed.content["msg"] == ("why " * 100)[:128]
    connected = _of(rec.events, Connected)
    assert isinstance(connected[0], Connected)
    assert connected[0].token == "tok-1"
    assert (session.counters.confirmed, session.counters.failed) == (1, 1)


async def test_pushed_messages_are_handed_over_and_confirms_empty_the_queue() -> None:
    async with running_server(TmcServerConfig(gzip_fraction=0.5)) as server:
        rec = Recorder()
        session = make_session(server, rec)
        async with running(session):
            ids = publish(server, 40)
            async with asyncio.timeout(5):
                await server.wait_drained(APP_KEY)

    assert rec.ids() == ids  # one connection, no faults: in publish order
    assert all(i > 2**53 for i in ids)
    first = rec.messages[0]
    assert first.topic == "taobao_trade_TradeBuyerPay"
    assert first.content.startswith('{"tid": 1000,')
    assert first.nick == "shop"
    assert first.user_id == 2_200_000_000_123
    assert first.retried is None
    assert (server.stats.delivered, server.stats.confirmed, server.stats.redelivered) == (40, 40, 0)
    assert session.counters.received == session.counters.confirmed == 40
    assert session.counters.decode_errors == 0
    assert server.stats.malformed == 0  # every confirm carried the right token and types


async def test_a_dropped_connection_reconnects_and_unconfirmed_messages_come_back() -> None:
    async with running_server() as server:
        rec = Recorder(auto_confirm=False)
        session = make_session(server, rec)
        async with running(session):
            ids = publish(server, 5)
            await wait_until(lambda: len(rec.messages) == 5, what="first deliveries")
            assert server.drop_connections() == 1
            await wait_until(lambda: len(rec.messages) == 10, what="redeliveries after the reconnect")
            for message_id in ids:
                await session.confirm(message_id)
            await wait_until(lambda: server.pending(APP_KEY) == 0, what="an empty queue")

    assert sorted(rec.ids()[5:]) == ids
    assert all(m.retried == 1 for m in rec.messages[5:])
    assert session.counters.reconnects == 1
    kinds = [type(e) for e in rec.events]
    assert kinds == [Connected, Disconnected, Connected, Disconnected]
    dropped = rec.events[1]
    assert isinstance(dropped, Disconnected)
    assert dropped.reason != "stopped"
    assert "no close frame" in dropped.reason
    assert server.stats.redelivered == 5


async def test_confirms_of_one_commit_go_out_in_one_socket_write() -> None:
    async with running_server() as server:
        rec = Recorder(auto_confirm=False)
        session = make_session(server, rec)
        async with running(session):
            ids = publish(server, 12)
            await wait_until(lambda: len(rec.messages) == 12, what="the deliveries")
            conn = session._conn
            assert conn is not None
            writes: list[int] = []
            real_write = conn.transport.write

            def counting_write(data: bytes | bytearray | memoryview) -> None:
                writes.append(len(data))
                real_write(data)

            conn.transport.write = counting_write  # type: ignore[method-assign]
            try:
                assert await session.confirm_all(ids[:10]) == 10
            finally:
                conn.transport.write = real_write  # type: ignore[method-assign]
            assert len(writes) == 1
            await wait_until(lambda: server.stats.confirmed == 10, what="ten confirms at the server")
            assert server.pending(APP_KEY) == 2
            assert await session.confirm_all([]) == 0
            assert await session.confirm_all(ids[10:]) == 2
            await wait_until(lambda: server.pending(APP_KEY) == 0, what="an empty queue")

    assert session.counters.confirmed == 12
    assert server.stats.malformed == 0  # every frame of the joined write parsed on its own
    assert await session.confirm_all([ids[0]]) == 0  # stopped: nothing sent, the server redelivers
    assert session.counters.acks_dropped == 1


async def test_a_failed_message_is_redelivered_after_the_configured_delay() -> None:
    deliveries: list[tuple[TmcMessage, float]] = []
    session: TmcSession

    async def handler(message: TmcMessage) -> None:
        deliveries.append((message, time.monotonic()))
        if len(deliveries) == 1:
            await session.fail(message.id, "database unavailable")
        else:
            await session.confirm(message.id)

    async with running_server(TmcServerConfig(failed_redelivery_delay=0.2)) as server:
        session = make_session(server, handler)
        async with running(session):
            publish(server, 1)
            await wait_until(lambda: server.pending(APP_KEY) == 0, what="the redelivered message's confirm")

    (first, failed_at), (second, again_at) = deliveries
    assert first.id == second.id
    assert second.retried == 1
    assert again_at - failed_at >= 0.2
    assert (server.stats.failed, server.stats.redelivered, server.stats.confirmed) == (1, 1, 1)


async def test_an_unconfirmed_message_is_redelivered_after_the_confirm_timeout() -> None:
    deliveries: list[float] = []
    session: TmcSession

    async def handler(message: TmcMessage) -> None:
        deliveries.append(time.monotonic())
        if len(deliveries) == 2:
            await session.confirm(message.id)

    async with running_server(TmcServerConfig(confirm_timeout=0.2)) as server:
        session = make_session(server, handler)
        async with running(session):
            publish(server, 1)
            await wait_until(lambda: server.pending(APP_KEY) == 0, what="the confirm after the timeout")

    assert len(deliveries) == 2
    # The server's clock starts at assignment, a little before the first delivery reaches the handler.
    assert deliveries[1] - deliveries[0] >= 0.15
    assert server.stats.expired == 1


async def test_competing_connections_split_the_queue() -> None:
    async with running_server() as server:
        first, second = Recorder(), Recorder()
        one, two = make_session(server, first), make_session(server, second)
        async with running(one), running(two):
            await wait_until(lambda: one.connected and two.connected, what="both connected")
            await wait_until(lambda: len(server.connections()) == 2, what="both attached")
            ids = publish(server, 200)
            await wait_until(lambda: server.pending(APP_KEY) == 0, what="an empty queue")

    assert sorted(first.ids() + second.ids()) == ids
    assert not set(first.ids()) & set(second.ids())
    assert min(len(first.messages), len(second.messages)) >= 40
    tokens = {e.token for e in first.events + second.events if isinstance(e, Connected)}
    assert len(tokens) == 1  # one token per (app_key, group)


async def test_the_in_flight_cap_holds_the_rest_until_confirms_arrive() -> None:
    async with running_server(TmcServerConfig(max_in_flight=5)) as server:
        rec = Recorder(auto_confirm=False)
        session = make_session(server, rec)
        async with running(session):
            ids = publish(server, 50)
            await wait_until(lambda: len(rec.messages) == 5, what="the first five")
            assert list(server.in_flight_by_connection().values()) == [5]
            # PullRequests keep coming every 50 ms, yet nothing beyond the cap is sent.
            await holds_for(lambda: len(rec.messages) == 5 and server.stats.delivered == 5, 0.2, "the cap")
            assert server.stats.pull_requests >= 2
            rec.auto_confirm = True
            for message_id in rec.ids():
                await session.confirm(message_id)
            await wait_until(lambda: server.pending(APP_KEY) == 0, what="an empty queue")

    assert rec.ids() == ids
    assert server.stats.delivered == 50


async def test_a_blocked_handler_stops_pulling_and_the_server_holds_the_rest() -> None:
    blocked = BlockedHandler()
    received = blocked.messages
    async with running_server(TmcServerConfig(max_in_flight=20)) as server:
        session = make_session(server, blocked)
        async with running(session):
            publish(server, 300, size=1000)
            await wait_until(
                lambda: server.stats.delivered == 20 and len(received) == 1, what="a blocked handler"
            )
            # Let a PullRequest that left just before the handler blocked arrive, then take the baseline.
            await wait_until(
                lambda: server.stats.pull_requests == session.counters.pulls_sent, what="pulls to arrive"
            )
            pulls_sent, pulls_seen = session.counters.pulls_sent, server.stats.pull_requests
            await holds_for(
                lambda: (
                    len(received) == 1
                    and session.counters.pulls_sent == pulls_sent
                    and server.stats.pull_requests == pulls_seen
                    and server.stats.delivered == 20
                ),
                0.3,
                "nothing handed on, nothing pulled, nothing more sent",
            )
            assert server.pending(APP_KEY) == 300
            blocked.release.set()
            await wait_until(lambda: server.pending(APP_KEY) == 0, what="an empty queue")
            # Pulling resumes once the handler is free again (the queue may empty before the next tick).
            await wait_until(lambda: session.counters.pulls_sent > pulls_sent, what="pulls to resume")

    assert len(received) == 300


async def test_a_bad_secret_is_refused_visibly_slowly_and_finally_given_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-secret-value"
    async with running_server() as server:
        rec = Recorder()
        backoff = BackoffPolicy(base=0.01, cap=0.02, refusal_floor=0.1)
        session = make_session(server, rec, secret=wrong, backoff=backoff, max_refusals=4)
        with pytest.raises(TmcConnectRefused) as caught:
            async with asyncio.timeout(5):
                await session.run()

    refused = [e for e in rec.events if isinstance(e, Refused)]
    assert [e.consecutive for e in refused] == [1, 2, 3, 4]
    assert all((e.status_code, e.status_phrase) == (401, "invalid sign") for e in refused)
    gaps = [(b.at - a.at).total_seconds() for a, b in itertools.pairwise(refused)]
    assert min(gaps) >= 0.1  # the refusal floor, not the 10 ms backoff: no hot loop
    assert (caught.value.status_code, caught.value.status_phrase) == (401, "invalid sign")
    assert server.stats.refused == session.counters.refusals == session.counters.connect_attempts == 4
    assert not any(isinstance(e, Connected) for e in rec.events)
    for text in [str(caught.value), repr(session), *(r.getMessage() for r in caplog.records)]:
        assert wrong not in text
        assert APP_SECRET not in text


async def test_the_secret_stays_out_of_logs_and_reprs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_server() as server:
        rec = Recorder()
        session = make_session(server, rec)
        async with running(session):
            publish(server, 1)
            await wait_until(lambda: server.pending(APP_KEY) == 0, what="an empty queue")
            text = repr(session)

    assert APP_SECRET not in text
    assert caplog.records  # the run did log (websockets frames at DEBUG included)
    for record in caplog.records:
        assert APP_SECRET not in record.getMessage()
        assert APP_SECRET not in repr(record.__dict__)


async def test_a_server_that_accepts_then_drops_meets_growing_delays() -> None:
    policy = BackoffPolicy(base=0.08, cap=1.0, reset_after=5.0, refusal_floor=0.1)
    async with running_server() as server:
        rec = Recorder()
        session = make_session(server, rec, backoff=policy)
        async with running(session):
            server.faults.drop_every = 0.01
            await wait_until(lambda: len(_of(rec.events, Connected)) >= 4, what="four connections")
            server.faults.drop_every = None

    events = rec.events
    gaps = [
        (after.at - before.at).total_seconds()
        for before, after in itertools.pairwise(events)
        if isinstance(before, Disconnected) and isinstance(after, Connected)
    ]
    # Equal jitter: the k-th delay is at least half of base·2^k, so each wait is longer than the
    # floor of the one before; a reset after each short-lived connection would keep them at base.
    for k, gap in enumerate(gaps[:3]):
        assert gap >= policy.base * 2**k / 2, gaps
    assert gaps[2] > policy.base


async def test_a_dead_peer_is_detected_by_the_ping_timeout_and_the_session_reconnects() -> None:
    timing = SessionTiming(pull_interval=5.0, ping_interval=0.1, ping_timeout=0.2, close_timeout=0.2)
    async with running_server() as server:
        rec = Recorder()
        session = make_session(server, rec, timing=timing)
        async with running(session):
            await wait_until(lambda: session.connected, what="connected")
            assert server.stall_connections() == 1
            await wait_until(lambda: len(_of(rec.events, Connected)) == 2, what="a reconnect")

    dropped = _of(rec.events, Disconnected)[0]
    assert isinstance(dropped, Disconnected)
    assert "keepalive ping timeout" in dropped.reason


async def test_malformed_frames_are_counted_quarantined_and_skipped() -> None:
    quarantined: list[tuple[bytes, str]] = []

    async def quarantine(raw: bytes, reason: str) -> None:
        quarantined.append((raw, reason))

    async with running_server() as server:
        rec = Recorder()
        session = make_session(server, rec, quarantine=quarantine)
        async with running(session):
            await wait_until(lambda: len(server.connections()) == 1, what="connected")
            token = server.token_for(APP_KEY)
            bad_gzip = codec.Message(
                message_type=codec.MessageType.SEND,
                token=token,
                content={"id": codec.Int64(77), "topic": "t", "content": b"not gzip"},
            )
            assert await server.send_raw(APP_KEY, b"\x02\x02\x09\x00") == 1
            await server.send_raw(APP_KEY, "a text frame")
            await server.send_raw(APP_KEY, codec.encode(bad_gzip))
            ids = publish(server, 1)
            await wait_until(lambda: server.pending(APP_KEY) == 0, what="the good message's confirm")
            await wait_until(lambda: server.stats.confirm_unknown == 1, what="the quarantined push's confirm")

    assert rec.ids() == ids
    assert session.counters.decode_errors == 3
    assert session.counters.quarantined == 3
    assert session.counters.connects == 1  # never dropped the connection
    reasons = [reason for _, reason in quarantined]
    assert "unknown header type 9" in reasons[0]
    assert "text frame" in reasons[1]
    assert "not valid gzip" in reasons[2]
    assert quarantined[2][0] == codec.encode(bad_gzip)


async def test_without_quarantine_a_bad_push_is_left_for_redelivery() -> None:
    async with running_server() as server:
        rec = Recorder()
        session = make_session(server, rec)
        async with running(session):
            await wait_until(lambda: len(server.connections()) == 1, what="connected")
            bad = codec.Message(
                message_type=codec.MessageType.SEND,
                token=server.token_for(APP_KEY),
                content={"id": codec.Int64(78), "topic": "t", "content": b"\x1f\x8b broken"},
            )
            await server.send_raw(APP_KEY, codec.encode(bad))
            publish(server, 1)
            await wait_until(lambda: server.pending(APP_KEY) == 0, what="the good message's confirm")

    assert session.counters.decode_errors == 1
    assert session.counters.confirmed == 1
    assert server.stats.confirm_unknown == 0


async def test_pushes_with_a_foreign_token_are_ignored() -> None:
    async with running_server() as server:
        rec = Recorder()
        session = make_session(server, rec)
        async with running(session):
            await wait_until(lambda: len(server.connections()) == 1, what="connected")
            foreign = codec.push(
                "someone-else",
                message_id=5,
                topic="t",
                content="{}",
                time=codec.epoch_ms_to_datetime(0),
                outtime=codec.epoch_ms_to_datetime(0),
                publisher="p",
                user_id=1,
                nick="n",
            )
            await server.send_raw(APP_KEY, codec.encode(foreign))
            await wait_until(lambda: session.counters.foreign_token == 1, what="the foreign push")

    assert rec.messages == []


async def test_refused_upgrades_are_retried_as_transient_failures() -> None:
    faults = TmcFaults()
    faults.refuse_connects_for(0.3)
    async with running_server(faults=faults) as server:
        rec = Recorder()
        session = make_session(server, rec)
        async with running(session):
            await wait_until(lambda: session.connected, what="connected after the refusal period")

    assert server.stats.rejected_upgrades >= 1
    assert session.counters.connect_attempts >= 2
    assert session.counters.refusals == 0


async def test_the_gate_runs_before_every_connect() -> None:
    log: list[str] = []
    opened = asyncio.Event()

    async def gate() -> None:
        log.append("gate")
        await opened.wait()

    async with running_server() as server:
        session: TmcSession

        def on_state(event: SessionEvent) -> None:
            log.append(type(event).__name__)

        session = make_session(server, Recorder(), gate=gate, on_state=on_state)
        async with running(session):
            await wait_until(lambda: log == ["gate"], what="the gate")
            await holds_for(lambda: server.stats.connections == 0, 0.1, "no connection before the gate opens")
            opened.set()
            await wait_until(lambda: session.connected, what="connected")
            server.drop_connections()
            await wait_until(lambda: session.counters.connects == 2, what="a reconnect")

    assert log[:5] == ["gate", "Connected", "Disconnected", "gate", "Connected"]


async def test_each_reconnect_reports_how_long_the_stream_was_down_gate_included(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stalls: list[float] = []
    held = asyncio.Event()
    released = asyncio.Event()
    gates = 0
    hold_started = hold_ended = 0.0

    async def gate() -> None:
        nonlocal gates, hold_started, hold_ended
        gates += 1
        if gates == 2:  # the reconnect's gate holds the stream until the test lets it go
            hold_started = time.monotonic()
            held.set()
            await released.wait()
            hold_ended = time.monotonic()

    caplog.set_level(logging.INFO, logger="listener.session")
    async with running_server() as server:
        session = make_session(server, Recorder(), gate=gate, on_reconnect=stalls.append)
        async with running(session):
            await wait_until(lambda: session.connected, what="connected")
            assert stalls == []  # the first connection is no reconnect
            server.drop_connections()
            await held.wait()
            await holds_for(lambda: not session.connected, 0.2, "the gate holding the stream")
            released.set()
            await wait_until(lambda: session.counters.connects == 2, what="a reconnect")

    [stall] = stalls
    assert stall >= hold_ended - hold_started >= 0.2  # from the disconnect: the gate's hold is in it
    [line] = [r for r in caplog.records if getattr(r, "action", None) == "tmc_reconnected"]
    assert f"after {stall:.1f} s down" in line.getMessage()
    assert "backfilling before resume" in line.getMessage()


async def test_stop_interrupts_a_backoff_wait_and_cancellation_closes_the_connection() -> None:
    faults = TmcFaults()
    faults.refuse_connects_for(60)
    async with running_server(faults=faults) as server:
        slow = BackoffPolicy(base=30.0, cap=60.0)
        waiting = make_session(server, Recorder(), backoff=slow)
        task = asyncio.create_task(waiting.run())
        await wait_until(lambda: server.stats.rejected_upgrades == 1, what="a refused attempt")
        waiting.stop()
        async with asyncio.timeout(1):
            await task

        faults.refuse_until = 0
        live = make_session(server, Recorder())
        task = asyncio.create_task(live.run())
        await wait_until(lambda: len(server.connections()) == 1, what="connected")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await wait_until(lambda: not server.connections(), what="the server to see the close")
    assert not live.connected


async def test_acks_while_disconnected_are_counted_not_raised() -> None:
    async def handler(message: TmcMessage) -> None:
        raise AssertionError("never called")

    session = TmcSession(url="ws://127.0.0.1:9/", app_key="k", app_secret=SecretStr("s"), handler=handler)
    await session.confirm(1)
    await session.fail(2, "x")
    assert session.counters.acks_dropped == 2
    assert session.counters.confirmed == 0
    assert not session.connected


async def test_a_failing_handler_is_logged_and_its_message_redelivered() -> None:
    calls: list[int] = []
    session: TmcSession

    async def handler(message: TmcMessage) -> None:
        calls.append(message.id)
        if len(calls) == 1:
            raise RuntimeError("bug in the handler")
        await session.confirm(message.id)

    async with running_server(TmcServerConfig(confirm_timeout=0.1)) as server:
        session = make_session(server, handler)
        async with running(session):
            publish(server, 1)
            await wait_until(lambda: server.pending(APP_KEY) == 0, what="the redelivered confirm")

    assert len(calls) == 2
    assert session.counters.handler_errors == 1
    assert session.counters.connects == 1


async def test_run_cannot_be_entered_twice() -> None:
    async with running_server() as server:
        session = make_session(server, Recorder())
        async with running(session):
            await wait_until(lambda: session.connected, what="connected")
            with pytest.raises(RuntimeError, match="already running"):
                await session.run()
            assert session.connected


async def test_a_blocked_handler_does_not_stop_the_pongs() -> None:
    """Intake full behind a slow database: the socket is still read (the frames wait in the session's
    inbox), so the keepalive's pongs arrive and the connection is not taken for dead."""
    # A pong deadline of 2 s: an unread socket drops the connection within the wait below (three
    # deadlines), while a machine so busy that the process is not scheduled for a second does not.
    timing = SessionTiming(pull_interval=5.0, ping_interval=0.1, ping_timeout=2.0, close_timeout=0.2)
    blocked = BlockedHandler()
    received = blocked.messages
    async with running_server(TmcServerConfig(max_in_flight=200)) as server:
        session = make_session(server, blocked, timing=timing)
        async with running(session):
            publish(server, 300, size=1000)
            await wait_until(lambda: server.stats.delivered == 200, what="the in-flight cap reached")
            await holds_for(
                lambda: session.connected and len(received) == 1,
                3 * (timing.ping_timeout or 0),
                "connected, with the handler blocked, through many ping rounds",
            )
            blocked.release.set()
            await wait_until(lambda: server.pending(APP_KEY) == 0, what="an empty queue")

    assert len(_of(blocked.events, Connected)) == 1  # never dropped, never reconnected
    assert len(received) == 300  # so nothing was redelivered
