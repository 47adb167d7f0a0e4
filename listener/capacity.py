"""How much the dispatcher may hold at once: a count of messages (SYNC_MAX_EVENTS) and the memory of
their content (SYNC_MAX_HELD_BYTES), taken before the work is (docs/design.md#capacity-before-work)."""

from __future__ import annotations

import asyncio
import sys
from collections import deque

from taobao.tmc.events import TmcMessage

# Memory the held messages' content may take (SYNC_MAX_HELD_BYTES): trade messages are a few hundred
# bytes each, so the count bounds them first; a stream of large ones meets this bound instead.
DEFAULT_MAX_HELD_BYTES = 64 * 1024 * 1024


def held_size(message: TmcMessage) -> int:
    """What holding `message` costs in memory, its content's string object counted whole."""
    return sys.getsizeof(message.content)


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
