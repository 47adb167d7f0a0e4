"""The TMC session as the daemon drives it, reporting to the reconciler's `StreamWatch` on the way: the
watch sees every message handed to the dispatcher and every confirm, which is what the stream's proof
of coverage is computed from."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from listener.ports import MessageHandler
from listener.session import TmcSession
from reconciler.stream_watch import StreamWatch
from taobao.tmc.events import TmcMessage


class WatchedChannel:
    """The TMC session as the service drives it, reporting to a `StreamWatch` on the way."""

    def __init__(self, session: TmcSession, watch: StreamWatch) -> None:
        self.session = session
        self.watch = watch

    @staticmethod
    def wrap_handler(handler: MessageHandler, watch: StreamWatch) -> Callable[[TmcMessage], Awaitable[None]]:
        async def watched(message: TmcMessage) -> None:
            watch.received(message)
            await handler(message)

        return watched

    async def run(self) -> None:
        await self.session.run()

    def stop(self) -> None:
        self.session.stop()

    async def confirm(self, message_id: int) -> None:
        # Committed is what counts for coverage; a confirm that cannot be sent changes nothing there.
        self.watch.settled(message_id)
        await self.session.confirm(message_id)

    async def fail(self, message_id: int, reason: str) -> None:
        await self.session.fail(message_id, reason)

    # What readiness and metrics read from a channel.
    @property
    def connected(self) -> bool:
        return self.session.connected

    @property
    def down_since(self) -> float:
        return self.session.down_since

    @property
    def counters(self) -> Any:
        return self.session.counters

    def __repr__(self) -> str:
        return f"WatchedChannel({self.session!r})"
