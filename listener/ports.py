"""The narrow seams between the listener's parts (docs/design.md#storage-seam).

The dispatcher and worker pool depend only on these protocols; the real implementations are
`taobao.client.TopClient`, `store.pg.PgStore` and `listener.session.TmcSession`, and unit tests pass
in-memory fakes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Protocol

from store.types import ApplyResult
from store.unresolved import TradeDebt
from taobao.limiter import Priority
from taobao.models import Trade
from taobao.tmc.events import TmcMessage


class TradeFetcher(Protocol):
    async def trade_fullinfo(self, session: str, tid: int, *, priority: Priority = Priority.STREAM) -> Trade:
        """The trade's current state. Raises `taobao.errors.TopError` subclasses."""
        ...


class TradeStore(Protocol):
    async def apply_trades(self, trades: Sequence[Trade], *, source: str) -> ApplyResult: ...

    async def dead_letter(
        self,
        *,
        source: str,
        reason: str,
        payload: bytes | str,
        tid: int | None = None,
        shop: str | None = None,
    ) -> None: ...

    async def record_unresolved(
        self, debt: TradeDebt, *, at: datetime, delay: Callable[[int], float], history: bool
    ) -> int:
        """See `store.ports.FailureLog`."""
        ...


class MessageAcker(Protocol):
    async def confirm(self, message_id: int) -> None: ...

    async def confirm_all(self, message_ids: Sequence[int]) -> int:
        """Confirm them together (one socket write); how many were sent."""
        ...

    async def fail(self, message_id: int, reason: str) -> None: ...


MessageHandler = Callable[[TmcMessage], Awaitable[None]]


class MessageWatch(Protocol):
    """Who follows the stream message by message (`reconciler.stream_watch.StreamWatch` fits): it hears
    of each message as the dispatcher receives it and of each confirm as it is sent."""

    def received(self, message: TmcMessage) -> None: ...

    def settled(self, message_id: int) -> None: ...


class MessageChannel(MessageAcker, Protocol):
    """The push channel as the service drives it (`listener.session.TmcSession` fits).

    `run()` delivers each message by awaiting `handler(message)` (the handler may block: that is the
    backpressure) and returns only after `stop()`; an exception from `run()` stops the daemon.
    `stop()` asks `run()` to close and return; a handler call still waiting is cancelled and its
    message stays unconfirmed. `confirm()`/`fail()` may be called while `run()` is active.
    """

    async def run(self) -> None: ...

    def stop(self) -> None: ...


__all__ = [
    "ApplyResult",
    "MessageAcker",
    "MessageChannel",
    "MessageHandler",
    "MessageWatch",
    "TradeFetcher",
    "TradeStore",
]
