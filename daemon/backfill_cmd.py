"""`order-sync backfill --shop NICK --since T --until T`: read a window of one shop now, through the same
increment backfill the daemon uses, and print its gap report (cause `manual`).

The part of the window older than the lag horizon (now minus the larger of SYNC_SAFETY_LAG_SECONDS and
SYNC_OVERLAP_SECONDS) is proven; anything newer is read for freshness and left open, and the daemon
proves it once the horizon has passed it. Exit status: 0 when the window is recovered (or only waits
for the horizon), 1 when part of it failed, 2 for bad arguments or settings."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from common.errors import OrderSyncError
from common.exit_codes import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from common.intervals import Interval
from daemon.cli_common import (
    TIME_HELP,
    parse_when,
    settings_or_exit,
    standalone,
)
from daemon.logs import configure_logging
from reconciler.report_view import table
from store.gap_reports import GapReport, Outcome


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shop", required=True, help="the seller nick, as listed in TAOBAO_SHOPS")
    parser.add_argument("--since", required=True, type=parse_when, help=f"window start: {TIME_HELP}")
    parser.add_argument("--until", required=True, type=parse_when, help=f"window end: {TIME_HELP}")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--env-file", default=".env", help="settings file read after the environment")


def run(args: argparse.Namespace) -> int:
    settings = settings_or_exit(args.env_file, "backfill")
    if isinstance(settings, int):
        return settings
    if args.shop not in settings.shop_sessions():
        print(f"order-sync backfill: shop {args.shop!r} is not in TAOBAO_SHOPS", file=sys.stderr)
        return EXIT_USAGE
    if not args.since < args.until:
        print("order-sync backfill: --since must be before --until", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(settings.log_level, settings.log_format)

    async def main() -> GapReport:
        async with standalone(settings) as reconciler:
            return await reconciler.backfill(args.shop, Interval(args.since, args.until))

    try:
        report = asyncio.run(main())
    except OrderSyncError as exc:
        print(f"order-sync backfill: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(report.to_json(), ensure_ascii=False, indent=2) if args.json else table([report]))
    if report.outcome in (Outcome.PARTIAL.value, Outcome.FAILED.value):
        return EXIT_FAILED
    return EXIT_OK
