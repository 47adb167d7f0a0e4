"""The reconciler's storage in memory (docs/design.md#storage-seam): the interfaces of `store.ports`
with the semantics of their PostgreSQL implementations, for unit tests of the reconciler's parts
without a database. `tests/store/test_reconciler_storage.py` runs the same assertions against both, so
this fake cannot drift from the real thing.

One `MemoryDatabase` plays the database: several replicas in one test share it, each through its own
`memory_reconciler_store(db, replica=...)`. Every operation runs without awaiting in between, so each is
atomic as the PostgreSQL transaction it mirrors; writes to one shop's ledger are serialised by a lock
per shop, and the fence runs inside it (its connection argument is the `MemoryDatabase`)."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import Collection, Sequence
from datetime import UTC, datetime

from common.intervals import Interval
from store.coverage import Coverage, Fence, ProvenBy
from store.errors import StoreError
from store.gap_reports import Cause, GapReport, Outcome, PassCounts, RecoveredTrade, StreamConnection
from store.initial_loads import LoadPart, LoadState
from store.memory_trades import MemoryTrades, MemoryUnresolved
from store.ports import ReconcilerStore
from store.unresolved import without


def _now() -> datetime:
    return datetime.now(UTC)


class MemoryDatabase:
    """The tables. Tests may read them directly (e.g. `db.trades.rows`, `db.coverage`)."""

    def __init__(self) -> None:
        self.trades = MemoryTrades()
        self.coverage: list[tuple[str, Coverage]] = []
        self.sync_shops: dict[str, datetime] = {}
        self.reports: dict[int, GapReport] = {}
        self.report_trades: dict[int, dict[int, RecoveredTrade]] = {}
        self.connections: dict[int, StreamConnection] = {}
        self.loads: dict[str, LoadState] = {}
        self.parts: dict[str, dict[datetime, LoadPart]] = {}
        self.ids = itertools.count(1)
        self.shop_locks: dict[str, asyncio.Lock] = {}
        self.trades.cut = self.cut

    def cut(self, shop: str, hole: Interval) -> None:
        """`store.pg_coverage.cut`: `hole` taken out of the shop's proven stretches."""
        kept: list[tuple[str, Coverage]] = []
        for row_shop, row in self.coverage:
            if row_shop != shop or row.interval.end <= hole.start or row.interval.start >= hole.end:
                kept.append((row_shop, row))
                continue
            kept += [(shop, Coverage(part, row.proven_by)) for part in without(row.interval, [hole])]
        self.coverage = kept

    def holds(self, shop: str, interval: Interval) -> list[Interval]:
        """The stretches `shop`'s unresolved trades belong to that reach into `interval`."""
        return [
            row.belongs
            for row in self.trades.unresolved.values()
            if row.shop == shop and row.belongs.end > interval.start and row.belongs.start < interval.end
        ]

    def new_report(
        self,
        shop: str,
        cause: Cause,
        window: Interval,
        *,
        detected_at: datetime,
        replica: str,
        progress_until: datetime | None,
    ) -> GapReport:
        report = GapReport(
            id=next(self.ids),
            shop=shop,
            cause=cause.value,
            window_start=window.start,
            window_end=window.end,
            detected_at=detected_at,
            started_at=None,
            finished_at=None,
            list_calls=0,
            fullinfo_calls=0,
            trades_found=0,
            trades_new=0,
            trades_changed=0,
            trades_unchanged=0,
            dead_letters=0,
            push_loss=0,
            outcome=None,
            reason=None,
            replica=replica,
            progress_until=progress_until,
            fresh_until=None,
            windows_read=0,
            windows_failed=0,
            rejections=0,
            not_found=0,
            overlap_seconds=None,
            list_lag_seconds=None,
            updated_at=_now(),
            detected_by=replica,
            replicas=(),
        )
        self.reports[report.id] = report
        return report

    def register_shop(self, shop: str, sync_from: datetime) -> datetime:
        return self.sync_shops.setdefault(shop, sync_from)


class MemoryCoverageLedger:
    def __init__(self, db: MemoryDatabase) -> None:
        self._db = db

    async def prove(
        self, shop: str, interval: Interval, proven_by: ProvenBy, *, fence: Fence | None = None
    ) -> None:
        db = self._db
        async with db.shop_locks.setdefault(shop, asyncio.Lock()):
            if fence is not None:
                await fence(db, shop)
            for part in without(interval, db.holds(shop, interval)):
                self._merge(shop, part, proven_by)

    def _merge(self, shop: str, interval: Interval, proven_by: ProvenBy) -> None:
        db = self._db

        def mergeable(row_shop: str, row: Coverage) -> bool:
            return (
                row_shop == shop
                and row.proven_by is proven_by
                and row.interval.start <= interval.end
                and row.interval.end >= interval.start
            )

        taken = [row.interval for row_shop, row in db.coverage if mergeable(row_shop, row)]
        start = min([interval.start, *(i.start for i in taken)])
        end = max([interval.end, *(i.end for i in taken)])
        db.coverage = [(s, row) for s, row in db.coverage if not mergeable(s, row)]
        db.coverage.append((shop, Coverage(Interval(start, end), proven_by)))

    async def withdraw(self, shop: str, interval: Interval, kinds: Collection[ProvenBy]) -> bool:
        db = self._db
        async with db.shop_locks.setdefault(shop, asyncio.Lock()):
            kept: list[tuple[str, Coverage]] = []
            withdrawn = False
            for row_shop, row in db.coverage:
                reaches = row.interval.start < interval.end and row.interval.end > interval.start
                if row_shop != shop or row.proven_by not in kinds or not reaches:
                    kept.append((row_shop, row))
                    continue
                withdrawn = True
                kept += [(shop, Coverage(part, row.proven_by)) for part in without(row.interval, [interval])]
            db.coverage = kept
        return withdrawn

    async def coverage(
        self, shop: str, lo: datetime | None = None, hi: datetime | None = None
    ) -> list[Coverage]:
        rows = [
            row
            for row_shop, row in self._db.coverage
            if row_shop == shop
            and (lo is None or row.interval.end > lo)
            and (hi is None or row.interval.start < hi)
        ]
        return sorted(rows, key=lambda row: row.interval.start)

    async def covered_end(self, shop: str, kind: ProvenBy | None = None) -> datetime | None:
        ends = [
            row.interval.end
            for row_shop, row in self._db.coverage
            if row_shop == shop and (kind is None or row.proven_by is kind)
        ]
        return max(ends, default=None)

    async def sync_from(self, shop: str) -> datetime | None:
        return self._db.sync_shops.get(shop)

    async def register_shop(self, shop: str, sync_from: datetime) -> datetime:
        return self._db.register_shop(shop, sync_from)


class MemoryGapReports:
    def __init__(self, db: MemoryDatabase, replica: str) -> None:
        self._db = db
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
        return self._db.new_report(
            shop, cause, window, detected_at=detected_at, replica=self.replica, progress_until=progress_until
        )

    async def get(self, report_id: int) -> GapReport:
        report = self._db.reports.get(report_id)
        if report is None:
            raise LookupError(f"no gap report {report_id}")
        return report

    async def open_reports(self, shop: str) -> list[GapReport]:
        return [r for r in self._by_id() if r.shop == shop and r.is_open]

    async def unrecovered_windows(self, shop: str) -> list[Interval]:
        return [
            Interval(r.window_start, r.window_end)
            for r in self._by_id()
            if r.shop == shop and r.outcome != Outcome.RECOVERED.value and r.window_start < r.window_end
        ]

    async def recent(self, limit: int, shop: str | None = None) -> list[GapReport]:
        return [r for r in reversed(self._by_id()) if shop is None or r.shop == shop][:limit]

    async def extend(self, report_id: int, end: datetime) -> None:
        report = await self.get(report_id)
        self._put(report, window_end=max(report.window_end, end))

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
        report = await self.get(report_id)
        listed = self._db.report_trades.setdefault(report_id, {})
        # A trade brought in by an earlier pass of this report is counted once.
        known = [t for t in counts.recovered if t.tid in listed]
        new = counts.new - sum(1 for t in known if t.kind == "new")
        changed = counts.changed - sum(1 for t in known if t.kind == "changed")
        for trade in counts.recovered:
            kept = listed.get(trade.tid)
            if kept is None:
                listed[trade.tid] = trade
            else:
                listed[trade.tid] = dataclasses.replace(kept, modified=_latest(kept.modified, trade.modified))
        self._put(
            report,
            started_at=report.started_at or started_at,
            list_calls=report.list_calls + counts.list_calls,
            fullinfo_calls=report.fullinfo_calls + counts.fullinfo_calls,
            trades_found=report.trades_found + counts.found,
            trades_new=report.trades_new + new,
            trades_changed=report.trades_changed + changed,
            trades_unchanged=report.trades_unchanged + counts.unchanged,
            dead_letters=report.dead_letters + counts.dead_letters,
            push_loss=report.push_loss + counts.push_loss,
            windows_read=report.windows_read + counts.windows_read,
            windows_failed=report.windows_failed + counts.windows_failed,
            rejections=report.rejections + counts.rejections,
            not_found=report.not_found + counts.not_found,
            progress_until=_latest(report.progress_until, progress_until),
            fresh_until=_latest(report.fresh_until, fresh_until),
            overlap_seconds=report.overlap_seconds if overlap_seconds is None else overlap_seconds,
            list_lag_seconds=_greatest(report.list_lag_seconds, counts.max_lag_seconds),
            fetches_skipped=report.fetches_skipped + counts.fetches_skipped,
            **self._worked_by(report),
        )

    async def finish(self, report_id: int, outcome: Outcome, reason: str | None, at: datetime) -> None:
        report = await self.get(report_id)
        self._put(
            report,
            outcome=outcome.value,
            reason=reason,
            finished_at=None if outcome is Outcome.PARTIAL else at,
            **self._worked_by(report),
        )

    async def trades(self, report_id: int) -> list[RecoveredTrade]:
        listed = self._db.report_trades.get(report_id, {})
        return [listed[tid] for tid in sorted(listed)]

    async def connection_opened(self, at: datetime) -> int:
        connection_id = next(self._db.ids)
        self._db.connections[connection_id] = StreamConnection(self.replica, at, None, None)
        return connection_id

    async def connection_closed(self, connection_id: int, at: datetime, reason: str) -> None:
        connection = self._db.connections.get(connection_id)
        if connection is not None:
            self._db.connections[connection_id] = dataclasses.replace(
                connection, disconnected_at=at, reason=reason[:500]
            )

    async def connections(self, since: datetime) -> list[StreamConnection]:
        up = [
            c for c in self._db.connections.values() if c.disconnected_at is None or c.disconnected_at > since
        ]
        return sorted(up, key=lambda c: c.connected_at)

    def _by_id(self) -> list[GapReport]:
        return [self._db.reports[report_id] for report_id in sorted(self._db.reports)]

    def _put(self, report: GapReport, **changes: object) -> None:
        self._db.reports[report.id] = dataclasses.replace(report, updated_at=_now(), **changes)  # type: ignore[arg-type]

    def _worked_by(self, report: GapReport) -> dict[str, object]:
        """`replica` is who worked on it last; `replicas` gains it when the work moved to it."""
        moved = not report.replicas or report.replicas[-1] != self.replica
        return {
            "replica": self.replica,
            "replicas": (*report.replicas, self.replica) if moved else report.replicas,
        }


class MemoryInitialLoads:
    def __init__(self, db: MemoryDatabase, replica: str) -> None:
        self._db = db
        self.replica = replica  # who opens the load's gap report

    async def state(self, shop: str) -> LoadState | None:
        return self._db.loads.get(shop)

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
        db = self._db
        if shop in db.loads:
            raise StoreError(f"planning an initial load failed: {shop} already has one")
        report = db.new_report(
            shop,
            Cause.INITIAL_LOAD,
            Interval(since, at),
            detected_at=at,
            replica=self.replica,
            progress_until=None,
        )
        db.loads[shop] = LoadState(shop, since, until, method, "running", 0, report.id)
        db.parts[shop] = {p.start: LoadPart(p.start, p.end, method, None, "pending", 0) for p in parts}
        db.register_shop(shop, since)

    async def parts(self, shop: str) -> list[LoadPart]:
        parts = self._db.parts.get(shop, {})
        return [parts[start] for start in sorted(parts)]

    async def start_part(self, shop: str, part_start: datetime, task_id: int) -> None:
        self._update_part(shop, part_start, state="started", task_id=task_id)

    async def finish_part(self, shop: str, part_start: datetime, trades: int) -> None:
        self._update_part(shop, part_start, state="done", trades=trades)

    async def replan(self, shop: str, method: str, parts: Sequence[Interval]) -> None:
        db = self._db
        kept = {start: p for start, p in db.parts.get(shop, {}).items() if p.done}
        kept.update({p.start: LoadPart(p.start, p.end, method, None, "pending", 0) for p in parts})
        db.parts[shop] = kept
        load = db.loads.get(shop)
        if load is not None:
            db.loads[shop] = dataclasses.replace(load, method=method)

    async def finish(self, shop: str) -> None:
        load = self._db.loads.get(shop)
        if load is not None:
            trades = sum(p.trades for p in self._db.parts.get(shop, {}).values())
            self._db.loads[shop] = dataclasses.replace(load, state="done", trades=trades)

    def _update_part(self, shop: str, part_start: datetime, **changes: object) -> None:
        parts = self._db.parts.get(shop, {})
        part = parts.get(part_start)
        if part is not None:
            parts[part_start] = dataclasses.replace(part, **changes)  # type: ignore[arg-type]


def memory_reconciler_store(db: MemoryDatabase | None = None, *, replica: str) -> ReconcilerStore:
    """The reconciler's storage over `db` (a new, empty one by default); `replica` opens and works on
    the reports."""
    db = db or MemoryDatabase()
    return ReconcilerStore(
        coverage=MemoryCoverageLedger(db),
        reports=MemoryGapReports(db, replica),
        loads=MemoryInitialLoads(db, replica),
        trades=db.trades,
        unresolved=MemoryUnresolved(db.trades),
    )


def _latest(kept: datetime | None, offered: datetime | None) -> datetime | None:
    """What `greatest(coalesce(kept, offered), offered)` keeps: a mark that only moves forward."""
    if offered is None:
        return kept
    return offered if kept is None else max(kept, offered)


def _greatest(kept: float | None, offered: float | None) -> float | None:
    """PostgreSQL's `greatest`, which ignores NULLs."""
    values = [v for v in (kept, offered) if v is not None]
    return max(values, default=None)
