"""`order-sync initial-load --shop NICK [--days 90]`: load a shop's history (TOPATS, or sold.get day by day
when TOPATS is unavailable) up to yesterday 23:59:59 GMT+8, then the increment from today 00:00:00 on,
and print its gap report. The daemon does the same by itself for a shop it has never seen.

Interrupted, it resumes where it stopped (finished parts are kept); a load that is already done is
not repeated. Progress goes to the terminal as one updating line, or to the log when not a terminal."""

from __future__ import annotations

import argparse
import asyncio
import sys

from common.errors import OrderSyncError
from common.exit_codes import EXIT_OK, EXIT_USAGE
from daemon.cli_common import (
    add_shop_options,
    failed_exit,
    print_report,
    report_data,
    shop_settings_or_exit,
    standalone,
)
from daemon.logs import configure_logging
from reconciler.progress import Progress
from reconciler.report_view import ReportData


def configure(parser: argparse.ArgumentParser) -> None:
    add_shop_options(parser)
    parser.add_argument(
        "--days",
        type=int,
        default=None,
        help="days of history before today, 1-90 (default SYNC_INITIAL_LOAD_DAYS, else 90)",
    )


def run(args: argparse.Namespace) -> int:
    settings = shop_settings_or_exit(args, "initial-load")
    if isinstance(settings, int):
        return settings
    days = args.days if args.days is not None else (settings.sync_initial_load_days or 90)
    if not 1 <= days <= 90:
        print("order-sync initial-load: --days must be between 1 and 90", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(settings.log_level, settings.log_format)

    async def main() -> ReportData | None:
        async with standalone(settings, args.shop) as reconciler:
            loader = reconciler.loader
            state = await loader.begin(args.shop, days)
            if state.done:
                print(f"{args.shop}: history already loaded ({state.trades:,} trades by {state.method})")
            progress = Progress.for_terminal(f"initial load of {args.shop}", shop=args.shop)
            state = await loader.run(args.shop, reconciler.session_of(args.shop), progress=progress)
            progress.done()
            if state.report_id is None:
                return None
            # Then the increment from today 00:00:00 (GMT+8) to now.
            report = await reconciler.process(await reconciler.reports.get(state.report_id), fresh=True)
            return await report_data(reconciler, report, settings)

    try:
        data = asyncio.run(main())
    except OrderSyncError as exc:
        return failed_exit("initial-load", exc)
    if data is None:
        return EXIT_OK
    return print_report(data, as_json=args.json)
