"""The WebSocket side of the stand-in TMC server: the upgrade, the signed CONNECT
(docs/tmc-protocol.md#connect), the client's frames (Confirm, Failed, PullRequest) and the sender that
pushes each connection's messages."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import http
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from simulator.tmc_config import ServerState
from simulator.tmc_frames import with_unknown_header
from simulator.tmc_queue import Consumer, GroupQueue, QueuedMessage
from taobao.signing import sign
from taobao.tmc import codec

logger = logging.getLogger(__name__)


class ConnectionHandler:
    """Serves every connection; `live` holds those past their CONNECTACK and not yet gone."""

    def __init__(
        self, apps: Mapping[str, str], shared: ServerState, queue_for: Callable[[str, str], GroupQueue]
    ) -> None:
        self._apps = apps
        self._shared = shared
        self._queue_for = queue_for
        self._count = 0
        self.live: set[Consumer] = set()

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Before the upgrade: only `/` is TMC, and the refuse fault answers 503."""
        if request.path.split("?", 1)[0] != "/":
            return connection.respond(http.HTTPStatus.NOT_FOUND, "TMC listens on /\n")
        if self._shared.faults.refusing():
            self._shared.stats.rejected_upgrades += 1
            return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "refusing connections\n")
        return None

    async def handle(self, ws: ServerConnection) -> None:
        queue, request = await self._login(ws)
        if queue is None or request is None:
            return
        self._count += 1
        self._shared.stats.connections += 1
        client = Consumer(self._count, ws, queue.token)
        try:
            await ws.send(codec.encode(codec.connect_ack(request, token=queue.token)))
        except ConnectionClosed:
            return
        queue.attach(client)
        self.live.add(client)
        sender = asyncio.create_task(self._send_loop(client), name=f"tmc-sender-{client.number}")
        try:
            async for frame in ws:
                await self._on_client_frame(queue, client, frame)
        except ConnectionClosed:
            pass
        finally:
            self.live.discard(client)
            queue.detach(client)
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)

    # ----- CONNECT -----------------------------------------------------------------------------------

    async def _login(self, ws: ServerConnection) -> tuple[GroupQueue | None, codec.Message | None]:
        """The queue a signed CONNECT names, or (None, None) once the connection has been answered."""
        try:
            async with asyncio.timeout(self._shared.config.handshake_timeout):
                frame = await ws.recv()
            request = codec.decode(frame) if isinstance(frame, bytes) else None
        except (TimeoutError, ConnectionClosed):
            return None, None
        except codec.TmcDecodeError as exc:
            self._shared.stats.malformed += 1
            await ws.close(1002, f"malformed CONNECT: {exc}"[:120])
            return None, None
        if request is None or request.message_type != codec.MessageType.CONNECT:
            self._shared.stats.malformed += 1
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
            phrase = self._shared.config.unknown_app_phrase
        elif not (
            isinstance(timestamp, str)
            and isinstance(given, str)
            and _sign_ok(app_key, signed_group, timestamp, given, secret)
        ):
            phrase = self._shared.config.bad_sign_phrase
        if phrase is not None:
            await self._refuse(ws, request, phrase)
            return None, None
        assert isinstance(app_key, str)
        return self._queue_for(app_key, signed_group or "default"), request

    async def _refuse(self, ws: ServerConnection, request: codec.Message, phrase: str) -> None:
        self._shared.stats.refused += 1
        logger.info("refused TMC CONNECT: %s", phrase, extra={"action": "tmc_server_refused"})
        refusal = codec.connect_refusal(
            request, status_code=self._shared.config.refusal_status_code, status_phrase=phrase
        )
        with contextlib.suppress(ConnectionClosed):
            await ws.send(codec.encode(refusal))
            await ws.close(1000, "connect refused")

    # ----- pushes ------------------------------------------------------------------------------------

    async def _send_loop(self, client: Consumer) -> None:
        try:
            while True:
                entry, duplicate = await client.outbox.get()
                if entry.done and not duplicate:
                    continue  # confirmed (through a duplicate) before it left
                await client.ws.send(self._push_frame(client, entry))
        except ConnectionClosed:
            return
        except Exception:
            # A defect, not a network event: make it loud and let the client reconnect elsewhere.
            logger.exception("TMC push sender failed", extra={"action": "tmc_server_sender_failed"})
            client.ws.transport.abort()
            raise

    def _push_frame(self, client: Consumer, entry: QueuedMessage) -> bytes:
        config = self._shared.config
        gzip_content = bool(config.gzip_fraction) and self._shared.rng.random() < config.gzip_fraction
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
        faults = self._shared.faults
        if faults.unknown_header_fraction and self._shared.rng.random() < faults.unknown_header_fraction:
            trace = f"{self._shared.rng.getrandbits(64):016x}"
            frame = with_unknown_header(frame, faults.unknown_header_kind, "x_trace_id", trace)
            self._shared.stats.unknown_headers += 1
        return frame

    # ----- the client's frames -----------------------------------------------------------------------

    async def _on_client_frame(self, queue: GroupQueue, client: Consumer, frame: bytes | str) -> None:
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
        strict = self._shared.config.strict_types
        kind_value = message.content.get("__kind")
        if not isinstance(kind_value, codec.TypedInt) or (strict and not isinstance(kind_value, codec.Byte)):
            await self._reject(client, message, "__kind must be a Byte")
            return
        kind = int(kind_value)
        if kind == codec.MessageKind.PULL_REQUEST:
            self._shared.stats.pull_requests += 1
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

    async def _reject(self, client: Consumer, request: codec.Message | None, phrase: str) -> None:
        self._shared.stats.malformed += 1
        logger.info("rejected a TMC client frame: %s", phrase, extra={"action": "tmc_server_rejected"})
        ack = codec.send_ack(
            request or codec.Message(message_type=codec.MessageType.SEND),
            status_code=self._shared.config.bad_request_status_code,
            status_phrase=phrase[:200],
        )
        with contextlib.suppress(ConnectionClosed):
            await client.ws.send(codec.encode(ack))


def _sign_ok(app_key: str, group: str, timestamp: str, given: str, secret: str) -> bool:
    params = {"app_key": app_key, "group_name": group, "timestamp": timestamp}
    # Constant-time, and case-insensitive: the rule says upper-case hex but some clients send lower case.
    return hmac.compare_digest(sign(params, secret, "md5"), given.upper())
