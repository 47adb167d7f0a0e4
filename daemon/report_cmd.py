"""`order-sync report [--json | --html PATH] [--last N] [--shop NICK]`: the gap reports on-call reads.

A table on the terminal by default; `--json` for machines; `--html PATH` writes one self-contained page
(no scripts, nothing fetched) with a timeline per shop: when the stream was up, what the ledger holds
as proven and by what, each gap and its recovery. Each report says whether it is recovered, has its
data in and only waits for proof, or may be missing data (`reconciler.report_view`). The daemon serves
the same page at `/reports` and the JSON at `/reports.json`. Reads only the database (--database-url,
or DATABASE_URL from the environment or the --env-file; SYNC_SAFETY_LAG_SECONDS as the daemon has it)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import asyncpg

from common.errors import OrderSyncError
from common.exit_codes import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from daemon.report_data import MAX_LAST, ReportQuery, load
from daemon.settings import ReportSettings, add_env_file_option, database_overrides, settings_or_exit
from reconciler.report_page import page
from reconciler.report_view import table, to_json
from store.errors import DATABASE_ERRORS


def configure(parser: argparse.ArgumentParser) -> None:
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true", help="print JSON instead of a table")
    shape.add_argument("--html", metavar="PATH", help="write a self-contained HTML page with timelines")
    parser.add_argument(
        "--last",
        type=int,
        default=20,
        metavar="N",
        help=f"the N newest reports (default 20, at most {MAX_LAST})",
    )
    parser.add_argument("--shop", default=None, help="only this seller nick")
    parser.add_argument("--database-url", default=None, help="PostgreSQL DSN (default: DATABASE_URL)")
    add_env_file_option(parser)


def run(args: argparse.Namespace) -> int:
    settings = settings_or_exit(ReportSettings, args.env_file, **database_overrides(args.database_url))
    if isinstance(settings, int):
        return settings
    if not 1 <= args.last <= MAX_LAST:
        print(f"order-sync report: --last must be between 1 and {MAX_LAST}", file=sys.stderr)
        return EXIT_USAGE
    try:
        output = asyncio.run(render(settings, args))
    except (OrderSyncError, *DATABASE_ERRORS) as exc:
        print(f"order-sync report: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.html:
        Path(args.html).write_text(output, encoding="utf-8")
        print(f"wrote {args.html}")
    else:
        print(output)
    return EXIT_OK


async def render(settings: ReportSettings, args: argparse.Namespace) -> str:
    async with asyncpg.create_pool(
        settings.dsn(), min_size=1, max_size=2, server_settings=settings.server_settings()
    ) as pool:
        data = await load(
            pool,
            ReportQuery(args.last, args.shop),
            safety_lag_seconds=settings.sync_safety_lag_seconds,
        )
    if args.json:
        return to_json(data)
    return page(data) if args.html else table(data)
