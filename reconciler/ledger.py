"""The coverage ledger in PostgreSQL (docs/design.md#coverage-ledger): per shop, the stretches of `modified`
time proven complete, and what proved them.

Rows of one kind (`proven_by`) that overlap or touch are merged as they are written, so the table
stays small: about one row per stream connection per shop, and one per stretch of backfill. The set
arithmetic lives in `common.intervals`; this module only stores and loads.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import asyncpg

from common.intervals import Interval, gaps, normalize
from reconciler import sql
from store.errors import StoreError

logger = logging.getLogger(__name__)

_FAR_PAST = datetime.fromisoformat("1970-01-01T00:00:00+00:00")
_FAR_FUTURE = datetime.fromisoformat("9999-01-01T00:00:00+00:00")
# InternalClientError: what a connection killed in the middle of an operation (pg_terminate_backend)
# raises when the pool resets it or the next query starts.
_DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError)
T = TypeVar("T")
# Raises (an OrderSyncError) inside a ledger transaction when this replica may not advance `shop`'s
# ledger: with several replicas, only the shop's leader records backfills, sweeps and loads.
Fence = Callable[[Any, str], Awaitable[None]]


class ProvenBy(enum.StrEnum):
    """What proved a stretch complete."""

    STREAM = "stream"  # connected, every message received in it committed and confirmed
    BACKFILL = "backfill"  # an increment window below the lag horizon read completely
    SWEEP = "sweep"  # the same, by the periodic low-priority sweep
    INITIAL_LOAD = "initial_load"  # a shop's history, loaded by created time before the increment took over


@dataclass(frozen=True, slots=True)
class Coverage:
    interval: Interval
    proven_by: ProvenBy


async def guarded(what: str, work: Callable[[], Awaitable[T]]) -> T:
    """Run a database call, turning driver errors into StoreError (one exception root)."""
    try:
        return await work()
    except _DB_ERRORS as exc:
        raise StoreError(f"{what} failed: {exc}") from exc


class Ledger:
    def __init__(self, pool: asyncpg.Pool, *, fence: Fence | None = None) -> None:
        self._pool = pool
        self._fence = fence

    async def prove(self, shop: str, interval: Interval, proven_by: ProvenBy) -> None:
        """Record `interval` as proven complete for `shop` (merged with touching rows of its kind)."""

        async def write() -> None:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(sql.LOCK_SHOP, shop)
                if self._fence is not None and proven_by is not ProvenBy.STREAM:
                    await self._fence(conn, shop)
                rows = await conn.fetch(
                    sql.TAKE_MERGEABLE, shop, proven_by.value, interval.start, interval.end
                )
                start = min([interval.start, *(r["interval_start"] for r in rows)])
                end = max([interval.end, *(r["interval_end"] for r in rows)])
                await conn.execute(sql.INSERT_COVERAGE, shop, start, end, proven_by.value)

        await guarded("recording coverage", write)
        logger.debug(
            "proven %s .. %s by %s",
            interval.start.isoformat(),
            interval.end.isoformat(),
            proven_by.value,
            extra={"action": "coverage_proven", "shop": shop},
        )

    async def coverage(
        self, shop: str, lo: datetime | None = None, hi: datetime | None = None
    ) -> list[Coverage]:
        """The stored rows of `shop` that reach into `[lo, hi)`, by start."""
        rows = await guarded(
            "reading coverage",
            lambda: self._pool.fetch(sql.SELECT_COVERAGE, shop, lo or _FAR_PAST, hi or _FAR_FUTURE),
        )
        return [
            Coverage(Interval(r["interval_start"], r["interval_end"]), ProvenBy(r["proven_by"])) for r in rows
        ]

    async def intervals(
        self,
        shop: str,
        lo: datetime | None = None,
        hi: datetime | None = None,
        kinds: Iterable[ProvenBy] | None = None,
    ) -> list[Interval]:
        """The union of `shop`'s proven stretches (of `kinds`, default all) reaching into `[lo, hi)`."""
        wanted = None if kinds is None else set(kinds)
        rows = await self.coverage(shop, lo, hi)
        return normalize(c.interval for c in rows if wanted is None or c.proven_by in wanted)

    async def gaps(self, shop: str, lo: datetime, hi: datetime) -> list[Interval]:
        """What is not proven in `[lo, hi)`."""
        return gaps(await self.intervals(shop, lo, hi), lo, hi)

    async def covered_end(self, shop: str, kind: ProvenBy | None = None) -> datetime | None:
        """Where the newest proven stretch (of `kind`, default any) ends."""
        value: Any = await guarded(
            "reading coverage",
            lambda: self._pool.fetchval(sql.SELECT_COVERAGE_END, shop, None if kind is None else kind.value),
        )
        return value if isinstance(value, datetime) else None

    async def sync_from(self, shop: str) -> datetime | None:
        """Where `shop`'s ledger begins (None: the shop is new to the service)."""
        value: Any = await guarded(
            "reading sync_shops", lambda: self._pool.fetchval(sql.SELECT_SYNC_SHOP, shop)
        )
        return value if isinstance(value, datetime) else None

    async def register_shop(self, shop: str, sync_from: datetime) -> datetime:
        """Start `shop`'s ledger at `sync_from` unless it already has one; returns where it begins."""

        async def write() -> Any:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(sql.INSERT_SYNC_SHOP, shop, sync_from)
                return await conn.fetchval(sql.SELECT_SYNC_SHOP, shop)

        value = await guarded("registering a shop", write)
        assert isinstance(value, datetime)
        return value
