"""The reconciler's storage over PostgreSQL, assembled from one `PgStore` (and its pool)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from store import reconciler_sql as sql
from store.errors import guarded
from store.pg import PgStore
from store.pg_coverage import PgCoverageLedger
from store.pg_lines import load_lines
from store.pg_loads import PgInitialLoads
from store.pg_reports import PgGapReports
from store.pg_unresolved import PgUnresolved
from store.pooled import Pooled
from store.ports import ReconcilerStore
from store.types import ApplyResult, LinesLoaded, StoredVersion
from store.unresolved import TradeDebt
from taobao.models import Trade


class PgTrades:
    """`ReconcilerTrades`: `PgStore`'s guarded upsert, dead letters and unresolved trades, and the
    backfill's lookups."""

    def __init__(self, store: PgStore) -> None:
        self._store = store
        self._connections = Pooled(store.pool, store.limits.acquire)

    async def apply_trades(self, trades: Sequence[Trade], *, source: str) -> ApplyResult:
        # guarded: the store passes some errors of a killed connection on unwrapped.
        return await guarded("applying trades", lambda: self._store.apply_trades(trades, source=source))

    async def load_lines(self, lines: Sequence[bytes], *, source: str) -> LinesLoaded | None:
        return await load_lines(self._connections, lines, source=source, channel=self._store.notify_channel)

    async def dead_letter(
        self,
        *,
        source: str,
        reason: str,
        payload: bytes | str,
        tid: int | None = None,
        shop: str | None = None,
    ) -> None:
        await self._store.dead_letter(source=source, reason=reason, payload=payload, tid=tid, shop=shop)

    async def record_unresolved(
        self, debt: TradeDebt, *, at: datetime, delay: Callable[[int], float], history: bool
    ) -> int:
        return await self._store.record_unresolved(debt, at=at, delay=delay, history=history)

    async def existing_tids(self, tids: Sequence[int]) -> set[int]:
        rows = await guarded(
            "reading stored tids", lambda: self._connections.fetch(sql.SELECT_EXISTING_TIDS, list(tids))
        )
        return {r["tid"] for r in rows}

    async def settled_versions(self, tids: Sequence[int]) -> dict[int, StoredVersion]:
        rows = await guarded(
            "reading stored versions",
            lambda: self._store.pool.fetch(sql.SELECT_SETTLED_VERSIONS, list(tids)),
        )
        return {r["tid"]: StoredVersion(r["modified"], r["fetched_at"]) for r in rows}

    async def confirm_reads(self, trades: Sequence[Trade]) -> None:
        read = [t for t in trades if t.modified is not None and t.fetched_at is not None]
        if not read:
            return
        args = ([t.tid for t in read], [t.modified for t in read], [t.fetched_at for t in read])
        await guarded("confirming reads", lambda: self._store.pool.execute(sql.CONFIRM_READS, *args))

    async def stored_in_window(
        self,
        shop: str,
        start: datetime,
        end: datetime,
        *,
        created_from: datetime,
        types: Sequence[str] | None,
        limit: int,
    ) -> list[tuple[int, datetime]]:
        rows = await guarded(
            "looking for list lag",
            lambda: self._connections.fetch(
                sql.SELECT_STORED_IN_WINDOW,
                shop,
                start,
                end,
                created_from,
                None if types is None else list(types),
                limit,
            ),
        )
        return [(r["tid"], r["modified"]) for r in rows]


def pg_reconciler_store(store: PgStore, *, replica: str) -> ReconcilerStore:
    """The reconciler's storage over `store`'s pool; `replica` opens and works on the reports."""
    pool, acquire = store.pool, store.limits.acquire
    return ReconcilerStore(
        coverage=PgCoverageLedger(pool, acquire_timeout=acquire),
        reports=PgGapReports(pool, replica, acquire_timeout=acquire),
        loads=PgInitialLoads(pool, replica, acquire_timeout=acquire),
        trades=PgTrades(store),
        unresolved=PgUnresolved(pool, acquire_timeout=acquire),
    )
