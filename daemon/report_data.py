"""What `order-sync report` and the daemon's `/reports` pages show, read from the database in one place
so the terminal, the JSON and the page agree: the newest gap reports, the TMC connections beside them,
each shop's ledger (the timeline, and what tells a stretch nobody read from one the stream proved), and
the shops' unresolved trades (`store.pg_unresolved`: how many, and which reach into a report's window).
Formatting is `reconciler.report_view`'s."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from reconciler.report_page import time_range
from reconciler.report_view import SECOND, ReportData
from store.gap_reports import Cause
from store.pg_coverage import PgCoverageLedger
from store.pg_reports import PgGapReports
from store.pg_unresolved import PgUnresolved

MAX_LAST = 500  # reports per request at most: the page stays readable and the query cheap


@dataclass(frozen=True, slots=True)
class ReportQuery:
    last: int = 20  # the newest N reports
    shop: str | None = None  # of this seller nick only


def slack(safety_lag_seconds: float) -> timedelta:
    """The unread tail every fresh read leaves (it stops at now - SYNC_SAFETY_LAG_SECONDS, in whole
    seconds): no hole."""
    return timedelta(seconds=safety_lag_seconds) + SECOND


async def load(
    pool: asyncpg.Pool, query: ReportQuery, *, safety_lag_seconds: float, now: datetime | None = None
) -> ReportData:
    now = now or datetime.now(UTC)
    reports_store = PgGapReports(pool, replica="report")
    reports = await reports_store.recent(query.last, query.shop)
    starts = [r.window_start for r in reports if r.cause != Cause.INITIAL_LOAD.value]
    connections = await reports_store.connections(min(starts, default=now - timedelta(days=1)))
    span = time_range(reports, connections, now)
    ledger, unresolved = PgCoverageLedger(pool), PgUnresolved(pool)
    coverage, owed = {}, {}
    for shop in sorted({r.shop for r in reports} | ({query.shop} if query.shop else set())):
        # The timeline's span, and the whole window of every open report (whether it was read).
        lo = min([span.start, *(r.window_start for r in reports if r.shop == shop and r.is_open)])
        coverage[shop] = await ledger.coverage(shop, lo, span.end)
        windows = [(r.window_start, r.window_end) for r in reports if r.shop == shop]
        if windows:
            rows = await unresolved.within(shop, min(w[0] for w in windows), max(w[1] for w in windows))
            owed[shop] = [row.belongs for row in rows]
    return ReportData(
        generated_at=now,
        reports=reports,
        connections=connections,
        coverage=coverage,
        unresolved=await unresolved.counts(),
        owed=owed,
        slack=slack(safety_lag_seconds),
        shops=[query.shop] if query.shop else [],
    )
