"""Gap-recovery reports: one per gap, which is also the reconciler's unit of work. This module holds the
records and the interface the reconciler reaches them through; `store.pg_reports` implements it over
PostgreSQL (`gap_reports`, `gap_report_trades`, `stream_connections`) and `store.memory` in memory.

A report is opened when a gap is detected (restart, disconnect, silence, sweep, manual, initial load),
its window is read in one or more passes (each adds its counts and moves `progress_until`), and it is
closed `recovered`, `partial` (some window failed for a reason worth retrying; it stays open) or
`failed` (a reason retrying cannot fix: an ISV error, a rejected session). The trades a report brought
in or brought up to date are listed with it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any, Protocol

from common.intervals import Interval


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
    """What one pass over (part of) a report's window did; added to the report."""

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
    # Listed trades not fetched: the list showed no `modified` newer than the stored one.
    fetches_skipped: int = 0
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
    fetches_skipped: int = 0  # listed trades not fetched: stored at the listed `modified` already

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


class GapReports(Protocol):
    """Reports and the TMC connections of one replica (`replica`: who opens and works on them)."""

    replica: str

    async def create(
        self,
        shop: str,
        cause: Cause,
        window: Interval,
        *,
        detected_at: datetime,
        progress_until: datetime | None = None,
    ) -> GapReport: ...

    async def get(self, report_id: int) -> GapReport:
        """Raises LookupError for an unknown id."""
        ...

    async def open_reports(self, shop: str) -> list[GapReport]:
        """Reports of `shop` without an outcome or `partial`, oldest first."""
        ...

    async def unrecovered_windows(self, shop: str) -> list[Interval]:
        """Windows of `shop`'s reports that are not recovered (open, or failed for good)."""
        ...

    async def recent(self, limit: int, shop: str | None = None) -> list[GapReport]:
        """The `limit` newest reports (of `shop`), newest first."""
        ...

    async def extend(self, report_id: int, end: datetime) -> None:
        """Push the report's window end out to `end` (never in)."""
        ...

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
        """Add one pass's counts and trades, atomically: counters add up (a trade recorded by an earlier
        pass of the report is counted once and keeps its first kind), `progress_until`/`fresh_until`
        only move forward, `started_at` is set once, and this replica is appended to `replicas` when
        the work moved to it."""
        ...

    async def finish(self, report_id: int, outcome: Outcome, reason: str | None, at: datetime) -> None:
        """Set the outcome; `finished_at` stays empty for `partial` (the report is still open)."""
        ...

    async def trades(self, report_id: int) -> list[RecoveredTrade]:
        """The trades the report brought in or up to date, by tid."""
        ...

    async def connection_opened(self, at: datetime) -> int: ...

    async def connection_closed(self, connection_id: int, at: datetime, reason: str) -> None: ...

    async def connections(self, since: datetime) -> list[StreamConnection]:
        """Connections still up at `since` or opened after it, by connect time."""
        ...
