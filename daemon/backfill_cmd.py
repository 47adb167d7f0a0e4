"""`order-sync backfill --shop NICK --since T --until T`: read a window of one shop now, through the same
increment backfill the daemon uses, and print its gap report (cause `manual`).

The part of the window older than the lag horizon (now minus the larger of SYNC_SAFETY_LAG_SECONDS and
SYNC_OVERLAP_SECONDS) is proven; anything newer is read for freshness and left open, and the daemon
proves it once the horizon has passed it. Exit status: 0 when the window is recovered (or only waits
for the horizon), 1 when part of it failed, 2 for bad arguments or settings."""

from __future__ import annotations

import argparse
import asyncio
import sys

from common.errors import OrderSyncError
from common.exit_codes import EXIT_FAILED, EXIT_USAGE
from common.intervals import Interval
from daemon.cli_common import (
    TIME_HELP,
    add_shop_options,
    parse_when,
    print_report,
    report_data,
    shop_settings_or_exit,
    standalone,
)
from daemon.logs import configure_logging
from reconciler.report_view import ReportData


def configure(parser: argparse.ArgumentParser) -> None:
    add_shop_options(parser)
    parser.add_argument("--since", required=True, type=parse_when, help=f"window start: {TIME_HELP}")
    parser.add_argument("--until", required=True, type=parse_when, help=f"window end: {TIME_HELP}")


def run(args: argparse.Namespace) -> int:
    settings = shop_settings_or_exit(args, "backfill")
    if isinstance(settings, int):
        return settings
    if not args.since < args.until:
        print("order-sync backfill: --since must be before --until", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(settings.log_level, settings.log_format)

    async def main() -> ReportData:
        async with standalone(settings) as reconciler:
            report = await reconciler.backfill(args.shop, Interval(args.since, args.until))
            return await report_data(reconciler, report, settings)

    try:
        data = asyncio.run(main())
    except OrderSyncError as exc:
        print(f"order-sync backfill: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return print_report(data, as_json=args.json)
