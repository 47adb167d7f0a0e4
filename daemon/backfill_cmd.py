"""`order-sync backfill --shop NICK --since T --until T`: read a window of one shop now, through the same
increment backfill the daemon uses, and print its gap report (cause `manual`).

The part of the window older than the lag horizon (now minus the larger of SYNC_SAFETY_LAG_SECONDS and
SYNC_OVERLAP_SECONDS) is proven; anything newer is read for freshness and left open, and the daemon
proves it once the horizon has passed it. On a terminal one line shows the windows read of those
planned, the trades found and how far the window is read; otherwise that goes to the log every 10 s.
Exit status: 0 when the window is recovered (or only waits
for the horizon), 1 when part of it failed, 2 for bad arguments or settings."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime

from common.errors import OrderSyncError
from common.exit_codes import EXIT_USAGE
from common.intervals import Interval
from daemon.app import make_reconciler_config
from daemon.cli_common import (
    TIME_HELP,
    add_shop_options,
    failed_exit,
    parse_when,
    print_report,
    report_data,
    shop_settings_or_exit,
    standalone,
)
from daemon.logs import configure_logging
from daemon.settings import Settings
from daemon.terminal import Terminal
from reconciler.plan import SECOND, plan_windows
from reconciler.progress import Progress
from reconciler.report_view import ReportData, clock
from store.gap_reports import Cause, GapReport, GapReports

POLL_SECONDS = 0.5


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
    terminal = Terminal(sys.stderr)  # the log and the progress line share it
    configure_logging(settings.log_level, settings.log_format, stream=terminal.log)
    window = Interval(args.since, args.until)

    async def main() -> ReportData:
        async with standalone(settings, args.shop) as reconciler:
            progress = WindowProgress(f"backfill of {args.shop}", out=terminal.status, shop=args.shop)
            progress.parts_total = planned_windows(settings, window)
            follower = asyncio.create_task(follow(reconciler.reports, args.shop, progress))
            try:
                report = await reconciler.backfill(args.shop, window)
            finally:
                follower.cancel()
                await asyncio.gather(follower, return_exceptions=True)
            show(progress, report)
            progress.done()
            return await report_data(reconciler, report, settings)

    try:
        data = asyncio.run(main())
    except OrderSyncError as exc:
        return failed_exit("backfill", exc)
    return print_report(data, as_json=args.json)


class WindowProgress(Progress):
    """The backfill's line: windows rather than parts, trades found rather than a rate."""

    def line(self) -> str:
        done, total = self.parts_done, self.parts_total
        return f"{self.label}: window {done}/{total} · {self.trades:,} trades found{self.stage}"


def planned_windows(settings: Settings, window: Interval) -> int:
    """How many increment windows the backfill will read, as planned now (a rejection that narrows a
    window adds some)."""
    config = make_reconciler_config(settings)
    return len(
        plan_windows(
            window,
            now=datetime.now(UTC),
            safety_lag=config.safety_lag,
            overlap=config.overlap,
            max_span=config.max_span,
        )
    )


async def follow(reports: GapReports, shop: str, progress: Progress) -> None:
    """Show the backfill's report as each window is recorded (they are, one by one, as they are read):
    the newest manual report of `shop` opened since this command started."""
    since = datetime.now(UTC) - SECOND
    while True:
        await asyncio.sleep(POLL_SECONDS)
        for report in await reports.recent(5, shop):
            if report.cause == Cause.MANUAL.value and report.detected_at >= since:
                show(progress, report)
                break


def show(progress: Progress, report: GapReport) -> None:
    """The progress line: windows read of those planned, trades found, and how far the window is read."""
    progress.parts_done = report.windows_read
    progress.parts_total = max(progress.parts_total, report.windows_read)
    read = max(report.progress_until or report.window_start, report.fresh_until or report.window_start)
    share = min(1.0, (read - report.window_start) / (report.window_end - report.window_start))
    brought = f" ({report.trades_new:,} new, {report.trades_changed:,} changed)"
    progress.update(
        trades=report.trades_found - progress.trades,
        stage=f"{brought} · read to {clock(read, datetime.now(UTC))} ({share:.0%})",
    )
