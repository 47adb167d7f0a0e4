"""What the reconciler's commands share: reading times from the command line and a reconciler that runs
outside the daemon (no TMC session: backfills, initial loads)."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from daemon.app import make_reconciler_config, open_parts
from daemon.settings import Settings
from reconciler.reconciler import Reconciler
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


@contextlib.asynccontextmanager
async def standalone(settings: Settings) -> AsyncIterator[Reconciler]:
    """A reconciler over freshly opened parts (migrating first), for a one-off command."""
    async with open_parts(settings) as (store, client):
        yield Reconciler(
            config=make_reconciler_config(settings),
            client=client,
            store=store,
            shops=settings.shop_sessions(),
        )
