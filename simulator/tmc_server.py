"""Stand-in TMC server: the WebSocket side of Taobao's message channel, with ground truth and faults.

Behaviour follows docs/tmc-protocol.md#stand-in-model: signed CONNECT, a token stable per (app_key, group),
one queue per (app_key, group) shared by competing connections, immediate push plus PullRequest-served
backlog, an in-flight cap per connection, Confirm deletes, Failed and confirm timeouts redeliver (same id,
`retried` incremented), a dropped connection's unconfirmed messages are redelivered at once.
Values the public material does not give (refusal codes, timeouts) are configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import hmac
import http
import json
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from simulator.tmc_faults import TmcFaults
from simulator.tmc_frames import with_unknown_header
from taobao.signing import sign
from taobao.tmc import codec

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class TmcServerConfig:
    # "收到消息后若阻塞分钟级将导致确认超时": about one minute in production
    # (docs/tmc-protocol.md#redelivery).
    confirm_timeout: float = 60.0
    # "约6分钟后重新加入消费队列": about 5–6 minutes in production (docs/tmc-protocol.md#redelivery).
    failed_redelivery_delay: float = 330.0
    # Unconfirmed messages per connection before the server holds the rest
    # (docs/tmc-protocol.md#pull-flow-control).
    max_in_flight: int = 1000
    # Fraction of pushes whose content goes out as a gzip ByteArray (when production compresses is unknown).
    gzip_fraction: float = 0.0
    # The production CONNECTACK refusal codes and phrases are unknown (docs/tmc-protocol.md#unknowns); these
    # are ours.
    refusal_status_code: int = 401
    bad_sign_phrase: str = "invalid sign"
    unknown_app_phrase: str = "invalid app_key"
    # StatusCode of a SENDACK answering a malformed client SEND (also unknown in production).
    bad_request_status_code: int = 400
    # Insist on Byte `__kind` and Int64 `id`, as the Java server's casts do
    # (docs/tmc-protocol.md#message-kinds, docs/tmc-protocol.md#confirm).
    strict_types: bool = True
    # `publisher` of every push: the publishing app's key. Taobao's own key for trade topics is unknown.
    publisher: str = "stand-in"
    # Real message ids exceed 2**53 (docs/tmc-protocol.md#large-ids); starting there keeps clients honest.
    first_message_id: int = 2**53 + 1
    handshake_timeout: float = 10.0
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    close_timeout: float = 2.0
    seed: int = 0


@dataclass(frozen=True, slots=True)
class LostMessage:
    id: int
    tid: int | None
    topic: str
    reason: str  # "lose_fraction" or "disconnected"


@dataclass(slots=True)
class TmcServerStats:
    published: int = 0
    delivered: int = 0  # first deliveries
    redelivered: int = 0  # later deliveries of the same id (timeout, Failed, dropped connection)
    confirmed: int = 0
    confirm_unknown: int = 0  # confirms of ids no longer (or never) pending: after duplicates, say
    failed: int = 0
    expired: int = 0  # in-flight messages whose confirm timeout passed
    duplicated: int = 0
    reordered: int = 0
    connections: int = 0  # accepted CONNECTs
    refused: int = 0  # refused CONNECTs (bad sign, unknown app)
    rejected_upgrades: int = 0  # WebSocket upgrades answered 503 by the refuse fault
    dropped: int = 0  # connections aborted by the drop fault
    closed: int = 0  # connections closed cleanly by the close fault
    oversized: int = 0  # published messages padded past oversize_bytes
    unknown_headers: int = 0  # pushes sent with a header the protocol does not define
    pull_requests: int = 0
    malformed: int = 0  # client frames answered with an error
    lost: list[LostMessage] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    number: int
    app_key: str
    group: str
    delivered: int
    in_flight: int
    pull_requests: int


@dataclass(eq=False, slots=True)
class _Entry:
    id: int
    topic: str
    content: str
    time: datetime
    nick: str
    user_id: int
    tid: int | None
    deliveries: int = 0
    done: bool = False


@dataclass(eq=False, slots=True)
class _Client:
    number: int
    ws: ServerConnection
    token: str
    outbox: asyncio.Queue[tuple[_Entry, bool]] = field(default_factory=asyncio.Queue)
    in_flight: set[int] = field(default_factory=set)
    delivered: int = 0
    pull_requests: int = 0
    alive: bool = True
    stalled: bool = False
    since: float = field(default_factory=time.monotonic)  # when its CONNECTACK went out


@dataclass(eq=False, slots=True)
class _Flight:
    entry: _Entry
    client: _Client
    deadline: float


class _GroupQueue:
    """One (app_key, group) queue and the connections competing for it."""

    def __init__(self, server: TmcServer, app_key: str, group: str) -> None:
        self.server = server
        self.app_key = app_key
        self.group = group
        self.token = str(uuid.uuid4())
        self.messages: dict[int, _Entry] = {}  # everything not yet confirmed
        self.ready: deque[_Entry] = deque()
        self.delayed: list[tuple[float, int, _Entry]] = []  # (due, id, entry) heap
        self.in_flight: dict[int, _Flight] = {}
        self.deadlines: list[tuple[float, int]] = []  # (deadline, id) heap; stale rows skipped
        self.clients: list[_Client] = []
        self.wake = asyncio.Event()
        self.drained = asyncio.Event()  # set while nothing is left to confirm
        self.drained.set()
        self.task: asyncio.Task[None] | None = None

    def ensure_running(self) -> None:
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._dispatch(), name=f"tmc-queue-{self.app_key}-{self.group}")

    async def _dispatch(self) -> None:
        while True:
            self.wake.clear()
            now = time.monotonic()
            self._promote(now)
            self._assign(now)
            due = [heap[0][0] for heap in (self.delayed, self.deadlines) if heap]
            timeout = max(0.0, min(due) - now) if due else None
            try:
                async with asyncio.timeout(timeout):
                    await self.wake.wait()
            except TimeoutError:
                pass

    def _promote(self, now: float) -> None:
        stats = self.server.stats
        while self.delayed and self.delayed[0][0] <= now:
            _, _, entry = heapq.heappop(self.delayed)
            if not entry.done:
                self.ready.append(entry)
        while self.deadlines and self.deadlines[0][0] <= now:
            deadline, message_id = heapq.heappop(self.deadlines)
            flight = self.in_flight.get(message_id)
            if flight is None or flight.deadline != deadline:
                continue
            del self.in_flight[message_id]
            flight.client.in_flight.discard(message_id)
            stats.expired += 1
            self.ready.appendleft(flight.entry)

    def _assign(self, now: float) -> None:
        cap = self.server.config.max_in_flight
        rng = self.server.rng
        while self.ready:
            candidates = [c for c in self.clients if c.alive and len(c.in_flight) < cap]
            if not candidates:
                return
            entry = self.ready.popleft()
            if entry.done:
                continue
            client = candidates[0] if len(candidates) == 1 else rng.choice(candidates)
            self._deliver(entry, client, now)

    def _deliver(self, entry: _Entry, client: _Client, now: float) -> None:
        server = self.server
        deadline = now + server.config.confirm_timeout
        self.in_flight[entry.id] = _Flight(entry, client, deadline)
        heapq.heappush(self.deadlines, (deadline, entry.id))
        client.in_flight.add(entry.id)
        client.delivered += 1
        if entry.deliveries:
            server.stats.redelivered += 1
        else:
            server.stats.delivered += 1
        entry.deliveries += 1
        client.outbox.put_nowait((entry, False))
        if server.faults.duplicate_fraction and server.rng.random() < server.faults.duplicate_fraction:
            server.stats.duplicated += 1
            client.outbox.put_nowait((entry, True))

    def publish(self, entry: _Entry) -> None:
        self.messages[entry.id] = entry
        self.drained.clear()
        faults = self.server.faults
        if faults.reorder_fraction and self.server.rng.random() < faults.reorder_fraction:
            self.server.stats.reordered += 1
            heapq.heappush(self.delayed, (time.monotonic() + faults.reorder_delay, entry.id, entry))
        else:
            self.ready.append(entry)
        self.wake.set()

    def confirm(self, message_id: int) -> None:
        entry = self.messages.pop(message_id, None)
        if entry is None:
            self.server.stats.confirm_unknown += 1
            return
        entry.done = True
        self.server.stats.confirmed += 1
        if not self.messages:
            self.drained.set()
        flight = self.in_flight.pop(message_id, None)
        if flight is not None:
            flight.client.in_flight.discard(message_id)
            self.wake.set()

    def fail(self, message_id: int) -> None:
        self.server.stats.failed += 1
        flight = self.in_flight.pop(message_id, None)
        if flight is None:
            return  # already waiting for redelivery, or confirmed
        flight.client.in_flight.discard(message_id)
        due = time.monotonic() + self.server.config.failed_redelivery_delay
        heapq.heappush(self.delayed, (due, message_id, flight.entry))
        self.wake.set()

    def attach(self, client: _Client) -> None:
        self.clients.append(client)
        self.ensure_running()
        self.wake.set()

    def detach(self, client: _Client) -> None:
        """A gone connection's unconfirmed messages go back to the head of the queue."""
        client.alive = False
        if client in self.clients:
            self.clients.remove(client)
        returned = [self.in_flight.pop(i).entry for i in sorted(client.in_flight) if i in self.in_flight]
        client.in_flight.clear()
        self.ready.extendleft(reversed(returned))
        self.wake.set()

    def pending(self) -> int:
        return len(self.messages)


class TmcServer:
    """`apps` maps app_key → secret. `publish()` is synchronous so a market's change listener can call it."""

    def __init__(
        self,
        apps: Mapping[str, str],
        config: TmcServerConfig | None = None,
        faults: TmcFaults | None = None,
    ) -> None:
        self._apps = dict(apps)
        self.config = config or TmcServerConfig()
        self.faults = faults or TmcFaults()
        self.stats = TmcServerStats()
        self.rng = random.Random(self.config.seed)
        self._queues: dict[tuple[str, str], _GroupQueue] = {}
        self._next_id = self.config.first_message_id
        self._connection_count = 0
        self._server: Server | None = None
        self._fault_tasks: list[asyncio.Task[None]] = []
        self._live: set[_Client] = set()
        self.host = "127.0.0.1"
        self.port = 0

    def __repr__(self) -> str:
        return f"TmcServer(url={self.url!r}, apps={sorted(self._apps)!r})"

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/"

    # ------------------------------------------------------------------------------------------ lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on host:port (0 = any free port). Queues survive stop()/start(), like a server restart."""
        self._server = await serve(
            self._handle,
            host,
            port,
            process_request=self._process_request,
            compression=None,
            ping_interval=self.config.ping_interval,
            ping_timeout=self.config.ping_timeout,
            close_timeout=self.config.close_timeout,
            max_size=1 << 20,
        )
        self.host, self.port = self._server.sockets[0].getsockname()[:2]
        for queue in self._queues.values():
            queue.ensure_running()
        dropper = self._periodic(lambda: self.faults.drop_every, self._drop_all, "dropped")
        closer = self._periodic(lambda: self.faults.close_every, self._close_all, "closed")
        self._fault_tasks = [
            asyncio.create_task(dropper, name="tmc-server-dropper"),
            asyncio.create_task(closer, name="tmc-server-closer"),
            asyncio.create_task(self._close_next_loop(), name="tmc-server-close-next"),
        ]
        logger.info("stand-in TMC server listening on %s", self.url, extra={"action": "tmc_server_started"})

    async def stop(self) -> None:
        for task in self._fault_tasks:
            task.cancel()
        await asyncio.gather(*self._fault_tasks, return_exceptions=True)
        self._fault_tasks = []
        for client in list(self._live):
            if client.stalled:  # it would never answer the closing handshake
                client.ws.transport.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        tasks = [q.task for q in self._queues.values() if q.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def drop_connections(self) -> int:
        """Abort every live connection (no close frame), as a network cut would; returns how many."""
        clients = list(self._live)
        for client in clients:
            client.ws.transport.abort()
        self.stats.dropped += len(clients)
        return len(clients)

    async def close_connections(
        self, code: int | None = None, reason: str | None = None, limit: int | None = None
    ) -> int:
        """Close live connections (all, or the `limit` oldest) with a close frame (default: the close
        fault's code and reason); returns how many. Waits for the closing handshakes (each bounded by
        close_timeout)."""
        code = self.faults.close_code if code is None else code
        reason = self.faults.close_reason if reason is None else reason
        clients = sorted((c for c in self._live if c.ws.state is State.OPEN), key=lambda c: c.since)[:limit]
        self.stats.closed += len(clients)
        await asyncio.gather(*(c.ws.close(code, reason) for c in clients), return_exceptions=True)
        return len(clients)

    def stall_connections(self) -> int:
        """Stop reading from every live connection: TCP stays up but nothing is answered, pongs included,
        the way a half-dead peer behaves. Clients must notice through their ping timeout."""
        clients = list(self._live)
        for client in clients:
            client.stalled = True
            client.ws.transport.pause_reading()
        return len(clients)

    async def send_raw(self, app_key: str, frame: bytes | str, group: str = "default") -> int:
        """Send `frame` unchanged to every live connection of the queue (malformed-input scenarios)."""
        queue = self._queues.get((app_key, group))
        clients = list(queue.clients) if queue else []
        for client in clients:
            with contextlib.suppress(ConnectionClosed):
                await client.ws.send(frame)
        return len(clients)

    def token_for(self, app_key: str, group: str = "default") -> str:
        """The session token the queue hands out (stable per app_key and group)."""
        return self._queue(app_key, group).token

    async def _drop_all(self) -> int:
        return self.drop_connections()

    async def _close_all(self) -> int:
        return await self.close_connections()

    async def _close_next_loop(self) -> None:
        """Serve `close_next`: close connections as they have been up for `close_next_after` seconds,
        until that many were closed (a close asked for while no client is connected waits for one)."""
        while True:
            await asyncio.sleep(0.05)  # re-read the knob
            faults = self.faults
            if faults.close_next <= 0:
                continue
            now = time.monotonic()
            ready = sum(
                1 for c in self._live if c.ws.state is State.OPEN and now - c.since >= faults.close_next_after
            )
            if not ready:
                continue
            count = min(ready, faults.close_next)
            faults.close_next -= count
            await self.close_connections(limit=count)
            logger.info("fault: closed %d TMC connection(s)", count, extra={"action": "tmc_fault_closed"})

    async def _periodic(
        self, every: Callable[[], float | None], action: Callable[[], Awaitable[int]], what: str
    ) -> None:
        """Run `action` every `every()` seconds; the knob is re-read, it is mutable at runtime."""
        last = time.monotonic()
        while True:
            interval = every()
            if interval is None:
                last = time.monotonic()
                await asyncio.sleep(0.1)  # re-read the knob
                continue
            wait = last + interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(min(wait, 0.1))
                continue
            last = time.monotonic()
            if await action():
                logger.info("fault: %s every TMC connection", what, extra={"action": f"tmc_fault_{what}"})

    # ------------------------------------------------------------------------------------------ publishing

    def publish(
        self,
        app_key: str,
        *,
        topic: str,
        content: str,
        nick: str,
        user_id: int,
        time: datetime,
        group: str = "default",
    ) -> int:
        """Accept one message for (app_key, group); returns its id. Safe to call from any code on the loop."""
        if app_key not in self._apps:
            raise ValueError(f"unknown app_key {app_key!r}")
        _check_publishable(topic=topic, content=content, nick=nick, user_id=user_id, time=time)
        message_id = self._next_id
        self._next_id += 1
        self.stats.published += 1
        if self._oversize_due():
            padded = _padded(content, self.faults.oversize_bytes)
            if padded is not None:
                content = padded
                self.stats.oversized += 1
        entry = _Entry(message_id, topic, content, time, nick, user_id, _tid_of(content))
        queue = self._queue(app_key, group)
        faults = self.faults
        if faults.lose_fraction and self.rng.random() < faults.lose_fraction:
            self._withhold(entry, "lose_fraction")
        elif faults.lose_while_disconnected and not queue.clients:
            self._withhold(entry, "disconnected")
        else:
            queue.publish(entry)
        return message_id

    def _oversize_due(self) -> bool:
        faults = self.faults
        if faults.oversize_next > 0:
            faults.oversize_next -= 1
            return True
        return faults.oversize_every > 0 and self.stats.published % faults.oversize_every == 0

    def _withhold(self, entry: _Entry, reason: str) -> None:
        self.stats.lost.append(LostMessage(entry.id, entry.tid, entry.topic, reason))

    @property
    def withheld(self) -> list[LostMessage]:
        """Messages accepted but never delivered: only reconciliation can recover their trades."""
        return list(self.stats.lost)

    def pending(self, app_key: str, group: str = "default") -> int:
        """Messages of the queue not yet confirmed (queued, delayed or in flight)."""
        queue = self._queues.get((app_key, group))
        return queue.pending() if queue else 0

    async def wait_drained(self, app_key: str, group: str = "default") -> None:
        """Return once every accepted message of the queue is confirmed."""
        await self._queue(app_key, group).drained.wait()

    def connections(self) -> list[ConnectionInfo]:
        return [
            ConnectionInfo(c.number, q.app_key, q.group, c.delivered, len(c.in_flight), c.pull_requests)
            for q in self._queues.values()
            for c in q.clients
        ]

    def in_flight_by_connection(self) -> dict[int, int]:
        return {info.number: info.in_flight for info in self.connections()}

    def _queue(self, app_key: str, group: str) -> _GroupQueue:
        queue = self._queues.get((app_key, group))
        if queue is None:
            queue = self._queues[(app_key, group)] = _GroupQueue(self, app_key, group)
        return queue

    # ------------------------------------------------------------------------------------------ connections

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path.split("?", 1)[0] != "/":
            return connection.respond(http.HTTPStatus.NOT_FOUND, "TMC listens on /\n")
        if self.faults.refusing():
            self.stats.rejected_upgrades += 1
            return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "refusing connections\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        queue, request = await self._login(ws)
        if queue is None or request is None:
            return
        self._connection_count += 1
        self.stats.connections += 1
        client = _Client(self._connection_count, ws, queue.token)
        try:
            await ws.send(codec.encode(codec.connect_ack(request, token=queue.token)))
        except ConnectionClosed:
            return
        queue.attach(client)
        self._live.add(client)
        sender = asyncio.create_task(self._send_loop(client), name=f"tmc-sender-{client.number}")
        try:
            async for frame in ws:
                await self._on_client_frame(queue, client, frame)
        except ConnectionClosed:
            pass
        finally:
            self._live.discard(client)
            queue.detach(client)
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)

    async def _login(self, ws: ServerConnection) -> tuple[_GroupQueue | None, codec.Message | None]:
        try:
            async with asyncio.timeout(self.config.handshake_timeout):
                frame = await ws.recv()
            request = codec.decode(frame) if isinstance(frame, bytes) else None
        except (TimeoutError, ConnectionClosed):
            return None, None
        except codec.TmcDecodeError as exc:
            self.stats.malformed += 1
            await ws.close(1002, f"malformed CONNECT: {exc}"[:120])
            return None, None
        if request is None or request.message_type != codec.MessageType.CONNECT:
            self.stats.malformed += 1
            await ws.close(1002, "expected a binary CONNECT")
            return None, None
        fields = request.content
        app_key, group, timestamp, given = (
            fields.get(k) for k in ("app_key", "group_name", "timestamp", "sign")
        )
        signed_group = group if isinstance(group, str) else ""
        secret = self._apps.get(app_key) if isinstance(app_key, str) else None
        phrase = None
        if secret is None or not isinstance(app_key, str):
            phrase = self.config.unknown_app_phrase
        elif not (
            isinstance(timestamp, str)
            and isinstance(given, str)
            and _sign_ok(app_key, signed_group, timestamp, given, secret)
        ):
            phrase = self.config.bad_sign_phrase
        if phrase is not None:
            self.stats.refused += 1
            logger.info("refused TMC CONNECT: %s", phrase, extra={"action": "tmc_server_refused"})
            refusal = codec.connect_refusal(
                request, status_code=self.config.refusal_status_code, status_phrase=phrase
            )
            with contextlib.suppress(ConnectionClosed):
                await ws.send(codec.encode(refusal))
                await ws.close(1000, "connect refused")
            return None, None
        assert isinstance(app_key, str)
        return self._queue(app_key, signed_group or "default"), request

    async def _send_loop(self, client: _Client) -> None:
        config = self.config
        try:
            while True:
                entry, duplicate = await client.outbox.get()
                if entry.done and not duplicate:
                    continue  # confirmed (through a duplicate) before it left
                gzip_content = bool(config.gzip_fraction) and self.rng.random() < config.gzip_fraction
                message = codec.push(
                    client.token,
                    message_id=entry.id,
                    topic=entry.topic,
                    content=entry.content,
                    time=entry.time,
                    outtime=datetime.now(UTC),
                    publisher=config.publisher,
                    user_id=entry.user_id,
                    nick=entry.nick,
                    gzip_content=gzip_content,
                    retried=entry.deliveries - 1 if entry.deliveries > 1 else None,
                )
                frame = codec.encode(message)
                faults = self.faults
                if faults.unknown_header_fraction and self.rng.random() < faults.unknown_header_fraction:
                    trace = f"{self.rng.getrandbits(64):016x}"
                    frame = with_unknown_header(frame, faults.unknown_header_kind, "x_trace_id", trace)
                    self.stats.unknown_headers += 1
                await client.ws.send(frame)
        except ConnectionClosed:
            return
        except Exception:
            # A defect, not a network event: make it loud and let the client reconnect elsewhere.
            logger.exception("TMC push sender failed", extra={"action": "tmc_server_sender_failed"})
            client.ws.transport.abort()
            raise

    async def _on_client_frame(self, queue: _GroupQueue, client: _Client, frame: bytes | str) -> None:
        if isinstance(frame, str):
            await self._reject(client, None, "text frames are not TMC messages")
            return
        try:
            message = codec.decode(frame)
        except codec.TmcDecodeError as exc:
            await self._reject(client, None, f"malformed message: {exc}")
            return
        if message.message_type != codec.MessageType.SEND:
            await self._reject(client, message, f"unexpected {message.message_type.name}")
            return
        if message.token != client.token:
            await self._reject(client, message, "unknown token")
            return
        strict = self.config.strict_types
        kind_value = message.content.get("__kind")
        if not isinstance(kind_value, codec.TypedInt) or (strict and not isinstance(kind_value, codec.Byte)):
            await self._reject(client, message, "__kind must be a Byte")
            return
        kind = int(kind_value)
        if kind == codec.MessageKind.PULL_REQUEST:
            self.stats.pull_requests += 1
            client.pull_requests += 1
            queue.wake.set()
            return
        if kind not in (codec.MessageKind.CONFIRM, codec.MessageKind.FAILED):
            await self._reject(client, message, f"unsupported __kind {kind}")
            return
        id_value = message.content.get("id")
        if not isinstance(id_value, codec.TypedInt) or (strict and not isinstance(id_value, codec.Int64)):
            await self._reject(client, message, "id must be an Int64")
            return
        if kind == codec.MessageKind.CONFIRM:
            queue.confirm(int(id_value))
        else:
            queue.fail(int(id_value))

    async def _reject(self, client: _Client, request: codec.Message | None, phrase: str) -> None:
        self.stats.malformed += 1
        logger.info("rejected a TMC client frame: %s", phrase, extra={"action": "tmc_server_rejected"})
        ack = codec.send_ack(
            request or codec.Message(message_type=codec.MessageType.SEND),
            status_code=self.config.bad_request_status_code,
            status_phrase=phrase[:200],
        )
        with contextlib.suppress(ConnectionClosed):
            await client.ws.send(codec.encode(ack))


def _check_publishable(*, topic: str, content: str, nick: str, user_id: int, time: datetime) -> None:
    """Refuse at publish time what could not be pushed later (the sender must not fail mid-queue)."""
    try:
        codec.Int64(user_id)
        codec.datetime_to_epoch_ms(time)
        for text in (topic, content, nick):
            text.encode("utf-8")
    except (codec.TmcEncodeError, UnicodeEncodeError, AttributeError) as exc:
        raise ValueError(f"message cannot be pushed: {exc}") from None
    if not topic:
        raise ValueError("message cannot be pushed: empty topic")


def _padded(content: str, size: int) -> str | None:
    """A JSON object `content` with a `padding` field that makes it more than `size` UTF-8 bytes long;
    None when the content is not a JSON object."""
    try:
        document = json.loads(content)
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    document["padding"] = ""
    base = len(json.dumps(document, ensure_ascii=False).encode("utf-8"))
    document["padding"] = "x" * max(size - base + 1, 0)
    return json.dumps(document, ensure_ascii=False)


def _sign_ok(app_key: str, group: str, timestamp: str, given: str, secret: str) -> bool:
    params = {"app_key": app_key, "group_name": group, "timestamp": timestamp}
    # Constant-time, and case-insensitive: the rule says upper-case hex but some clients send lower case.
    return hmac.compare_digest(sign(params, secret, "md5"), given.upper())


def _tid_of(content: str) -> int | None:
    """The trade id a trade message is about, for the ground-truth record of withheld messages."""
    try:
        document = json.loads(content)
    except ValueError:
        return None
    tid = document.get("tid") if isinstance(document, dict) else None
    if isinstance(tid, int):
        return tid
    if isinstance(tid, str) and tid.isdigit():
        return int(tid)
    return None
