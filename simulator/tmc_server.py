"""Stand-in TMC server: the WebSocket side of Taobao's message channel, with ground truth and faults.

Behaviour follows docs/tmc-protocol.md#stand-in-model: signed CONNECT, a token stable per (app_key, group),
one queue per (app_key, group) shared by competing connections, immediate push plus PullRequest-served
backlog, an in-flight cap per connection, Confirm deletes, Failed and confirm timeouts redeliver (same id,
`retried` incremented), a dropped connection's unconfirmed messages are redelivered at once.
Values the public material does not give (refusal codes, timeouts) are configuration.

The parts: tmc_connections (the WebSocket side), tmc_queue (queueing and redelivery), tmc_publishing
(accepting messages), tmc_connection_faults (faults applied to live connections). They share one
ServerState (config, fault knobs, counters, seeded RNG): change the knobs in place, never replace them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Mapping
from datetime import datetime

from websockets.asyncio.server import Server, serve
from websockets.exceptions import ConnectionClosed

from simulator.tmc_config import ServerState, TmcServerConfig
from simulator.tmc_connection_faults import ConnectionFaults
from simulator.tmc_connections import ConnectionHandler
from simulator.tmc_faults import TmcFaults
from simulator.tmc_permits import TmcPermits
from simulator.tmc_publishing import Publisher
from simulator.tmc_queue import GroupQueue
from simulator.tmc_stats import ConnectionInfo, LostMessage, TmcServerStats

__all__ = ["ConnectionInfo", "LostMessage", "TmcServer", "TmcServerConfig", "TmcServerStats"]

logger = logging.getLogger(__name__)


class TmcServer:
    """`apps` maps app_key → secret. `publish()` is synchronous so a market's change listener can call it."""

    def __init__(
        self,
        apps: Mapping[str, str],
        config: TmcServerConfig | None = None,
        faults: TmcFaults | None = None,
        permits: TmcPermits | None = None,
    ) -> None:
        self._apps = dict(apps)
        # Whose messages are delivered (taobao.tmc.user.permit); the gateway answers the calls. A server
        # without a gateway (the TMC protocol's own tests) has nobody to permit through: every seller's.
        self.permits = permits or TmcPermits(required=False)
        config = config or TmcServerConfig()
        rng = random.Random(config.seed)
        self._shared = ServerState(config, faults or TmcFaults(), TmcServerStats(), rng)
        self._queues: dict[tuple[str, str], GroupQueue] = {}
        self._publisher = Publisher(self._shared, self._queue, self.permits)
        self._connections = ConnectionHandler(self._apps, self._shared, self._queue)
        self._connection_faults = ConnectionFaults(self._connections.live, self._shared)
        self._server: Server | None = None
        self.host = "127.0.0.1"
        self.port = 0

    def __repr__(self) -> str:
        return f"TmcServer(url={self.url!r}, apps={sorted(self._apps)!r})"

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/"

    @property
    def config(self) -> TmcServerConfig:
        return self._shared.config

    @property
    def faults(self) -> TmcFaults:
        """The fault knobs, mutable at runtime."""
        return self._shared.faults

    @property
    def stats(self) -> TmcServerStats:
        return self._shared.stats

    @property
    def rng(self) -> random.Random:
        """The seeded RNG every random choice of the server draws from."""
        return self._shared.rng

    # ------------------------------------------------------------------------------------------ lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on host:port (0 = any free port). Queues survive stop()/start(), like a server restart."""
        self._server = await serve(
            self._connections.handle,
            host,
            port,
            process_request=self._connections.process_request,
            compression=None,
            ping_interval=self.config.ping_interval,
            ping_timeout=self.config.ping_timeout,
            close_timeout=self.config.close_timeout,
            max_size=1 << 20,
        )
        self.host, self.port = self._server.sockets[0].getsockname()[:2]
        for queue in self._queues.values():
            queue.ensure_running()
        self._connection_faults.start()
        logger.info("stand-in TMC server listening on %s", self.url, extra={"action": "tmc_server_started"})

    async def stop(self) -> None:
        await self._connection_faults.stop()
        self._connection_faults.abort_stalled()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        tasks = [q.task for q in self._queues.values() if q.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

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
        return self._publisher.publish(
            app_key, group, topic=topic, content=content, nick=nick, user_id=user_id, time=time
        )

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

    def token_for(self, app_key: str, group: str = "default") -> str:
        """The session token the queue hands out (stable per app_key and group)."""
        return self._queue(app_key, group).token

    def _queue(self, app_key: str, group: str) -> GroupQueue:
        queue = self._queues.get((app_key, group))
        if queue is None:
            queue = GroupQueue(app_key, group, self._shared)
            self._queues[(app_key, group)] = queue
        return queue

    # ------------------------------------------------------------------------------------------ connections

    def connections(self) -> list[ConnectionInfo]:
        return [
            ConnectionInfo(c.number, q.app_key, q.group, c.delivered, len(c.in_flight), c.pull_requests)
            for q in self._queues.values()
            for c in q.clients
        ]

    def in_flight_by_connection(self) -> dict[int, int]:
        return {info.number: info.in_flight for info in self.connections()}

    def drop_connections(self) -> int:
        """Abort every live connection (no close frame), as a network cut would; returns how many."""
        return self._connection_faults.drop()

    async def close_connections(
        self, code: int | None = None, reason: str | None = None, limit: int | None = None
    ) -> int:
        """See ConnectionFaults.close."""
        return await self._connection_faults.close(code, reason, limit)

    def stall_connections(self) -> int:
        """See ConnectionFaults.stall."""
        return self._connection_faults.stall()

    async def send_raw(self, app_key: str, frame: bytes | str, group: str = "default") -> int:
        """Send `frame` unchanged to every live connection of the queue (malformed-input scenarios)."""
        queue = self._queues.get((app_key, group))
        clients = list(queue.clients) if queue else []
        for client in clients:
            with contextlib.suppress(ConnectionClosed):
                await client.ws.send(frame)
        return len(clients)
