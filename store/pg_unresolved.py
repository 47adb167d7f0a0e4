"""`UnresolvedTrades` over PostgreSQL (table `unresolved_trades`): the read side, the redrive's due list
and the command's retry. Rows are written by `store.pg.PgStore.record_unresolved` and deleted by the
upsert that pays them (`store.upsert`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from common.intervals import Interval
from store import reconciler_sql as sql
from store.errors import guarded
from store.pooled import DEFAULT_ACQUIRE_SECONDS, Pooled
from store.unresolved import UnresolvedTrade


class PgUnresolved:
    def __init__(self, pool: asyncpg.Pool, *, acquire_timeout: float = DEFAULT_ACQUIRE_SECONDS) -> None:
        self._pool = Pooled(pool, acquire_timeout)  # every wait for a connection bounded

    async def rows(self, shop: str | None = None) -> list[UnresolvedTrade]:
        found = await guarded(
            "reading unresolved trades", lambda: self._pool.fetch(sql.SELECT_UNRESOLVED, shop)
        )
        return [_row(r) for r in found]

    async def due(self, shops: Sequence[str], now: datetime, limit: int) -> list[UnresolvedTrade]:
        found = await guarded(
            "reading unresolved trades",
            lambda: self._pool.fetch(sql.SELECT_UNRESOLVED_DUE, list(shops), now, limit),
        )
        return [_row(r) for r in found]

    async def within(self, shop: str, start: datetime, end: datetime) -> list[UnresolvedTrade]:
        found = await guarded(
            "reading unresolved trades",
            lambda: self._pool.fetch(sql.SELECT_UNRESOLVED_WITHIN, shop, start, end),
        )
        return [_row(r) for r in found]

    async def counts(self) -> dict[str, int]:
        found = await guarded("counting unresolved trades", lambda: self._pool.fetch(sql.COUNT_UNRESOLVED))
        return {r["shop"]: int(r["n"]) for r in found}

    async def retry_now(self, now: datetime, shop: str | None = None) -> int:
        status = await guarded(
            "scheduling unresolved trades", lambda: self._pool.execute(sql.RETRY_UNRESOLVED_NOW, now, shop)
        )
        return int(str(status).rsplit(" ", 1)[-1])


def _row(r: Any) -> UnresolvedTrade:
    return UnresolvedTrade(
        shop=r["shop"],
        tid=int(r["tid"]),
        source=r["source"],
        kind=r["kind"],
        reason=r["reason"],
        attempts=int(r["attempts"]),
        first_failure=r["first_failure"],
        last_failure=r["last_failure"],
        next_attempt=r["next_attempt"],
        belongs=Interval(r["belongs_from"], r["belongs_until"]),
        modified=r["modified"],
        stored=bool(r["stored"]),
    )
