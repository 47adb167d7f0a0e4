"""Faults the stand-in TMC server applies to live connections: abort them (a network cut), close them
with a close frame, stall them (a half-dead peer), now or on a schedule the fault knobs set."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from websockets.protocol import State

from simulator.tmc_config import ServerState
from simulator.tmc_queue import Consumer

logger = logging.getLogger(__name__)

_KNOB_POLL = 0.1  # how often a waiting schedule re-reads its knob (they are mutable at runtime)


class ConnectionFaults:
    """Acts on `live`, the server's set of live connections (shared, not copied)."""

    def __init__(self, live: set[Consumer], shared: ServerState) -> None:
        self._live = live
        self._shared = shared
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Run the scheduled faults (drop_every, close_every, close_next) on the current loop."""
        dropper = self._periodic(lambda: self._shared.faults.drop_every, self._drop_all, "dropped")
        closer = self._periodic(lambda: self._shared.faults.close_every, self._close_all, "closed")
        self._tasks = [
            asyncio.create_task(dropper, name="tmc-server-dropper"),
            asyncio.create_task(closer, name="tmc-server-closer"),
            asyncio.create_task(self._close_next_loop(), name="tmc-server-close-next"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def drop(self) -> int:
        """Abort every live connection (no close frame), as a network cut would; returns how many."""
        clients = list(self._live)
        for client in clients:
            client.ws.transport.abort()
        self._shared.stats.dropped += len(clients)
        return len(clients)

    async def close(
        self, code: int | None = None, reason: str | None = None, limit: int | None = None
    ) -> int:
        """Close live connections (all, or the `limit` oldest) with a close frame (default: the close
        fault's code and reason); returns how many. Waits for the closing handshakes (each bounded by
        close_timeout)."""
        code = self._shared.faults.close_code if code is None else code
        reason = self._shared.faults.close_reason if reason is None else reason
        clients = sorted((c for c in self._live if c.ws.state is State.OPEN), key=lambda c: c.since)[:limit]
        self._shared.stats.closed += len(clients)
        await asyncio.gather(*(c.ws.close(code, reason) for c in clients), return_exceptions=True)
        return len(clients)

    def stall(self) -> int:
        """Stop reading from every live connection: TCP stays up but nothing is answered, pongs included,
        the way a half-dead peer behaves. Clients must notice through their ping timeout."""
        clients = list(self._live)
        for client in clients:
            client.stalled = True
            client.ws.transport.pause_reading()
        return len(clients)

    def abort_stalled(self) -> None:
        """Stalled connections would never answer a closing handshake: cut them instead."""
        for client in list(self._live):
            if client.stalled:
                client.ws.transport.abort()

    async def _drop_all(self) -> int:
        return self.drop()

    async def _close_all(self) -> int:
        return await self.close()

    async def _close_next_loop(self) -> None:
        """Serve `close_next`: close connections as they have been up for `close_next_after` seconds,
        until that many were closed (a close asked for while no client is connected waits for one)."""
        while True:
            await asyncio.sleep(0.05)  # re-read the knob
            faults = self._shared.faults
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
            await self.close(limit=count)
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
                await asyncio.sleep(_KNOB_POLL)
                continue
            wait = last + interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(min(wait, _KNOB_POLL))
                continue
            last = time.monotonic()
            if await action():
                logger.info("fault: %s every TMC connection", what, extra={"action": f"tmc_fault_{what}"})
