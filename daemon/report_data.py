"""What `order-sync report` and the daemon's `/reports` pages show, read from the database in one place
so the terminal, the JSON and the page agree: the newest gap reports, the TMC connections beside them,
each shop's ledger (the timeline, and what tells a stretch nobody read from one the stream proved), and
the shops' unresolved trades. Formatting is `reconciler.report_view`'s."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from reconciler.report_view import SECOND, ReportData, time_range
from store.gap_reports import Cause
from store.pg_coverage import PgCoverageLedger
from store.pg_reports import PgGapReports

MAX_LAST = 500  # reports per request at most: the page stays readable and the query cheap


@dataclass(frozen=True, slots=True)
class ReportQuery:
    last: int = 20  # the newest N reports
    shop: str | None = None  # of this seller nick only


def slack(safety_lag_seconds: float) -> timedelta:
    """The unread tail every fresh read leaves (it stops at now - SYNC_SAFETY_LAG_SECONDS, in whole
    seconds): no hole."""
    return timedelta(seconds=safety_lag_seconds) + SECOND


async def unresolved_trades(pool: asyncpg.Pool) -> dict[str, int]:
    """Per shop, the trades the service could not fetch or store yet. The hook for the store's record of
    them (docs/design.md#unresolved-trades-block-proof), which does not exist yet: until it does, no shop
    has any, and only a report's own dead letters count against it. The view already marks a shop's
    open reports "data may be missing" when this names it."""
    del pool
    return {}


async def load(
    pool: asyncpg.Pool, query: ReportQuery, *, safety_lag_seconds: float, now: datetime | None = None
) -> ReportData:
    now = now or datetime.now(UTC)
    reports_store = PgGapReports(pool, replica="report")
    reports = await reports_store.recent(query.last, query.shop)
    starts = [r.window_start for r in reports if r.cause != Cause.INITIAL_LOAD.value]
    connections = await reports_store.connections(min(starts, default=now - timedelta(days=1)))
    span = time_range(reports, connections, now)
    ledger = PgCoverageLedger(pool)
    coverage = {}
    for shop in sorted({r.shop for r in reports} | ({query.shop} if query.shop else set())):
        # The timeline's span, and the whole window of every open report (whether it was read).
        lo = min([span.start, *(r.window_start for r in reports if r.shop == shop and r.is_open)])
        coverage[shop] = await ledger.coverage(shop, lo, span.end)
    return ReportData(
        generated_at=now,
        reports=reports,
        connections=connections,
        coverage=coverage,
        unresolved=await unresolved_trades(pool),
        slack=slack(safety_lag_seconds),
        shops=[query.shop] if query.shop else [],
    )
