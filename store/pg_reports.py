"""`GapReports` over PostgreSQL (`gap_reports`, `gap_report_trades`, `stream_connections`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from datetime import datetime
from typing import Any

import asyncpg

from common.intervals import Interval
from store import reconciler_sql as sql
from store.errors import guarded
from store.gap_reports import Cause, GapReport, Outcome, PassCounts, RecoveredTrade, StreamConnection
from store.pooled import DEFAULT_ACQUIRE_SECONDS, Pooled


def report_from_row(row: asyncpg.Record) -> GapReport:
    values = {f.name: row[f.name] for f in fields(GapReport)}
    values["replicas"] = tuple(values["replicas"] or ())
    return GapReport(**values)


class PgGapReports:
    def __init__(
        self, pool: asyncpg.Pool, replica: str, *, acquire_timeout: float = DEFAULT_ACQUIRE_SECONDS
    ) -> None:
        self._pool = Pooled(pool, acquire_timeout)  # every wait for a connection bounded
        self.replica = replica

    async def create(
        self,
        shop: str,
        cause: Cause,
        window: Interval,
        *,
        detected_at: datetime,
        progress_until: datetime | None = None,
    ) -> GapReport:
        row = await guarded(
            "opening a gap report",
            lambda: self._pool.fetchrow(
                sql.INSERT_REPORT,
                shop,
                cause.value,
                window.start,
                window.end,
                detected_at,
                self.replica,
                progress_until,
            ),
        )
        assert row is not None
        return report_from_row(row)

    async def get(self, report_id: int) -> GapReport:
        row = await guarded("reading a gap report", lambda: self._pool.fetchrow(sql.SELECT_REPORT, report_id))
        if row is None:
            raise LookupError(f"no gap report {report_id}")
        return report_from_row(row)

    async def open_reports(self, shop: str) -> list[GapReport]:
        rows = await guarded(
            "reading open gap reports", lambda: self._pool.fetch(sql.SELECT_OPEN_REPORTS, shop)
        )
        return [report_from_row(r) for r in rows]

    async def unrecovered_windows(self, shop: str) -> list[Interval]:
        rows = await guarded(
            "reading gap report windows", lambda: self._pool.fetch(sql.SELECT_UNRECOVERED_WINDOWS, shop)
        )
        return [
            Interval(r["window_start"], r["window_end"]) for r in rows if r["window_start"] < r["window_end"]
        ]

    async def recent(self, limit: int, shop: str | None = None) -> list[GapReport]:
        rows = await guarded(
            "reading gap reports", lambda: self._pool.fetch(sql.SELECT_RECENT_REPORTS, limit, shop)
        )
        return [report_from_row(r) for r in rows]

    async def extend(self, report_id: int, end: datetime) -> None:
        await guarded("extending a gap report", lambda: self._pool.execute(sql.EXTEND_REPORT, report_id, end))

    async def add_pass(
        self,
        report_id: int,
        counts: PassCounts,
        *,
        started_at: datetime,
        progress_until: datetime | None,
        fresh_until: datetime | None,
        overlap_seconds: float | None,
    ) -> None:
        async def write() -> None:
            async with self._pool.acquire() as conn, conn.transaction():
                new, changed = counts.new, counts.changed
                if counts.recovered:
                    # A trade brought in by an earlier pass of this report is counted once.
                    rows = await conn.fetch(
                        sql.SELECT_KNOWN_REPORT_TRADES, report_id, [t.tid for t in counts.recovered]
                    )
                    known = {r["tid"] for r in rows}
                    new -= sum(1 for t in counts.recovered if t.tid in known and t.kind == "new")
                    changed -= sum(1 for t in counts.recovered if t.tid in known and t.kind == "changed")
                await conn.execute(
                    sql.ADD_TO_REPORT,
                    report_id,
                    started_at,
                    counts.list_calls,
                    counts.fullinfo_calls,
                    counts.found,
                    new,
                    changed,
                    counts.unchanged,
                    counts.dead_letters,
                    counts.push_loss,
                    counts.windows_read,
                    counts.windows_failed,
                    counts.rejections,
                    counts.not_found,
                    progress_until,
                    fresh_until,
                    overlap_seconds,
                    counts.max_lag_seconds,
                    self.replica,
                    counts.fetches_skipped,
                )
                if counts.recovered:
                    await _insert_trades(conn, report_id, counts.recovered)

        await guarded("recording a backfill pass", write)

    async def finish(self, report_id: int, outcome: Outcome, reason: str | None, at: datetime) -> None:
        await guarded(
            "closing a gap report",
            lambda: self._pool.execute(sql.FINISH_REPORT, report_id, outcome.value, reason, at, self.replica),
        )

    async def trades(self, report_id: int) -> list[RecoveredTrade]:
        rows = await guarded(
            "reading a gap report's trades", lambda: self._pool.fetch(sql.SELECT_REPORT_TRADES, report_id)
        )
        return [RecoveredTrade(r["tid"], r["modified"], r["kind"], r["push_loss"]) for r in rows]

    # ---- stream connections (the timeline's "stream up" lane) -----------------------------------------

    async def connection_opened(self, at: datetime) -> int:
        value = await guarded(
            "recording a TMC connection",
            lambda: self._pool.fetchval(sql.INSERT_CONNECTION, self.replica, at),
        )
        return int(value)

    async def connection_closed(self, connection_id: int, at: datetime, reason: str) -> None:
        await guarded(
            "recording a TMC disconnect",
            lambda: self._pool.execute(sql.CLOSE_CONNECTION, connection_id, at, reason[:500]),
        )

    async def connections(self, since: datetime) -> list[StreamConnection]:
        rows = await guarded(
            "reading TMC connections", lambda: self._pool.fetch(sql.SELECT_CONNECTIONS, since)
        )
        return [
            StreamConnection(r["replica"], r["connected_at"], r["disconnected_at"], r["reason"]) for r in rows
        ]


async def _insert_trades(conn: Any, report_id: int, recovered: Sequence[RecoveredTrade]) -> None:
    # One row per tid (ON CONFLICT cannot touch a row twice in one statement): a trade a pass brought
    # in twice (changed again while its windows were read) keeps its first kind and its newest time.
    firsts: dict[int, RecoveredTrade] = {}
    for trade in recovered:
        kept = firsts.setdefault(trade.tid, trade)
        if kept.modified is None or (trade.modified is not None and trade.modified > kept.modified):
            firsts[trade.tid] = RecoveredTrade(kept.tid, trade.modified, kept.kind, kept.push_loss)
    trades = list(firsts.values())
    await conn.execute(
        sql.INSERT_REPORT_TRADES,
        report_id,
        [t.tid for t in trades],
        [t.modified for t in trades],
        [t.kind for t in trades],
        [t.push_loss for t in trades],
    )
