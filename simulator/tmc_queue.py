"""One TMC queue per (app_key, group), shared by the connections competing for it
(docs/tmc-protocol.md#stand-in-model): immediate delivery to a connection with room under its in-flight
cap, Confirm deletes, Failed comes back after the redelivery delay, a confirm timeout or a dropped
connection puts the message back at the head at once. Every later delivery keeps the message's id.
"""

from __future__ import annotations

import asyncio
import heapq
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime

from websockets.asyncio.server import ServerConnection

from simulator.tmc_config import ServerState


@dataclass(eq=False, slots=True)
class QueuedMessage:
    id: int
    topic: str
    content: str
    time: datetime
    nick: str
    user_id: int
    tid: int | None
    deliveries: int = 0
    done: bool = False  # confirmed


@dataclass(eq=False, slots=True)
class Consumer:
    """One accepted connection competing for its group's queue."""

    number: int
    ws: ServerConnection
    token: str
    # (message, sent as a duplicate): what the connection's sender pushes next
    outbox: asyncio.Queue[tuple[QueuedMessage, bool]] = field(default_factory=asyncio.Queue)
    in_flight: set[int] = field(default_factory=set)
    delivered: int = 0
    pull_requests: int = 0
    alive: bool = True
    stalled: bool = False
    since: float = field(default_factory=time.monotonic)  # when its CONNECTACK went out


@dataclass(eq=False, slots=True)
class _Flight:
    entry: QueuedMessage
    client: Consumer
    deadline: float


class GroupQueue:
    """One (app_key, group) queue and the connections competing for it."""

    def __init__(self, app_key: str, group: str, shared: ServerState) -> None:
        self.app_key = app_key
        self.group = group
        self._shared = shared
        self.token = str(uuid.uuid4())
        self.messages: dict[int, QueuedMessage] = {}  # everything not yet confirmed
        self.ready: deque[QueuedMessage] = deque()
        self.delayed: list[tuple[float, int, QueuedMessage]] = []  # (due, id, entry) heap
        self.in_flight: dict[int, _Flight] = {}
        self.deadlines: list[tuple[float, int]] = []  # (deadline, id) heap; stale rows skipped
        self.clients: list[Consumer] = []
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
            self._shared.stats.expired += 1
            self.ready.appendleft(flight.entry)

    def _assign(self, now: float) -> None:
        cap = self._shared.config.max_in_flight
        while self.ready:
            candidates = [c for c in self.clients if c.alive and len(c.in_flight) < cap]
            if not candidates:
                return
            entry = self.ready.popleft()
            if entry.done:
                continue
            client = candidates[0] if len(candidates) == 1 else self._shared.rng.choice(candidates)
            self._deliver(entry, client, now)

    def _deliver(self, entry: QueuedMessage, client: Consumer, now: float) -> None:
        deadline = now + self._shared.config.confirm_timeout
        self.in_flight[entry.id] = _Flight(entry, client, deadline)
        heapq.heappush(self.deadlines, (deadline, entry.id))
        client.in_flight.add(entry.id)
        client.delivered += 1
        if entry.deliveries:
            self._shared.stats.redelivered += 1
        else:
            self._shared.stats.delivered += 1
        entry.deliveries += 1
        client.outbox.put_nowait((entry, False))
        duplicate_fraction = self._shared.faults.duplicate_fraction
        if duplicate_fraction and self._shared.rng.random() < duplicate_fraction:
            self._shared.stats.duplicated += 1
            client.outbox.put_nowait((entry, True))

    def publish(self, entry: QueuedMessage) -> None:
        self.messages[entry.id] = entry
        self.drained.clear()
        faults = self._shared.faults
        if faults.reorder_fraction and self._shared.rng.random() < faults.reorder_fraction:
            self._shared.stats.reordered += 1
            heapq.heappush(self.delayed, (time.monotonic() + faults.reorder_delay, entry.id, entry))
        else:
            self.ready.append(entry)
        self.wake.set()

    def confirm(self, message_id: int) -> None:
        entry = self.messages.pop(message_id, None)
        if entry is None:
            self._shared.stats.confirm_unknown += 1
            return
        entry.done = True
        self._shared.stats.confirmed += 1
        if not self.messages:
            self.drained.set()
        flight = self.in_flight.pop(message_id, None)
        if flight is not None:
            flight.client.in_flight.discard(message_id)
            self.wake.set()

    def fail(self, message_id: int) -> None:
        self._shared.stats.failed += 1
        flight = self.in_flight.pop(message_id, None)
        if flight is None:
            return  # already waiting for redelivery, or confirmed
        flight.client.in_flight.discard(message_id)
        due = time.monotonic() + self._shared.config.failed_redelivery_delay
        heapq.heappush(self.delayed, (due, message_id, flight.entry))
        self.wake.set()

    def attach(self, client: Consumer) -> None:
        self.clients.append(client)
        self.ensure_running()
        self.wake.set()

    def detach(self, client: Consumer) -> None:
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
