"""How much the stream may hold at once: a count of messages (SYNC_MAX_EVENTS) and the memory of
their content (SYNC_MAX_HELD_BYTES) in the dispatcher, and the memory of trades fetched and not yet
committed (SYNC_MAX_FETCHED_BYTES); each taken before the work is (docs/design.md#capacity-before-work)."""

from __future__ import annotations

import asyncio
import sys
from collections import deque

from taobao.models import Trade
from taobao.tmc.events import TmcMessage

# Memory the held messages' content may take (SYNC_MAX_HELD_BYTES): trade messages are a few hundred
# bytes each, so the count bounds them first; a stream of large ones meets this bound instead.
DEFAULT_MAX_HELD_BYTES = 64 * 1024 * 1024
# Memory the fetched, uncommitted trades may take (SYNC_MAX_FETCHED_BYTES): a batch of ordinary trades is
# well under 1 MiB; a database that stops answering while trades are large meets this bound.
DEFAULT_MAX_FETCHED_BYTES = 64 * 1024 * 1024
# What a value other than a string costs in the estimate: a Python object and its slot in a container.
_NODE_BYTES = 64
# While a fetch runs its answer exists three times at once (the bytes read, their text, the parsed
# trade), so a fetch in flight is reserved at three times the largest trade seen.
IN_FLIGHT_COPIES = 3


def held_size(message: TmcMessage) -> int:
    """What holding `message` costs in memory, its content's string object counted whole."""
    return sys.getsizeof(message.content)


def trade_size(trade: Trade) -> int:
    """An estimate of what holding `trade` costs: its answer as kept in `raw` (the named fields repeat
    a few values of it), strings counted whole (Chinese text takes two bytes a character), every
    other value at a fixed cost."""
    return _value_size(trade.raw)


def _value_size(value: object) -> int:
    if isinstance(value, str):
        return sys.getsizeof(value)
    if isinstance(value, dict):
        return _NODE_BYTES + sum(_NODE_BYTES + len(key) + _value_size(item) for key, item in value.items())
    if isinstance(value, list):
        return _NODE_BYTES + sum(_value_size(item) for item in value)
    return _NODE_BYTES


class HoldBudget:
    """Messages and bytes held now, and a wait for room. Nothing held means room for one message
    however large: the TMC codec caps a single message's size already."""

    def __init__(self, *, max_count: int, max_bytes: int) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.count = 0
        self.bytes = 0
        self._room = asyncio.Event()
        self._room.set()
        self._closed = False

    def fits(self, size: int) -> bool:
        if self.count == 0:
            return True
        return self.count < self.max_count and self.bytes + size <= self.max_bytes

    async def wait_for_room(self, size: int) -> None:
        """Returns once a message of `size` bytes fits, or the budget was closed."""
        while not self._closed and not self.fits(size):
            self._room.clear()
            await self._room.wait()

    def take(self, size: int) -> None:
        self.count += 1
        self.bytes += size

    def give_back(self, size: int) -> None:
        self.count -= 1
        self.bytes -= size
        self._room.set()

    def close(self) -> None:
        """Wake every waiter for good (the intake closed: they park instead)."""
        self._closed = True
        self._room.set()


class FrameInbox:
    """Frames read from the TMC socket and not yet handed on, bounded by count and bytes. The socket is
    read on while the handler waits for the dispatcher's room, so its control frames (pongs) are read
    too and a backlog never looks like a dead connection; only a full inbox stops the reading."""

    def __init__(self, *, max_frames: int, max_bytes: int) -> None:
        self._budget = HoldBudget(max_count=max_frames, max_bytes=max_bytes)
        self._frames: deque[bytes | str] = deque()
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._frames)

    async def put(self, frame: bytes | str) -> None:
        await self._budget.wait_for_room(len(frame))
        self._budget.take(len(frame))
        self._frames.append(frame)
        self._ready.set()

    async def get(self) -> bytes | str:
        while not self._frames:
            self._ready.clear()
            await self._ready.wait()
        frame = self._frames.popleft()
        self._budget.give_back(len(frame))
        return frame


class FetchBudget:
    """Memory of the trades fetched and not yet committed, and a wait before each fetch. A fetch takes
    a reservation of `IN_FLIGHT_COPIES` times the largest trade seen so far and starts only while held
    plus reserved bytes fit under `max_bytes`; so fetching pauses while commits fall behind, and the
    bound holds unless a trade is larger than any before it. Nothing held or reserved means room for
    one fetch."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0  # fetched trades handed to the batcher and not yet committed (or given up)
        self.reserved = 0  # fetches started and not yet ended
        self.largest = 0  # the largest trade seen: what a fetch in flight may still bring
        self._room = asyncio.Event()
        self._room.set()

    def fits(self) -> bool:
        if self.bytes == 0 and self.reserved == 0:
            return True
        return self.bytes + (self.reserved + 1) * IN_FLIGHT_COPIES * self.largest <= self.max_bytes

    async def reserve(self) -> None:
        """Returns once one more fetch fits, with its reservation taken."""
        while not self.fits():
            self._room.clear()
            await self._room.wait()
        self.reserved += 1

    def unreserve(self) -> None:
        """A reserved fetch ended (what it brought, if anything, was held first)."""
        self.reserved -= 1
        self._room.set()

    def hold(self, size: int) -> None:
        """A fetched trade of `size` bytes is held until its commit."""
        self.bytes += size
        self.largest = max(self.largest, size)

    def release(self, size: int) -> None:
        """A held trade was committed or let go."""
        self.bytes -= size
        self._room.set()
