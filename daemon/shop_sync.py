"""The running daemon follows the shop registry (docs/operations.md#shops): a NOTIFY on
`store.shops.SHOPS_CHANNEL` rings at every change and the registry is re-read every
SYNC_SHOPS_REFRESH_SECONDS anyway (a doorbell missed while the connection was down). Each read makes
the shop book (what the stream, the reconciler and the replica set serve) equal to the active shops:

* an added (or resumed) shop is served: the dispatcher takes its messages, the reconciler plans its
  initial load or reads the time it was not served;
* a removed or paused one stops being fetched, swept and loaded; its trades and ledger stay;
* a shop with a new session is fetched again if its old one had been rejected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg
from pydantic import SecretStr

from common.errors import OrderSyncError
from store.errors import DATABASE_ERRORS
from store.shop_book import BookChange, ShopBook
from store.shops import SHOPS_CHANNEL, ShopRecord, ShopRegistry

log = logging.getLogger(__name__)


class ShopsListener(Protocol):
    """What must hear of a change: the stream's dispatcher and the reconciler."""

    async def shops_changed(self, change: BookChange, records: dict[str, ShopRecord]) -> None: ...


@dataclass(frozen=True, slots=True)
class ShopSyncConfig:
    dsn: str
    refresh_seconds: float = 30.0
    connect_timeout: float = 10.0


class ShopSync:
    def __init__(
        self,
        config: ShopSyncConfig,
        registry: ShopRegistry,
        book: ShopBook,
        listeners: list[ShopsListener],
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._config = config
        self._registry = registry
        self.book = book
        self._listeners = listeners
        self._now = now
        self._rang = asyncio.Event()
        self.records: dict[str, ShopRecord] = {}
        self.reads = 0

    def listen(self, listener: ShopsListener) -> None:
        self._listeners.append(listener)

    async def run(self) -> None:
        """The side task: listen, and re-read on every doorbell and every refresh period."""
        conn: asyncpg.Connection | None = None
        try:
            while True:
                if conn is None or conn.is_closed():
                    conn = await self._listen()
                await self._read_logged()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._config.refresh_seconds):
                        await self._rang.wait()
                self._rang.clear()
        finally:
            if conn is not None and not conn.is_closed():
                await conn.close()

    async def read(self) -> BookChange:
        """Read the registry once and serve its active shops."""
        records = {r.nick: r for r in await self._registry.records()}
        self.records = records
        active: dict[str, SecretStr] = {n: r.session for n, r in records.items() if r.active}
        change = self.book.replace(active)
        self.reads += 1
        if change:
            log.info(
                "shops changed: %d added, %d removed, %d with a new session; serving %d",
                len(change.added),
                len(change.removed),
                len(change.renewed),
                len(self.book),
                extra={"action": "shops_changed"},
            )
        for listener in self._listeners:
            await listener.shops_changed(change, records)
        return change

    async def _read_logged(self) -> None:
        try:
            await self.read()
        except (OrderSyncError, *DATABASE_ERRORS) as exc:  # the next doorbell or period tries again
            log.error(
                "cannot read the shop registry: %s; trying again in %.0f s",
                exc,
                self._config.refresh_seconds,
                extra={"action": "shops_read_failed"},
            )

    async def _listen(self) -> asyncpg.Connection | None:
        """A dedicated connection (a pooled one would UNLISTEN on release); None when it cannot be
        opened now: the periodic re-read still runs."""
        try:
            conn = await asyncpg.connect(self._config.dsn, timeout=self._config.connect_timeout)
            await conn.add_listener(SHOPS_CHANNEL, self._doorbell)
            conn.add_termination_listener(lambda _conn: self._rang.set())
            return conn
        except DATABASE_ERRORS as exc:
            log.warning(
                "cannot LISTEN for shop changes (%s); re-reading every %.0f s",
                type(exc).__name__,
                self._config.refresh_seconds,
                extra={"action": "shops_listen_failed"},
            )
            return None

    def _doorbell(self, *_args: Any) -> None:
        self._rang.set()


class StreamShops:
    """The stream's side of a change: a removed shop's queued messages are handed back, a renewed
    session is used again."""

    def __init__(self, dispatcher: Any) -> None:
        self._dispatcher = dispatcher

    async def shops_changed(self, change: BookChange, records: dict[str, ShopRecord]) -> None:
        for shop in sorted(change.removed):
            await self._dispatcher.retire_shop(shop)
        for shop in sorted(change.renewed | change.added):
            self._dispatcher.resume_shop(shop)


class ReconcilerShops:
    """The reconciler's side: added shops are looked at on its next round (the stream proves them once
    their permit succeeds, `daemon.shop_keeper`); removed ones leave the stream's proof."""

    def __init__(self, reconciler: Any) -> None:
        self._reconciler = reconciler

    async def shops_changed(self, change: BookChange, records: dict[str, ShopRecord]) -> None:
        if change:
            self._reconciler.shops_changed(change.added, change.removed)
