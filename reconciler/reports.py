"""Gap-recovery reports: one `gap_reports` row per gap, which is also the reconciler's unit of work.

A report is opened when a gap is detected (restart, disconnect, silence, sweep, manual, initial load),
its window is read in one or more passes (each adds its counts and moves `progress_until`), and it is
closed `recovered`, `partial` (some window failed for a reason worth retrying; it stays open) or
`failed` (a reason retrying cannot fix: an ISV error, a rejected session). The trades a report brought
in or brought up to date are listed in `gap_report_trades`.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from common.intervals import Interval
from reconciler import sql
from reconciler.ledger import guarded


class Cause(enum.StrEnum):
    RESTART = "restart"  # the process was down
    DISCONNECT = "disconnect"  # the TMC connection was down
    SILENCE = "silence"  # a shop that normally trades sent nothing for SYNC_SILENCE_SECONDS
    SWEEP = "sweep"  # the periodic sweep found changes the stream missed, or an unproven stretch
    MANUAL = "manual"  # `order-sync backfill`
    INITIAL_LOAD = "initial_load"  # a new shop's history and the increment after it


class Outcome(enum.StrEnum):
    RECOVERED = "recovered"
    PARTIAL = "partial"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class RecoveredTrade:
    tid: int
    modified: datetime | None
    kind: str  # "new" (not in the database before) or "changed" (stored, but older)
    push_loss: bool  # its change fell in a stretch the stream claimed


@dataclass(slots=True)
class PassCounts:
    """What one pass over (part of) a report's window did; added to the report row."""

    list_calls: int = 0
    fullinfo_calls: int = 0
    found: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    dead_letters: int = 0
    push_loss: int = 0
    windows_read: int = 0
    windows_failed: int = 0
    rejections: int = 0
    not_found: int = 0
    max_lag_seconds: float | None = None
    recovered: list[RecoveredTrade] = field(default_factory=list)
    # False for bulk loads: a row per trade of a 100k-trade history would say nothing new.
    keep_trades: bool = True

    def add(self, other: PassCounts) -> None:
        for f in fields(self):
            if f.name in ("max_lag_seconds", "recovered", "keep_trades"):
                continue
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        self.recovered += other.recovered
        self.note_lag(other.max_lag_seconds)

    def note_lag(self, seconds: float | None) -> None:
        if seconds is not None and (self.max_lag_seconds is None or seconds > self.max_lag_seconds):
            self.max_lag_seconds = seconds

    @property
    def brought_in(self) -> int:
        return self.new + self.changed


@dataclass(frozen=True, slots=True)
class GapReport:
    id: int
    shop: str
    cause: str
    window_start: datetime
    window_end: datetime
    detected_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    list_calls: int
    fullinfo_calls: int
    trades_found: int
    trades_new: int
    trades_changed: int
    trades_unchanged: int
    dead_letters: int
    push_loss: int
    outcome: str | None
    reason: str | None
    replica: str | None
    progress_until: datetime | None
    fresh_until: datetime | None
    windows_read: int
    windows_failed: int
    rejections: int
    not_found: int
    overlap_seconds: float | None
    list_lag_seconds: float | None
    updated_at: datetime
    detected_by: str | None  # the replica that opened it; `replica` is the one that worked on it last
    replicas: tuple[str, ...]  # every replica that worked on it, in turn

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> GapReport:
        values = {f.name: row[f.name] for f in fields(cls)}
        values["replicas"] = tuple(values["replicas"] or ())
        return cls(**values)

    @property
    def is_open(self) -> bool:
        return self.outcome in (None, Outcome.PARTIAL.value)

    @property
    def proven_from(self) -> datetime:
        """Where the next proof window of this report starts."""
        return self.progress_until or self.window_start

    @property
    def provable_at(self) -> datetime | None:
        """An open report read as far as it can be for now (its proof waits for the lag horizon,
        now - max(safety lag, overlap), to pass its end): when that will be, from the overlap its last
        pass used. None once it has an outcome, or before its first pass."""
        if self.outcome is not None or self.overlap_seconds is None:
            return None
        return self.window_end + timedelta(seconds=self.overlap_seconds)

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.isoformat() if isinstance(value, datetime) else value
        out["duration_seconds"] = self.duration_seconds
        provable = self.provable_at
        out["provable_at"] = None if provable is None else provable.isoformat()
        return out


@dataclass(frozen=True, slots=True)
class StreamConnection:
    replica: str
    connected_at: datetime
    disconnected_at: datetime | None
    reason: str | None


class ReportStore:
    def __init__(self, pool: asyncpg.Pool, replica: str) -> None:
        self._pool = pool
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
        return GapReport.from_row(row)

    async def get(self, report_id: int) -> GapReport:
        row = await guarded("reading a gap report", lambda: self._pool.fetchrow(sql.SELECT_REPORT, report_id))
        if row is None:
            raise LookupError(f"no gap report {report_id}")
        return GapReport.from_row(row)

    async def open_reports(self, shop: str) -> list[GapReport]:
        rows = await guarded(
            "reading open gap reports", lambda: self._pool.fetch(sql.SELECT_OPEN_REPORTS, shop)
        )
        return [GapReport.from_row(r) for r in rows]

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
        return [GapReport.from_row(r) for r in rows]

    async def extend(self, report_id: int, end: datetime) -> None:
        """Push the report's window end out to `end` (an outage still going on, or just over)."""
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
        """Add one pass's counts and trades; move the progress marks forward (never back)."""

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
                )
                if counts.recovered:
                    await self._insert_trades(conn, report_id, counts.recovered)

        await guarded("recording a backfill pass", write)

    @staticmethod
    async def _insert_trades(conn: Any, report_id: int, trades: Sequence[RecoveredTrade]) -> None:
        await conn.execute(
            sql.INSERT_REPORT_TRADES,
            report_id,
            [t.tid for t in trades],
            [t.modified for t in trades],
            [t.kind for t in trades],
            [t.push_loss for t in trades],
        )

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
