"""What the reconciler's commands share: reading times from the command line and a reconciler that runs
outside the daemon (no TMC session: backfills, initial loads)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from common.exit_codes import EXIT_USAGE
from daemon.app import make_reconciler_config, open_parts
from daemon.settings import Settings, SettingsError, load_settings
from reconciler.reconciler import Reconciler
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


def settings_or_exit(env_file: str | None, command: str) -> Settings | int:
    """The settings, or the exit code after printing what is wrong (one line per variable)."""
    try:
        return load_settings(env_file)
    except SettingsError as exc:
        print(
            f"order-sync {command}: {exc}\nhint: every setting is described in .env.example", file=sys.stderr
        )
        return EXIT_USAGE


@contextlib.asynccontextmanager
async def standalone(settings: Settings) -> AsyncIterator[Reconciler]:
    """A reconciler over freshly opened parts (migrating first), for a one-off command."""
    async with open_parts(settings) as (store, client):
        config = make_reconciler_config(settings)
        yield Reconciler(
            config=config,
            client=client,
            storage=pg_reconciler_store(store, replica=config.replica),
            shops=settings.shop_sessions(),
        )
