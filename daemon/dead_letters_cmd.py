"""`order-sync dead-letters [--shop NICK] [--json] [--retry]`: the unresolved trades
(docs/design.md#unresolved-trades-block-proof): trades the service could not fetch or store, each
retried on its own backoff until a fetch stores it.

A table by default (shop, tid, reason, attempts, age, next attempt), `--json` for machines. `--retry`
makes them all (of `--shop`) due now: a running daemon picks them up on its next round; with the full
settings (TAOBAO_*), the command also runs one redrive pass itself and says what it did. Reads the
database given by --database-url, or DATABASE_URL from the environment or the --env-file."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime

import asyncpg

from common.errors import OrderSyncError
from common.exit_codes import EXIT_FAILED, EXIT_OK
from daemon.cli_common import standalone
from daemon.settings import (
    DatabaseSettings,
    Settings,
    SettingsError,
    add_env_file_option,
    database_overrides,
    load,
    settings_or_exit,
)
from store.errors import DATABASE_ERRORS
from store.pg_unresolved import PgUnresolved
from store.unresolved import UnresolvedTrade

COLUMNS = ("shop", "tid", "source", "reason", "attempts", "age", "next attempt")
REASON_WIDTH = 60


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shop", default=None, help="only this seller nick")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--retry",
        action="store_true",
        help="make them due now (a running daemon retries them on its next round); with the full "
        "settings, also run one redrive pass here",
    )
    parser.add_argument("--database-url", default=None, help="PostgreSQL DSN (default: DATABASE_URL)")
    add_env_file_option(parser)


def run(args: argparse.Namespace) -> int:
    settings = settings_or_exit(DatabaseSettings, args.env_file, **database_overrides(args.database_url))
    if isinstance(settings, int):
        return settings
    try:
        return asyncio.run(_main(settings, args))
    except (OrderSyncError, *DATABASE_ERRORS) as exc:
        print(f"order-sync dead-letters: {exc}", file=sys.stderr)
        return EXIT_FAILED


async def _main(settings: DatabaseSettings, args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    if args.retry:
        async with asyncpg.create_pool(
            settings.dsn(), min_size=1, max_size=2, server_settings=settings.server_settings()
        ) as pool:
            marked = await PgUnresolved(pool).retry_now(now, args.shop)
        print(f"{marked} unresolved trade(s) due now", file=sys.stderr)
        await _redrive_here(args)
    async with asyncpg.create_pool(
        settings.dsn(), min_size=1, max_size=2, server_settings=settings.server_settings()
    ) as pool:
        rows = await PgUnresolved(pool).rows(args.shop)
    now = datetime.now(UTC)
    if args.json:
        print(json.dumps([row.to_json(now) for row in rows], ensure_ascii=False, indent=2))
    else:
        print(table(rows, now))
    return EXIT_OK


async def _redrive_here(args: argparse.Namespace) -> None:
    """One redrive pass over the shops the settings name, when they are complete."""
    overrides = database_overrides(args.database_url)
    try:
        settings = load(Settings, args.env_file, **overrides)
    except SettingsError:
        print("no TAOBAO_* settings here: a running daemon retries them on its next round", file=sys.stderr)
        return
    async with standalone(settings) as reconciler:
        counts = await reconciler.redrive_due()
    print(
        f"redrive: {counts.tried} tried, {counts.stored} stored, {counts.failed} failed again, "
        f"{counts.deferred} deferred",
        file=sys.stderr,
    )


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def table(rows: list[UnresolvedTrade], now: datetime) -> str:
    """One line per unresolved trade, oldest first."""
    if not rows:
        return "no unresolved trades"
    lines = [
        (
            row.shop,
            str(row.tid),
            row.source,
            f"{row.kind}: {row.reason}"[:REASON_WIDTH],
            str(row.attempts),
            _age((now - row.first_failure).total_seconds()),
            "now" if row.next_attempt <= now else f"in {_age((row.next_attempt - now).total_seconds())}",
        )
        for row in rows
    ]
    widths = [max(len(c), *(len(line[i]) for line in lines)) for i, c in enumerate(COLUMNS)]
    out = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True))]
    out += ["  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)) for line in lines]
    return "\n".join(line.rstrip() for line in out)
