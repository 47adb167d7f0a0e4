"""`order-sync report [--json | --html PATH] [--last N] [--shop NICK]`: the gap reports on-call reads.

A table on the terminal by default; `--json` for machines; `--html PATH` writes one self-contained page
(no scripts, nothing fetched) with a timeline per shop: when the stream was up, what the ledger holds
as proven and by what, each gap and its recovery. Reads only the database (--database-url, or
DATABASE_URL from the environment or the --env-file)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from common.errors import OrderSyncError
from common.exit_codes import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from daemon.settings import DatabaseSettings, add_env_file_option, database_overrides, settings_or_exit
from reconciler.report_view import ShopTimeline, page, table, time_range, to_json
from store.errors import DATABASE_ERRORS
from store.gap_reports import Cause
from store.pg_coverage import PgCoverageLedger
from store.pg_reports import PgGapReports


def configure(parser: argparse.ArgumentParser) -> None:
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true", help="print JSON instead of a table")
    shape.add_argument("--html", metavar="PATH", help="write a self-contained HTML page with timelines")
    parser.add_argument("--last", type=int, default=20, metavar="N", help="the N newest reports (default 20)")
    parser.add_argument("--shop", default=None, help="only this seller nick")
    parser.add_argument("--database-url", default=None, help="PostgreSQL DSN (default: DATABASE_URL)")
    add_env_file_option(parser)


def run(args: argparse.Namespace) -> int:
    settings = settings_or_exit(DatabaseSettings, args.env_file, **database_overrides(args.database_url))
    if isinstance(settings, int):
        return settings
    if args.last < 1:
        print("order-sync report: --last must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    try:
        output = asyncio.run(render(settings.dsn(), args))
    except (OrderSyncError, *DATABASE_ERRORS) as exc:
        print(f"order-sync report: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.html:
        Path(args.html).write_text(output, encoding="utf-8")
        print(f"wrote {args.html}")
    else:
        print(output)
    return EXIT_OK


async def render(dsn: str, args: argparse.Namespace) -> str:
    now = datetime.now(UTC)
    async with asyncpg.create_pool(dsn, min_size=1, max_size=2) as pool:
        reports_store = PgGapReports(pool, replica="report")
        reports = await reports_store.recent(args.last, args.shop)
        starts = [r.window_start for r in reports if r.cause != Cause.INITIAL_LOAD.value]
        since = min(starts, default=now - timedelta(days=1))
        connections = await reports_store.connections(since)
        if args.json:
            return to_json(reports, connections, now)
        if not args.html:
            return table(reports)
        span = time_range(reports, connections, now)
        ledger = PgCoverageLedger(pool)
        shops = [args.shop] if args.shop else sorted({r.shop for r in reports})
        timelines = [
            ShopTimeline(
                shop,
                coverage=await ledger.coverage(shop, span.start, span.end),
                reports=[r for r in reports if r.shop == shop],
            )
            for shop in shops
        ]
        return page(timelines, connections, now)
