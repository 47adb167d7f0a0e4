"""The TMC client session: connect and sign, keep the token, pull, confirm, ping, reconnect
(docs/tmc-protocol.md#connect, docs/tmc-protocol.md#confirm-fail-pull,
docs/tmc-protocol.md#timers-heartbeat-reconnect).

One `TmcSession` holds at most one WebSocket at a time. Each pushed message is decoded and handed to
`handler`, which is awaited before the next frame is handed on: a slow handler therefore stops
PullRequests, and the server keeps the rest (its in-flight cap does the holding). The socket is read
on meanwhile into a bounded inbox (`listener.capacity.FrameInbox`), so pongs still arrive and the
keepalive does not end a connection that is only busy.
Malformed frames are counted, logged, optionally quarantined, and skipped; they never end the session.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import websockets.asyncio.client
from pydantic import SecretStr
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.protocol import State
from websockets.uri import parse_uri

from common.backoff import Backoff, BackoffPolicy
from common.errors import OrderSyncError
from common.text import sanitize, sanitize_optional
from listener.capacity import FrameInbox
from taobao.tmc import codec
from taobao.tmc.events import Connected, Disconnected, Refused, SessionEvent, TmcMessage

logger = logging.getLogger(__name__)

SDK_NAME = "taobao-order-sync-0.1"
# Server pushes are small JSON documents; a frame beyond this is refused by the WebSocket layer.
MAX_FRAME_BYTES = 8 * 1024 * 1024
# What the socket accepts at all. A frame between the two limits is read and dead-lettered (and
# confirmed when it has an id): refusing it at the socket would close the connection, and the server
# would push the same frame again on every reconnect.
READ_CEILING_BYTES = 8 * MAX_FRAME_BYTES
# Frames read ahead of the handler: above the ~1000 unconfirmed messages a server sends one connection
# before it waits for confirms (docs/tmc-protocol.md#pull-flow-control), so a full intake does not stop
# the reading (and the pongs with it) unless the frames are unusually large.
INBOX_FRAMES = 2048
INBOX_BYTES = 4 * MAX_FRAME_BYTES
# what the Java client says when it closes (docs/tmc-protocol.md#transport)
CLOSE_REASON = "tmc client closed"


class TmcConnectRefused(OrderSyncError):
    """The server answered CONNECT with a failed CONNECTACK (status code/phrase, no token)."""

    def __init__(self, status_code: int | None, status_phrase: str | None) -> None:
        self.status_code = status_code
        self.status_phrase = sanitize_optional(status_phrase)
        super().__init__(f"TMC server refused CONNECT: status {status_code}, {status_phrase!r}")


class TmcProtocolError(OrderSyncError):
    """The server broke the handshake (no CONNECTACK, a text frame, an undecodable answer)."""


@dataclass(frozen=True, slots=True)
class SessionTiming:
    # the official Node clients pull every 5 s (docs/tmc-protocol.md#timers-heartbeat-reconnect)
    pull_interval: float = 5.0
    ping_interval: float | None = 30.0  # within the 45–60 s the official clients use
    ping_timeout: float | None = 15.0
    connect_timeout: float = 5.0  # top-link's WebSocket connect timeout (docs/tmc-protocol.md#transport)
    ack_timeout: float = 5.0  # top-link's wait for CONNECTACK (docs/tmc-protocol.md#transport)
    close_timeout: float = 2.0


@dataclass(slots=True)
class SessionCounters:
    received: int = 0
    confirmed: int = 0
    failed: int = 0
    acks_dropped: int = 0  # confirms/fails not sent because the connection was gone
    decode_errors: int = 0  # undecodable frames, unknown header types included
    unknown_headers: int = 0  # frames with a header type this protocol version does not define
    oversize: int = 0  # frames over MAX_FRAME_BYTES
    handler_errors: int = 0
    quarantined: int = 0
    foreign_token: int = 0  # pushes carrying a token this session was not given
    server_errors: int = 0  # SENDACKs with a status code: the server rejected one of our SENDs
    unexpected: int = 0  # well-formed messages that have no meaning for a client
    connect_attempts: int = 0
    connects: int = 0
    reconnects: int = 0
    refusals: int = 0
    pulls_sent: int = 0


Handler = Callable[[TmcMessage], Awaitable[None]]
Gate = Callable[[], Awaitable[None]]
StateCallback = Callable[[SessionEvent], Awaitable[None] | None]
Quarantine = Callable[[bytes, str], Awaitable[None]]
# The reconnect delays: from 1 s, doubling to 5 s while connections end within 5 s of being made. A
# connection that stayed up 5 s starts the delays again from 1 s: a server that drops a working
# connection now and then (a restart, a network break, every 10 s in the `flaky` scenario) costs the
# stream a second, not a delay grown to a minute over a few drops. The cap bounds how long the stream
# stays down after an outage has ended; a server that accepts and drops at once still meets growing
# delays, and one attempt every 2.5-5 s is a single HTTP upgrade, preceded by the gate's read of the
# seconds since the last one (docs/design.md#one-retry-or-fatal-function). A CONNECT the server
# refuses still waits `refusal_floor` (30 s).
RECONNECT_POLICY: Final = BackoffPolicy(base=1.0, cap=5.0, reset_after=5.0)
# Hears, at each reconnect, how long the stream was down (seconds from the last disconnect).
StallObserver = Callable[[float], None]

_TRANSIENT_CONNECT_ERRORS = (OSError, TimeoutError, InvalidHandshake, ConnectionClosed, TmcProtocolError)


class TmcSession:
    """A self-healing TMC consumer for one app key and group.

    `gate` is awaited before every (re)connect (the reconciler backfills there); `on_state` hears
    Connected / Disconnected / Refused; `quarantine(raw_frame, reason)` stores frames that cannot be
    parsed; when it returns and the frame had an id, the message is confirmed so it stops coming back.
    Exceptions from `gate` and `on_state` end `run()`: they mean the coverage bookkeeping is broken.
    Each reconnect is logged with how long the stream was down and how much of that the gate held it
    (`on_reconnect` hears the first figure: the daemon's `tmc_reconnect_stall_seconds`).
    """

    def __init__(
        self,
        *,
        url: str,
        app_key: str,
        app_secret: SecretStr,
        handler: Handler,
        group_name: str = "default",
        timing: SessionTiming | None = None,
        backoff: BackoffPolicy | None = None,
        max_refusals: int | None = 10,
        gate: Gate | None = None,
        on_state: StateCallback | None = None,
        quarantine: Quarantine | None = None,
        on_reconnect: StallObserver | None = None,
        sdk: str = SDK_NAME,
        rng: random.Random | None = None,
    ) -> None:
        parse_uri(url)  # a malformed URL is a configuration error: fail now, not in the retry loop
        self.url = url
        self.app_key = app_key
        self.group_name = group_name
        self._secret = app_secret
        self._handler = handler
        self._timing = timing or SessionTiming()
        self._backoff = Backoff(backoff or RECONNECT_POLICY, rng)
        self._max_refusals = max_refusals
        self._gate = gate
        self._on_state = on_state
        self._quarantine = quarantine
        self._on_reconnect = on_reconnect
        # Seconds the gate held the stream since the last connection ended (the reconnect log line).
        self._gate_seconds = 0.0
        self._sdk = sdk
        self._stop = asyncio.Event()
        self._conn: websockets.asyncio.client.ClientConnection | None = None
        self._token: str | None = None
        self._handling = False
        self._inbox: FrameInbox | None = None
        self._running = False
        self.counters = SessionCounters()
        # time.monotonic() when the last connection ended (before the first one: when this session
        # was made); /readyz and the metrics read how long the stream has been down from it.
        self.down_since = time.monotonic()

    def __repr__(self) -> str:
        return (
            f"TmcSession(url={self.url!r}, app_key={self.app_key!r}, group_name={self.group_name!r}, "
            f"connected={self.connected})"
        )

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def stop(self) -> None:
        """Ask `run()` to close the connection and return. Safe to call before or during `run()`."""
        self._stop.set()

    async def open_and_close(self) -> None:
        """One CONNECT/CONNECTACK, then close at once without pulling (`order-sync check`): proves the
        URL, app key, secret and group. Raises TmcConnectRefused, TmcProtocolError or the transport's
        error (OSError, TimeoutError, InvalidHandshake)."""
        conn, _token = await self._open()
        await conn.close(code=1000, reason=CLOSE_REASON)

    # ------------------------------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Connect, consume and reconnect until `stop()`. Raises TmcConnectRefused after `max_refusals`
        refusals in a row."""
        if self._running:
            raise RuntimeError("TmcSession.run() is already running")
        self._running = True
        try:
            await self._run()
        finally:
            self._running = False

    async def _run(self) -> None:
        refusals = 0
        while not self._stop.is_set():
            if self._gate is not None:
                gate_started = time.monotonic()
                if not await self._unless_stopped(self._gate()):
                    break
                self._gate_seconds += time.monotonic() - gate_started
            self.counters.connect_attempts += 1
            attempt = self.counters.connect_attempts
            try:
                conn, token = await self._open()
            except TmcConnectRefused as exc:
                refusals += 1
                self.counters.refusals += 1
                logger.error(
                    "TMC refused CONNECT (%d in a row): status %s %r",
                    refusals,
                    exc.status_code,
                    exc.status_phrase,
                    extra={"action": "tmc_refused", "attempt": attempt},
                )
                await self._emit(Refused(_now(), exc.status_code, exc.status_phrase, refusals))
                if self._max_refusals is not None and refusals >= self._max_refusals:
                    raise
                delay = max(self._backoff.next_delay(), self._backoff.policy.refusal_floor)
            except _TRANSIENT_CONNECT_ERRORS as exc:
                delay = self._backoff.next_delay()
                logger.warning(
                    "TMC connect failed (%s: %s); retrying in %.1f s",
                    type(exc).__name__,
                    exc,
                    delay,
                    extra={"action": "tmc_connect_failed", "attempt": attempt},
                )
            else:
                refusals = 0
                uptime = await self._serve(conn, token)
                if uptime >= self._backoff.policy.reset_after:
                    self._backoff.reset()
                delay = self._backoff.next_delay()
            if self._stop.is_set():
                break
            await self._unless_stopped(asyncio.sleep(delay))

    async def _unless_stopped(self, work: Awaitable[None]) -> bool:
        """Run `work` unless `stop()` comes first; True when `work` finished."""
        task = asyncio.ensure_future(work)
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if task.cancelled():
            return False
        task.result()  # a failing gate ends run()
        return True

    async def _open(self) -> tuple[websockets.asyncio.client.ClientConnection, str]:
        timing = self._timing
        conn = await websockets.asyncio.client.connect(
            self.url,
            open_timeout=timing.connect_timeout,
            ping_interval=timing.ping_interval,
            ping_timeout=timing.ping_timeout,
            close_timeout=timing.close_timeout,
            compression=None,  # no TMC client negotiates permessage-deflate
            max_size=READ_CEILING_BYTES,
            user_agent_header=self._sdk,
        )
        try:
            token = await self._handshake(conn)
        except BaseException:
            conn.transport.abort()
            raise
        return conn, token

    async def _handshake(self, conn: websockets.asyncio.client.ClientConnection) -> str:
        local = conn.local_address
        request = codec.connect_request(
            app_key=self.app_key,
            group_name=self.group_name,
            timestamp_ms=time.time_ns() // 1_000_000,
            secret=self._secret.get_secret_value(),
            sdk=self._sdk,
            intranet_ip=str(local[0]) if local else None,
        )
        await conn.send(codec.encode(request))
        async with asyncio.timeout(self._timing.ack_timeout):
            frame = await conn.recv()
        if isinstance(frame, str):
            raise TmcProtocolError("server answered CONNECT with a text frame")
        try:
            ack = codec.decode(frame)
        except codec.TmcDecodeError as exc:
            raise TmcProtocolError(f"undecodable CONNECTACK: {exc}") from exc
        if ack.message_type != codec.MessageType.CONNECTACK:
            raise TmcProtocolError(f"server answered CONNECT with {ack.message_type.name}")
        # top-link's client treats any status code or phrase as a refusal, and a missing token too.
        if (ack.status_code or 0) > 0 or ack.status_phrase or not ack.token:
            raise TmcConnectRefused(ack.status_code, ack.status_phrase or "got empty token")
        return ack.token

    async def _serve(self, conn: websockets.asyncio.client.ClientConnection, token: str) -> float:
        """Consume one connection until it ends or `stop()`; returns how long it was up."""
        started = time.monotonic()
        self._conn, self._token = conn, token
        self.counters.connects += 1
        if self.counters.connects > 1:
            self.counters.reconnects += 1
            self._reconnected(started - self.down_since)
        else:
            logger.info("TMC connected to %s", self.url, extra={"action": "tmc_connected"})
        self._gate_seconds = 0.0
        reason = "stopped"
        try:
            await self._emit(Connected(_now(), token))
            self._inbox = inbox = FrameInbox(max_frames=INBOX_FRAMES, max_bytes=INBOX_BYTES)
            reader = asyncio.create_task(self._read_loop(conn, inbox), name="tmc-reader")
            handler = asyncio.create_task(self._handle_loop(inbox, token), name="tmc-handler")
            puller = asyncio.create_task(self._pull_loop(conn, token), name="tmc-puller")
            stopper = asyncio.create_task(self._stop.wait(), name="tmc-stop")
            tasks = (reader, handler, puller, stopper)
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            for task in (reader, handler, puller):
                failure = None if task.cancelled() else task.exception()
                if failure is not None:
                    raise failure  # a defect, not a network event: let the supervisor see it
            if not stopper.done() or stopper.cancelled():
                ended = reader.result() if reader.done() and not reader.cancelled() else None
                reason = ended or _close_reason(conn)
        finally:
            self._conn = None
            self.down_since = time.monotonic()
            await conn.close(code=1000, reason=CLOSE_REASON)
            uptime = time.monotonic() - started
            logger.info(
                "TMC disconnected after %.1f s: %s", uptime, reason, extra={"action": "tmc_disconnected"}
            )
            await self._emit(Disconnected(_now(), reason, uptime))
        return uptime

    def _reconnected(self, down: float) -> None:
        """One line and one observation per reconnect: the stall the stream saw, and the gate's share
        of it (the rest is the reconnect delay and the handshake)."""
        logger.info(
            "TMC reconnected to %s after %.1f s down, %.1f s of it backfilling before resume",
            self.url,
            down,
            self._gate_seconds,
            extra={"action": "tmc_reconnected"},
        )
        if self._on_reconnect is not None:
            self._on_reconnect(down)

    async def _pull_loop(self, conn: websockets.asyncio.client.ClientConnection, token: str) -> None:
        frame = codec.encode(codec.pull_request(token))
        try:
            while True:
                if not self._handling and not self._inbox:  # busy: hold the rest on the server
                    await conn.send(frame)
                    self.counters.pulls_sent += 1
                await asyncio.sleep(self._timing.pull_interval)
        except ConnectionClosed:
            return

    async def _read_loop(self, conn: websockets.asyncio.client.ClientConnection, inbox: FrameInbox) -> str:
        """Read frames into `inbox` until the connection ends; returns why it ended. Frames left in the
        inbox then are never handed on: unconfirmed, the server redelivers them."""
        try:
            while True:
                await inbox.put(await conn.recv())
        except ConnectionClosed as exc:
            return sanitize(str(exc))  # the close reason is the server's text

    async def _handle_loop(self, inbox: FrameInbox, token: str) -> None:
        """Hand each frame on, in the order read; ends only by cancellation or a defect."""
        while True:
            await self._on_frame(await inbox.get(), token)

    # ------------------------------------------------------------------------------------------ frames

    async def _on_frame(self, frame: bytes | str, token: str) -> None:
        if isinstance(frame, str):
            await self._malformed(frame.encode("utf-8"), "text frame (TMC uses binary frames only)", None)
            return
        message = await self._decoded(frame)
        if message is None or not self._is_push_for(message, token):
            return
        try:
            event = codec.parse_push(message)
        except codec.TmcDecodeError as exc:
            await self._malformed(frame, str(exc), codec.message_id_of(message))
            return
        await self._handle(event)

    async def _decoded(self, frame: bytes) -> codec.Message | None:
        """The frame's message, or None once a frame that cannot be read (or is over the limit) has been
        dead-lettered."""
        try:
            message = codec.decode(frame)
        except codec.TmcDecodeError as exc:
            if isinstance(exc, codec.TmcUnknownHeader):
                self.counters.unknown_headers += 1
            await self._malformed(frame, str(exc), None)
            return None
        if len(frame) > MAX_FRAME_BYTES:
            self.counters.oversize += 1
            reason = f"frame of {len(frame)} bytes over the {MAX_FRAME_BYTES}-byte limit"
            await self._malformed(frame, reason, codec.message_id_of(message))
            return None
        return message

    def _is_push_for(self, message: codec.Message, token: str) -> bool:
        """Whether `message` is a data push for this connection (`token`); anything else is counted,
        logged and ignored."""
        if message.message_type == codec.MessageType.SENDACK:
            if message.status_code or message.status_phrase:
                self.counters.server_errors += 1
                logger.warning(
                    "TMC server rejected a request: status %s %r",
                    message.status_code,
                    message.status_phrase,
                    extra={"action": "tmc_server_error"},
                )
            return False
        kind = message.kind
        if message.message_type != codec.MessageType.SEND or kind not in (None, codec.MessageKind.DATA):
            self.counters.unexpected += 1
            logger.warning(
                "TMC sent an unexpected %s (kind %s); ignored",
                message.message_type.name,
                kind,
                extra={"action": "tmc_unexpected"},
            )
            return False
        if message.token and message.token != token:
            # The Java client drops these too ("uknown message from"); the server will redeliver.
            self.counters.foreign_token += 1
            logger.warning(
                "TMC push with a token this session was not given; ignored",
                extra={"action": "tmc_foreign_token", "message_id": codec.message_id_of(message)},
            )
            return False
        return True

    async def _handle(self, event: TmcMessage) -> None:
        self.counters.received += 1
        self._handling = True
        try:
            await self._handler(event)
        except Exception:
            # Not confirmed, so the server redelivers it after its confirm timeout.
            self.counters.handler_errors += 1
            logger.exception(
                "TMC message handler failed", extra={"action": "tmc_handler_failed", "message_id": event.id}
            )
        finally:
            self._handling = False

    async def _malformed(self, raw: bytes, reason: str, message_id: int | None) -> None:
        reason = sanitize(reason)  # decode errors quote the frame's own keys
        if message_id is not None:
            reason = f"{reason} (message {message_id})"  # the dead-letter row names what was confirmed
        self.counters.decode_errors += 1
        logger.warning(
            "malformed TMC frame skipped: %s",
            reason,
            extra={"action": "tmc_malformed", "message_id": message_id},
        )
        if self._quarantine is None:
            return
        try:
            await self._quarantine(raw, reason)
        except Exception:
            logger.exception(
                "quarantining a malformed TMC frame failed; leaving it to redelivery",
                extra={"action": "tmc_quarantine_failed", "message_id": message_id},
            )
            return
        self.counters.quarantined += 1
        if message_id is not None:
            await self.confirm(message_id)

    # ------------------------------------------------------------------------------------------ acks

    async def confirm(self, message_id: int) -> None:
        """Tell the server the message is done (after the commit that covers it)."""
        if await self._send_ack(lambda token: codec.confirm(token, message_id), "confirm", message_id):
            self.counters.confirmed += 1

    async def confirm_all(self, message_ids: Sequence[int]) -> int:
        """Confirm several messages in one socket write (one frame each: the protocol has no batch
        confirm); how many went out. A commit's confirms go together, so each commit costs one write
        and one wake-up of the server rather than one per message."""
        conn, token = self._conn, self._token
        if not message_ids:
            return 0
        if conn is not None and token is not None:
            frames = [codec.encode(codec.confirm(token, message_id)) for message_id in message_ids]
            if _write_frames(conn, frames):
                self.counters.confirmed += len(frames)
                return len(frames)
        self.counters.acks_dropped += len(message_ids)
        logger.info(
            "TMC confirm of %d message(s) not sent: disconnected; the server will redeliver",
            len(message_ids),
            extra={"action": "tmc_ack_dropped", "message_id": message_ids[0]},
        )
        return 0

    async def fail(self, message_id: int, reason: str) -> None:
        """Ask for redelivery later (about 5–6 min in production); `reason` is cut to 128 characters."""
        if await self._send_ack(lambda token: codec.failed(token, message_id, reason), "fail", message_id):
            self.counters.failed += 1

    async def _send_ack(self, build: Callable[[str], codec.Message], what: str, message_id: int) -> bool:
        conn, token = self._conn, self._token
        if conn is not None and token is not None:
            try:
                await conn.send(codec.encode(build(token)))
                return True
            except ConnectionClosed:
                pass
        self.counters.acks_dropped += 1
        logger.info(
            "TMC %s of %d not sent: disconnected; the server will redeliver",
            what,
            message_id,
            extra={"action": "tmc_ack_dropped", "message_id": message_id},
        )
        return False

    async def _emit(self, event: SessionEvent) -> None:
        if self._on_state is None:
            return
        result = self._on_state(event)
        if inspect.isawaitable(result):
            await result


def _write_frames(conn: websockets.asyncio.client.ClientConnection, frames: list[bytes]) -> bool:
    """Queue `frames` as binary messages on the connection's protocol and write them to the socket in
    one call; False when the connection is no longer open. `websockets`' own `send()` writes each
    message on its own. Nothing awaits in between, so no other frame can come between them."""
    protocol = conn.protocol
    if protocol.state is not State.OPEN:
        return False
    for frame in frames:
        protocol.send_binary(frame)
    data = b"".join(protocol.data_to_send())
    if data:
        conn.transport.write(data)
    return True


def _now() -> datetime:
    return datetime.now(UTC)


def _close_reason(conn: websockets.asyncio.client.ClientConnection) -> str:
    code, text = conn.close_code, conn.close_reason
    if code is None:
        return "connection lost"
    return f"closed with code {code}" + (f" {sanitize(text)}" if text else "")
