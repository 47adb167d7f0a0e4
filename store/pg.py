"""`PgStore`: the asyncpg implementation of `listener.ports.TradeStore`."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from types import TracebackType

import asyncpg

from store import sql
from store.constants import DEFAULT_NOTIFY_CHANNEL, SERVER_SETTINGS
from store.errors import DATABASE_ERRORS, StoreError
from store.types import ApplyResult
from store.upsert import apply_batch
from store.validation import storable_text
from taobao.models import Trade

logger = logging.getLogger(__name__)

# LISTEN takes an identifier: keep the channel one that needs no quoting (and fits NAMEDATALEN).
_CHANNEL = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# Sorted row locks make deadlocks unlikely; a retry covers the rest (e.g. FK key-share locks).
_RETRYABLE = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
_ATTEMPTS = 3


def check_channel(channel: str) -> str:
    if not _CHANNEL.match(channel):
        raise ValueError(f"notify channel must be a lower-case identifier of at most 63 bytes: {channel!r}")
    return channel


class PgStore:
    """Guarded upserts, the change feed, NOTIFY and dead letters over one asyncpg pool.

    `apply_trades` runs one transaction per call; see `store.upsert` for what it does and
    `store.types.ApplyResult` for what it returns. Invalid trades are quarantined, never raised.
    """

    def __init__(self, pool: asyncpg.Pool, *, notify_channel: str = DEFAULT_NOTIFY_CHANNEL) -> None:
        self._pool = pool
        self.notify_channel = check_channel(notify_channel)

    @classmethod
    async def connect(
        cls,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        notify_channel: str = DEFAULT_NOTIFY_CHANNEL,
    ) -> PgStore:
        check_channel(notify_channel)
        try:
            pool = await asyncpg.create_pool(
                dsn, min_size=min_size, max_size=max_size, server_settings=SERVER_SETTINGS
            )
        except DATABASE_ERRORS as exc:
            raise StoreError(f"cannot connect to the database: {exc}") from exc
        return cls(pool, notify_channel=notify_channel)

    @property
    def pool(self) -> asyncpg.Pool:
        """For other store modules (ledger, reports) that share the pool."""
        return self._pool

    async def apply_trades(self, trades: Sequence[Trade], *, source: str) -> ApplyResult:
        if not source:
            raise ValueError("source must name who fetched the trades (e.g. 'stream', 'backfill')")
        if not trades:
            return ApplyResult(changed=(), unchanged=())
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                async with self._pool.acquire() as conn:
                    return await apply_batch(conn, trades, source=source, channel=self.notify_channel)
            except _RETRYABLE as exc:
                if attempt == _ATTEMPTS:
                    raise StoreError(f"apply_trades gave up after {attempt} attempts: {exc}") from exc
                logger.warning(
                    "apply_trades retrying after %s",
                    type(exc).__name__,
                    extra={"action": "apply_retry", "attempt": attempt},
                )
            except DATABASE_ERRORS as exc:
                raise StoreError(f"apply_trades failed: {exc}") from exc
        raise AssertionError("unreachable")

    async def dead_letter(
        self,
        *,
        source: str,
        reason: str,
        payload: bytes | str,
        tid: int | None = None,
        shop: str | None = None,
    ) -> None:
        """Quarantine input the service could not use (docs/design.md#bad-input-never-crashes). `payload` is
        kept byte for byte."""
        data = payload.encode("utf-8", errors="surrogatepass") if isinstance(payload, str) else payload
        reason, shop = storable_text(reason), None if shop is None else storable_text(shop)
        try:
            await self._pool.execute(sql.INSERT_DEAD_LETTER, storable_text(source), reason, data, tid, shop)
        except DATABASE_ERRORS as exc:
            raise StoreError(f"dead_letter failed: {exc}") from exc
        logger.warning(
            "quarantined input from %s: %s",
            source,
            reason,
            extra={"action": "dead_letter", "tid": tid, "shop": shop},
        )

    async def last_position(self) -> int:
        """The newest committed feed position (0 when the feed is empty)."""
        value = await self._pool.fetchval(sql.LAST_POSITION)
        return int(value)

    async def close(self) -> None:
        await self._pool.close()

    async def __aenter__(self) -> PgStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
