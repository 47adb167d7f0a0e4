"""`InitialLoads` over PostgreSQL (`initial_loads`, `initial_load_parts`, with the load's gap report and
the shop's `sync_shops` row)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from common.intervals import Interval
from store import reconciler_sql as sql
from store.errors import guarded
from store.gap_reports import Cause
from store.initial_loads import LoadPart, LoadState
from store.pooled import DEFAULT_ACQUIRE_SECONDS, Pooled


class PgInitialLoads:
    def __init__(
        self, pool: asyncpg.Pool, replica: str, *, acquire_timeout: float = DEFAULT_ACQUIRE_SECONDS
    ) -> None:
        self._pool = Pooled(pool, acquire_timeout)  # every wait for a connection bounded
        self.replica = replica  # who opens the load's gap report

    async def state(self, shop: str) -> LoadState | None:
        row = await guarded(
            "reading an initial load", lambda: self._pool.fetchrow(sql.SELECT_INITIAL_LOAD, shop)
        )
        if row is None:
            return None
        return LoadState(
            row["shop"],
            row["since"],
            row["until"],
            row["method"],
            row["state"],
            row["trades"],
            row["report_id"],
        )

    async def plan(
        self,
        shop: str,
        *,
        since: datetime,
        until: datetime,
        method: str,
        parts: Sequence[Interval],
        at: datetime,
    ) -> None:
        async def write() -> None:
            async with self._pool.acquire() as conn, conn.transaction():
                report = await conn.fetchrow(
                    sql.INSERT_REPORT, shop, Cause.INITIAL_LOAD.value, since, at, at, self.replica, None
                )
                assert report is not None
                await conn.execute(sql.INSERT_INITIAL_LOAD, shop, since, until, method, report["id"])
                await _insert_parts(conn, shop, parts, method)
                await conn.execute(sql.INSERT_SYNC_SHOP, shop, since)

        await guarded("planning an initial load", write)

    async def parts(self, shop: str) -> list[LoadPart]:
        rows = await guarded("reading initial load parts", lambda: self._pool.fetch(sql.SELECT_PARTS, shop))
        return [
            LoadPart(r["part_start"], r["part_end"], r["method"], r["task_id"], r["state"], r["trades"])
            for r in rows
        ]

    async def start_part(self, shop: str, part_start: datetime, task_id: int) -> None:
        await guarded(
            "recording a TOPATS task", lambda: self._pool.execute(sql.START_PART, shop, part_start, task_id)
        )

    async def finish_part(self, shop: str, part_start: datetime, trades: int) -> None:
        await guarded(
            "recording an initial load part",
            lambda: self._pool.execute(sql.FINISH_PART, shop, part_start, trades),
        )

    async def replan(self, shop: str, method: str, parts: Sequence[Interval]) -> None:
        async def write() -> None:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(sql.DELETE_UNFINISHED_PARTS, shop)
                await conn.execute(sql.SET_INITIAL_LOAD_METHOD, shop, method)
                await _insert_parts(conn, shop, parts, method)

        await guarded("replanning an initial load", write)

    async def finish(self, shop: str) -> None:
        await guarded("finishing an initial load", lambda: self._pool.execute(sql.FINISH_INITIAL_LOAD, shop))


async def _insert_parts(conn: Any, shop: str, parts: Sequence[Interval], method: str) -> None:
    for part in parts:
        await conn.execute(sql.INSERT_PART, shop, part.start, part.end, method)
