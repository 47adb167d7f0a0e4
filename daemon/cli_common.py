"""What the reconciler's commands (backfill, initial-load) share: the options about one shop, reading
times from the command line, a reconciler that runs outside the daemon (no TMC session), and the gap
report they print."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from common.errors import OrderSyncError
from common.exit_codes import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from daemon.app import make_reconciler_config, open_parts, open_registry
from daemon.report_data import slack
from daemon.settings import Settings, add_env_file_option, settings_or_exit
from reconciler.reconciler import Reconciler
from reconciler.report_view import ReportData, table
from store.gap_reports import GapReport, Outcome
from store.pg_reconciler import pg_reconciler_store
from taobao.timefmt import GMT8

TIME_HELP = "'2026-11-11 00:00:00' (GMT+8, as TOP writes it), '2026-11-11', ISO 8601 with an offset, or 'now'"


def parse_when(text: str) -> datetime:
    """A moment from the command line; times without an offset are GMT+8 (Taobao's clock)."""
    value = text.strip()
    if value.lower() == "now":
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (use {TIME_HELP})") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=GMT8)


class ShopNotServed(OrderSyncError):
    """The command's --shop is neither in TAOBAO_SHOPS nor active in the shop registry."""


@contextlib.asynccontextmanager
async def standalone(settings: Settings, shop: str | None = None) -> AsyncIterator[Reconciler]:
    """A reconciler over freshly opened parts (migrating first), for a one-off command, over the shops
    the daemon would serve (the registry's active ones with SYNC_SECRET_KEY, whose sessions it
    unseals; TAOBAO_SHOPS without); ShopNotServed when `shop` is not one of them."""
    async with open_parts(settings) as (store, client):
        book = (await open_registry(settings, store)).book
        if shop is not None and shop not in book:
            where = "active in the shop registry" if settings.sync_secret_key else "in TAOBAO_SHOPS"
            raise ShopNotServed(f"shop {shop!r} is not {where}")
        config = make_reconciler_config(settings)
        yield Reconciler(
            config=config,
            client=client,
            storage=pg_reconciler_store(store, replica=config.replica),
            shops=book,
        )


def add_shop_options(parser: argparse.ArgumentParser) -> None:
    """--shop, --json and --env-file."""
    parser.add_argument(
        "--shop", required=True, help="the seller nick, as in TAOBAO_SHOPS or the shop registry"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    add_env_file_option(parser)


def shop_settings_or_exit(args: argparse.Namespace, command: str) -> Settings | int:
    """The settings, when they are valid and may serve `--shop`; otherwise the exit code after saying
    why. With SYNC_SECRET_KEY the shop may be in the registry: `standalone` looks there."""
    settings = settings_or_exit(Settings, args.env_file)
    if isinstance(settings, int):
        return settings
    if settings.sync_secret_key is None and args.shop not in settings.shop_sessions():
        print(f"order-sync {command}: shop {args.shop!r} is not in TAOBAO_SHOPS", file=sys.stderr)
        return EXIT_USAGE
    return settings


def failed_exit(command: str, exc: OrderSyncError) -> int:
    """Say why `command` stopped; a shop it does not serve is a usage error (nothing was read)."""
    print(f"order-sync {command}: {exc}", file=sys.stderr)
    return EXIT_USAGE if isinstance(exc, ShopNotServed) else EXIT_FAILED


async def report_data(reconciler: Reconciler, report: GapReport, settings: Settings) -> ReportData:
    """The command's report with what its verdict needs: the shop's ledger over its window and the
    shop's unresolved trades."""
    shop, start, end = report.shop, report.window_start, report.window_end
    owed = [row.belongs for row in await reconciler.unresolved.within(shop, start, end)]
    return ReportData(
        generated_at=datetime.now(UTC),
        reports=[report],
        coverage={shop: await reconciler.ledger.coverage(shop, start, end)},
        unresolved=await reconciler.unresolved.counts(),
        owed={shop: owed},
        slack=slack(settings.sync_safety_lag_seconds),
    )


def print_report(data: ReportData, *, as_json: bool) -> int:
    """Print the command's gap report (`data` holds just it), with its verdict; the exit code is
    EXIT_FAILED when part of its window failed."""
    [report] = data.reports
    if as_json:
        print(json.dumps(report.to_json() | data.verdict(report).to_json(), ensure_ascii=False, indent=2))
    else:
        print(table(data))
    return EXIT_FAILED if report.outcome in (Outcome.PARTIAL.value, Outcome.FAILED.value) else EXIT_OK
