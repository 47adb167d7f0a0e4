"""`CoverageLedger` over PostgreSQL (tables `coverage` and `sync_shops`). A proof leaves out the stretches
the shop's unresolved trades belong to (`store.unresolved`); `cut` takes such a stretch out of what is
proven already. Both run under the shop's ledger lock."""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import datetime
from typing import Any

import asyncpg

from common.intervals import Interval
from store import reconciler_sql as sql
from store.coverage import Coverage, Fence, ProvenBy
from store.errors import guarded
from store.pooled import DEFAULT_ACQUIRE_SECONDS, Pooled
from store.unresolved import without

logger = logging.getLogger(__name__)

_FAR_PAST = datetime.fromisoformat("1970-01-01T00:00:00+00:00")
_FAR_FUTURE = datetime.fromisoformat("9999-01-01T00:00:00+00:00")


class PgCoverageLedger:
    def __init__(self, pool: asyncpg.Pool, *, acquire_timeout: float = DEFAULT_ACQUIRE_SECONDS) -> None:
        self._pool = Pooled(pool, acquire_timeout)  # every wait for a connection bounded

    async def prove(
        self, shop: str, interval: Interval, proven_by: ProvenBy, *, fence: Fence | None = None
    ) -> None:
        async def write() -> None:
            async with self._pool.acquire() as conn, conn.transaction():
                # Serialises the shop's ledger writes across replicas (released at commit).
                await conn.execute(sql.LOCK_SHOP, shop)
                if fence is not None:
                    await fence(conn, shop)
                holds = await conn.fetch(sql.SELECT_HOLDS, shop, interval.start, interval.end)
                held = [Interval(r["belongs_from"], r["belongs_until"]) for r in holds]
                for part in without(interval, held):
                    await _merge(conn, shop, part, proven_by)

        await guarded("recording coverage", write)
        logger.debug(
            "proven %s .. %s by %s",
            interval.start.isoformat(),
            interval.end.isoformat(),
            proven_by.value,
            extra={"action": "coverage_proven", "shop": shop},
        )

    async def withdraw(self, shop: str, interval: Interval, kinds: Collection[ProvenBy]) -> bool:
        async def write() -> bool:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(sql.LOCK_SHOP, shop)
                rows = await conn.fetch(
                    sql.WITHDRAW_COVERAGE, shop, interval.start, interval.end, [k.value for k in kinds]
                )
                for row in rows:
                    kept = Interval(row["interval_start"], row["interval_end"])
                    for part in without(kept, [interval]):
                        await conn.execute(sql.INSERT_COVERAGE, shop, part.start, part.end, row["proven_by"])
                return bool(rows)

        withdrawn = await guarded("withdrawing coverage", write)
        if withdrawn:
            logger.warning(
                "proof withdrawn for %s .. %s: it was read under a list lag later measured longer",
                interval.start.isoformat(),
                interval.end.isoformat(),
                extra={"action": "coverage_withdrawn", "shop": shop},
            )
        return withdrawn

    async def coverage(
        self, shop: str, lo: datetime | None = None, hi: datetime | None = None
    ) -> list[Coverage]:
        rows = await guarded(
            "reading coverage",
            lambda: self._pool.fetch(sql.SELECT_COVERAGE, shop, lo or _FAR_PAST, hi or _FAR_FUTURE),
        )
        return [
            Coverage(Interval(r["interval_start"], r["interval_end"]), ProvenBy(r["proven_by"])) for r in rows
        ]

    async def covered_end(self, shop: str, kind: ProvenBy | None = None) -> datetime | None:
        value: Any = await guarded(
            "reading coverage",
            lambda: self._pool.fetchval(sql.SELECT_COVERAGE_END, shop, None if kind is None else kind.value),
        )
        return value if isinstance(value, datetime) else None

    async def sync_from(self, shop: str) -> datetime | None:
        value: Any = await guarded(
            "reading sync_shops", lambda: self._pool.fetchval(sql.SELECT_SYNC_SHOP, shop)
        )
        return value if isinstance(value, datetime) else None

    async def register_shop(self, shop: str, sync_from: datetime) -> datetime:
        async def write() -> Any:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(sql.INSERT_SYNC_SHOP, shop, sync_from)
                return await conn.fetchval(sql.SELECT_SYNC_SHOP, shop)

        value = await guarded("registering a shop", write)
        assert isinstance(value, datetime)
        return value


async def _merge(conn: Any, shop: str, interval: Interval, proven_by: ProvenBy) -> None:
    rows = await conn.fetch(sql.TAKE_MERGEABLE, shop, proven_by.value, interval.start, interval.end)
    start = min([interval.start, *(r["interval_start"] for r in rows)])
    end = max([interval.end, *(r["interval_end"] for r in rows)])
    await conn.execute(sql.INSERT_COVERAGE, shop, start, end, proven_by.value)


async def cut(conn: Any, shop: str, hole: Interval) -> None:
    """Take `hole` out of `shop`'s proven stretches, on a connection inside a transaction that holds the
    shop's ledger lock (`sql.LOCK_SHOP`)."""
    rows = await conn.fetch(sql.CUT_COVERAGE, shop, hole.start, hole.end)
    for row in rows:
        kept = Interval(row["interval_start"], row["interval_end"])
        for part in without(kept, [hole]):
            await conn.execute(sql.INSERT_COVERAGE, shop, part.start, part.end, row["proven_by"])
    if rows:
        logger.warning(
            "proof withdrawn for %s .. %s: an unresolved trade belongs there",
            hole.start.isoformat(),
            hole.end.isoformat(),
            extra={"action": "coverage_cut", "shop": shop},
        )
