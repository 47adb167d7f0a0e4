"""`order-sync shops add|list|pause|resume|remove|key`: the shop registry (docs/operations.md#shops).

Running daemons hear every change within seconds (a NOTIFY, and a periodic re-read): an added shop is
subscribed, loaded and streamed; a paused or removed one stops being fetched; its trades stay. Sessions
are stored encrypted with SYNC_SECRET_KEY and never printed: `list` shows only whether a refresh token
is held and when the session expires. `--session -` reads the session key from standard input (keeps it
out of the shell's history and the process list). `key` prints a new SYNC_SECRET_KEY.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import Any

import asyncpg
from pydantic import SecretStr

from common.errors import OrderSyncError
from common.exit_codes import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from daemon.settings import DatabaseSettings, add_env_file_option, database_overrides, settings_or_exit
from store.errors import DATABASE_ERRORS
from store.migrate import migrate
from store.pg_shops import PgShops
from store.secret_box import SecretBox, generate_key
from store.shops import ShopRecord, ShopStatus

NO_KEY = "order-sync shops: SYNC_SECRET_KEY is not set (`order-sync shops key` prints one)"
COLUMNS = ("nick", "status", "expires", "refresh", "permitted", "reason")


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True, help="what to do")
    add = sub.add_parser("add", help="add a shop, or give a known one a new session")
    add.add_argument("--nick", required=True, help="the seller nick TMC messages carry")
    add.add_argument("--session", required=True, help="the seller's session key; - reads it from stdin")
    add.add_argument("--refresh-token", default=None, help="its refresh token, when the app may refresh")
    add.add_argument("--expires-at", default=None, help="when the session expires (ISO 8601)")
    sub.add_parser("list", help="the shops, their status, expiry and subscription")
    for name, text in (
        ("pause", "stop fetching a shop (its trades stay)"),
        ("resume", "fetch a paused shop again, reading the time it was paused"),
        ("remove", "forget a shop (its trades stay)"),
    ):
        one = sub.add_parser(name, help=text)
        one.add_argument("--nick", required=True)
    sub.add_parser("key", help="print a new SYNC_SECRET_KEY")
    for action in sub.choices.values():
        action.add_argument("--json", action="store_true", help="print JSON instead of a table")
        action.add_argument("--database-url", default=None, help="PostgreSQL DSN (default: DATABASE_URL)")
        add_env_file_option(action)


def run(args: argparse.Namespace) -> int:
    if args.action == "key":
        print(generate_key())
        return EXIT_OK
    settings = settings_or_exit(DatabaseSettings, args.env_file, **database_overrides(args.database_url))
    if isinstance(settings, int):
        return settings
    if settings.sync_secret_key is None:
        print(NO_KEY, file=sys.stderr)
        return EXIT_USAGE
    try:
        return asyncio.run(_main(settings.dsn(), settings.sync_secret_key, args))
    except ValueError as exc:
        print(f"order-sync shops: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (OrderSyncError, *DATABASE_ERRORS) as exc:
        print(f"order-sync shops: {exc}", file=sys.stderr)
        return EXIT_FAILED


async def _main(dsn: str, key: SecretStr, args: argparse.Namespace) -> int:
    box = SecretBox(key)
    await migrate(dsn)
    async with asyncpg.create_pool(dsn, min_size=1, max_size=2) as pool:
        registry = PgShops(pool, box)
        if args.action == "add":
            session = SecretStr(_session_from(args.session))
            refresh = SecretStr(args.refresh_token) if args.refresh_token else None
            expires = _timestamp(args.expires_at) if args.expires_at else None
            nick = args.nick.strip()
            records = [await registry.add(nick, session, refresh_token=refresh, expires_at=expires)]
        elif args.action == "pause":
            records = [await registry.set_status(args.nick, ShopStatus.PAUSED, "paused by the operator")]
        elif args.action == "resume":
            records = [await registry.set_status(args.nick, ShopStatus.ACTIVE, None)]
        elif args.action == "remove":
            records = [await registry.remove(args.nick)]
        else:
            records = await registry.records()
    now = datetime.now(UTC)
    if args.json:
        print(json.dumps([to_json(r) for r in records], ensure_ascii=False, indent=2))
    else:
        prefix = "" if args.action == "list" else f"{args.action}: "
        print(prefix + table(records, now))
    return EXIT_OK


def _session_from(value: str) -> str:
    text = sys.stdin.readline().strip() if value == "-" else value.strip()
    if not text:
        raise ValueError("the session must not be blank")
    return text


def _timestamp(text: str) -> datetime:
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--expires-at: not an ISO 8601 time: {text!r}") from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.astimezone(UTC).isoformat()


def to_json(record: ShopRecord) -> dict[str, Any]:
    """A shop as `--json` shows it: never its session or refresh token."""
    return {
        "nick": record.nick,
        "status": record.status.value,
        "status_reason": record.status_reason,
        "expires_at": _iso(record.expires_at),
        "refresh_token": record.refresh_token is not None,
        "permitted_at": _iso(record.permitted_at),
        "permit_error": record.permit_error,
        "added_at": _iso(record.added_at),
        "updated_at": _iso(record.updated_at),
    }


def _expires(record: ShopRecord, now: datetime) -> str:
    if record.expires_at is None:
        return "unknown"
    left = (record.expires_at - now).total_seconds()
    if left <= 0:
        return "expired"
    return f"in {left / 86400:.1f}d" if left >= 86400 else f"in {left / 3600:.1f}h"


def table(records: list[ShopRecord], now: datetime) -> str:
    if not records:
        return "no shops"
    lines = [
        (
            r.nick,
            r.status.value,
            _expires(r, now),
            "yes" if r.refresh_token is not None else "no",
            "yes" if r.permitted_at is not None and r.permit_error is None else "no",
            r.status_reason or r.permit_error or "",
        )
        for r in records
    ]
    widths = [max(len(c), *(len(line[i]) for line in lines)) for i, c in enumerate(COLUMNS)]
    out = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True))]
    out += ["  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)) for line in lines]
    return "\n".join(line.rstrip() for line in out)
