"""`order-sync check`: is this configuration ready to run? A checklist an operator reads top to bottom.

    ✓ settings   2 shops, sign method hmac-sha256
    ✓ postgres   PostgreSQL 16.4, schema at version 3 of 3
    ✓ shop 店A   signed call accepted (probe trade not found, as expected)
    ✗ shop 店B   session rejected (code 27, invalid-sessionkey)
                 hint: re-authorise the shop and put its new session in TAOBAO_SHOPS or `order-sync shops add`
    ✓ tmc        CONNECT accepted by ws://mc.api.taobao.com/ (group default)

Every check is harmless: the database is only read; each shop makes one
`taobao.trade.fullinfo.get` of a trade that does not exist (an `isv.trade-not-exist` answer proves the
signature and the session; it costs one call of the quota); the TMC check completes CONNECT/CONNECTACK
and closes without pulling. A push that reaches that connection in its instant of life is not lost:
unconfirmed, the server delivers it again later. Nothing secret is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, TextIO

import asyncpg
import websockets.exceptions
from pydantic import SecretStr

from common.errors import OrderSyncError
from common.exit_codes import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from daemon.settings import Settings, SettingsError, add_env_file_option, load_settings
from listener.session import TmcConnectRefused, TmcProtocolError, TmcSession
from store.errors import DATABASE_ERRORS
from store.migrate import applied_versions, load_migrations
from store.pg_shops import PgShops
from store.secret_box import SecretBox
from taobao.client import RetryPolicy, TopClient
from taobao.clock import ClockSkew
from taobao.errors import (
    AppWideTopError,
    PermanentTopError,
    RateLimited,
    RetryableTopError,
    SessionExpired,
    TopError,
    TradeNotFound,
)
from taobao.fields import TRADE_FULLINFO_GET
from taobao.limiter import Priority, TopRateLimiter

# A skew past which `check` fails: far from TOP's 600 s (code 31), but no host should drift this far.
CLOCK_WARN_SECONDS: Final = 60.0
# A tid no shop has: TOP answers isv.trade-not-exist after checking signature and session.
PROBE_TID: Final = 1

# TOP codes that concern the whole app, not one shop: checking the other shops would only repeat them.
_APP_CODES = {25: "signature", 28: "app key", 29: "app key"}

EPILOG = (
    "Exit status: 0 when every check passes, 1 when one fails, 2 when the settings are invalid. "
    "Settings come from the environment and the --env-file (see .env.example)."
)


@dataclass(frozen=True, slots=True)
class Item:
    ok: bool
    name: str
    detail: str
    hint: str | None = None


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    add_env_file_option(parser)
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds each check may take (default 10)"
    )


def run(args: argparse.Namespace) -> int:
    out = sys.stdout
    _quiet_logs()
    try:
        settings = load_settings(args.env_file)
    except SettingsError as exc:
        for problem in exc.problems:
            _print(out, Item(False, "settings", problem))
        _print_hint(out, "every setting is described in .env.example")
        return EXIT_USAGE
    items = asyncio.run(run_checks(settings, args.timeout, out))
    failed = sum(1 for item in items if not item.ok)
    print(f"{len(items) - failed} of {len(items)} checks passed", file=out)
    return EXIT_FAILED if failed else EXIT_OK


def _quiet_logs() -> None:
    """The checklist is the output; library warnings (a retry given up) would only repeat it."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.NullHandler())


async def run_checks(settings: Settings, limit: float, out: TextIO) -> list[Item]:
    """Run every check in order, printing each result as it comes."""
    items: list[Item] = []

    def report(item: Item) -> None:
        items.append(item)
        _print(out, item)

    report(
        Item(
            True,
            "settings",
            f"{len(settings.taobao_shops)} shop(s), sign method {settings.taobao_sign_method.value}, "
            f"API {settings.taobao_api_url}",
        )
    )
    report(await _bounded(check_postgres(settings, limit), "postgres", limit))
    for item in await check_registry(settings):
        report(item)
    sessions = settings.shop_sessions() | await registry_sessions(settings)
    for item in await check_shops(settings, limit, sessions):
        report(item)
    report(await _bounded(check_tmc(settings, limit), "tmc", limit))
    return items


async def _bounded(check: Awaitable[Item], name: str, limit: float) -> Item:
    try:
        async with asyncio.timeout(limit + 1):
            return await check
    except TimeoutError:
        return Item(False, name, f"no answer within {limit:g} s", "check the address and the network path")


async def check_postgres(settings: Settings, limit: float) -> Item:
    if settings.database_url is None:
        return Item(
            False, "postgres", "DATABASE_URL is not set", "point DATABASE_URL at the ERP's PostgreSQL"
        )
    try:
        conn = await asyncpg.connect(
            settings.database_url.get_secret_value(),
            timeout=limit,
            server_settings=settings.server_settings(),
        )
    except (OSError, TimeoutError) as exc:
        return Item(
            False,
            "postgres",
            f"cannot connect ({type(exc).__name__}: {exc.strerror or exc})"
            if isinstance(exc, OSError)
            else f"no answer within {limit:g} s",
            "is PostgreSQL running, and do DATABASE_URL's host and port reach it?",
        )
    except asyncpg.InvalidPasswordError:
        return Item(False, "postgres", "password rejected", "check the user and password in DATABASE_URL")
    except asyncpg.InvalidCatalogNameError:
        return Item(
            False, "postgres", "database does not exist", "create it, or fix the name in DATABASE_URL"
        )
    except (*DATABASE_ERRORS, ValueError) as exc:
        # ValueError: a malformed DSN. The text names the problem, never the DSN's password.
        return Item(False, "postgres", f"cannot connect ({type(exc).__name__}: {exc})", "check DATABASE_URL")
    try:
        server = conn.get_server_version()
        applied = await applied_versions(conn)
    finally:
        await conn.close()
    known = max((m.version for m in load_migrations()), default=0)
    if applied is None:
        schema = "no schema yet (run creates it)"
    else:
        at = max(applied, default=0)
        schema = f"schema at version {at} of {known}" + (" (run applies the rest)" if at < known else "")
    return Item(True, "postgres", f"PostgreSQL {server.major}.{server.minor}, {schema}")


async def check_registry(settings: Settings, now: datetime | None = None) -> list[Item]:
    """With SYNC_SECRET_KEY: the shop registry's count, and every active shop whose session expires
    within SYNC_SESSION_WARN_SECONDS with no refresh token (docs/operations.md#sessions)."""
    if settings.sync_secret_key is None or settings.database_url is None:
        return []
    now = now or datetime.now(UTC)
    try:
        async with asyncpg.create_pool(settings.dsn(), min_size=1, max_size=1) as pool:
            records = await PgShops(pool, SecretBox(settings.sync_secret_key)).records()
    except (OrderSyncError, *DATABASE_ERRORS) as exc:
        return [Item(False, "registry", f"cannot read the shops ({exc})", "run `order-sync migrate`")]
    active = [r for r in records if r.active]
    items = [Item(True, "registry", f"{len(records)} shop(s), {len(active)} active")]
    horizon = now + timedelta(seconds=settings.sync_session_warn_seconds)
    for record in active:
        expires = record.expires_at
        if record.refresh_token is None and expires is not None and expires <= horizon:
            hours = (expires - now).total_seconds() / 3600
            when = "expired" if hours <= 0 else f"expires in {hours:.1f} h"
            hint = "ask the seller to authorise again, then `order-sync shops add` the new session"
            items.append(Item(False, f"shop {record.nick}", f"session {when}, no refresh token", hint))
    return items


async def registry_sessions(settings: Settings) -> dict[str, SecretStr]:
    """The registry's active shops and their sessions, unsealed with SYNC_SECRET_KEY (the daemon serves
    these, not TAOBAO_SHOPS' copies); none when it cannot be read (its check line says why)."""
    if settings.sync_secret_key is None or settings.database_url is None:
        return {}
    try:
        async with asyncpg.create_pool(settings.dsn(), min_size=1, max_size=1) as pool:
            records = await PgShops(pool, SecretBox(settings.sync_secret_key)).records()
    except (OrderSyncError, *DATABASE_ERRORS):
        return {}
    return {r.nick: r.session for r in records if r.active}


async def check_shops(settings: Settings, limit: float, sessions: Mapping[str, SecretStr]) -> list[Item]:
    """One signed fullinfo call per shop (`sessions`: TAOBAO_SHOPS' and the registry's active ones).
    An error about the app itself (signature, app key, the network) ends the round: the other shops
    would only repeat it."""
    client = TopClient(
        app_key=settings.taobao_app_key,
        app_secret=settings.taobao_app_secret,
        api_url=settings.taobao_api_url,
        limiter=TopRateLimiter(settings.sync_api_rate),
        sign_method=settings.taobao_sign_method.value,
        connect_timeout=limit,
        read_timeout=limit,
        retry=RetryPolicy(max_tries=1, max_time=limit, max_ban_wait=0.0),
    )
    items: list[Item] = []
    async with client:
        for nick, session in sessions.items():
            probe = functools.partial(_probe, client, session.get_secret_value())
            item, app_wide = await _bounded_shop(probe, f"shop {nick}", limit)
            items.append(item)
            if app_wide:
                skipped = len(sessions) - len(items)
                if skipped:
                    items.append(Item(False, "shops", f"{skipped} more shop(s) not checked (same error)"))
                break
    items.append(clock_item(client.clock_skew))
    return items


def clock_item(skew: ClockSkew) -> Item:
    """Taobao's clock against this host's, from the answers' Date headers (docs/design.md#clock-skew)."""
    estimate = skew.estimate()
    if estimate is None:
        return Item(True, "clock", "not measured (no answer from TOP)")
    seconds = estimate.total_seconds()
    side = "ahead of" if seconds >= 0 else "behind"
    detail = f"Taobao's clock is {abs(seconds):.1f} s {side} this host's"
    if abs(seconds) < CLOCK_WARN_SECONDS:
        return Item(True, "clock", detail)
    hint = "sync this host's clock (NTP); TOP refuses requests over 600 s off, the service corrects for it"
    return Item(False, "clock", detail, hint)


async def _bounded_shop(call: Callable[[], Awaitable[None]], name: str, limit: float) -> tuple[Item, bool]:
    try:
        async with asyncio.timeout(limit + 1):
            await call()
    except TimeoutError:
        return Item(False, name, f"no answer within {limit:g} s", "check TAOBAO_API_URL"), True
    except TradeNotFound:
        return Item(True, name, "signed call accepted (probe trade not found, as expected)"), False
    except SessionExpired as exc:
        return (
            Item(
                False,
                name,
                f"session rejected ({_codes(exc)})",
                "re-authorise the shop and put its new session in TAOBAO_SHOPS or `order-sync shops add`",
            ),
            False,
        )
    except RateLimited as exc:
        return Item(False, name, f"rate limited for {exc.ban_seconds:g} s", "try again after the ban"), True
    except RetryableTopError as exc:
        return Item(
            False, name, f"API not usable now: {exc.msg}", "check TAOBAO_API_URL and the network"
        ), True
    except AppWideTopError as exc:
        # Every later call would wait behind the client's probe: the other shops are not checked.
        what = _APP_CODES.get(exc.code or 0)
        if what == "signature":
            hint = "check TAOBAO_APP_SECRET and TAOBAO_SIGN_METHOD"
            return Item(False, name, f"signature rejected ({_codes(exc)})", hint), True
        if what == "app key":
            return Item(False, name, f"app key rejected ({_codes(exc)})", "check TAOBAO_APP_KEY"), True
        hint = "the app may lack the trade API permission package, or this address is not allowed"
        return Item(False, name, f"refused for the whole app: {exc.msg} ({_codes(exc)})", hint), True
    except PermanentTopError as exc:
        hint = "the app may lack the trade API permission for this shop"
        return Item(False, name, f"call refused: {exc.msg} ({_codes(exc)})", hint), False
    except TopError as exc:
        return Item(False, name, f"call failed: {exc.msg} ({_codes(exc)})"), False
    return Item(True, name, "signed call accepted"), False


async def _probe(client: TopClient, session: str) -> None:
    await client.call(
        TRADE_FULLINFO_GET, {"fields": "tid", "tid": PROBE_TID}, session=session, priority=Priority.STREAM
    )


def _codes(exc: TopError) -> str:
    parts = [f"code {exc.code}" if exc.code is not None else "no code"]
    if exc.sub_code:
        parts.append(exc.sub_code)
    return ", ".join(parts)


async def check_tmc(settings: Settings, limit: float) -> Item:
    async def ignore(_message: object) -> None:
        return None

    where = f"{settings.taobao_tmc_url} (group {settings.taobao_tmc_group})"
    hint = "check TAOBAO_TMC_URL and the network"
    try:
        session = TmcSession(
            url=settings.taobao_tmc_url,
            app_key=settings.taobao_app_key,
            app_secret=settings.taobao_app_secret,
            group_name=settings.taobao_tmc_group,
            handler=ignore,
        )
        async with asyncio.timeout(limit):
            await session.open_and_close()
    except TmcConnectRefused as exc:
        detail = f"CONNECT refused by {where}: status {exc.status_code}, {exc.status_phrase!r}"
        hint = "check TAOBAO_APP_KEY, TAOBAO_APP_SECRET and TAOBAO_TMC_GROUP, and that the app may use TMC"
        return Item(False, "tmc", detail, hint)
    except websockets.exceptions.InvalidURI:
        return Item(False, "tmc", "TAOBAO_TMC_URL is not a ws:// or wss:// URL", "fix TAOBAO_TMC_URL")
    except websockets.exceptions.InvalidStatus as exc:
        return Item(False, "tmc", f"{where} answered HTTP {exc.response.status_code} to the upgrade", hint)
    except (websockets.exceptions.InvalidHandshake, TmcProtocolError) as exc:
        return Item(False, "tmc", f"{where} broke the handshake ({type(exc).__name__}: {exc})", hint)
    except TimeoutError:
        return Item(False, "tmc", f"no CONNECTACK from {where} within {limit:g} s", hint)
    except OSError as exc:
        return Item(False, "tmc", f"cannot reach {where} ({exc.strerror or exc})", hint)
    except websockets.exceptions.ConnectionClosed as exc:
        return Item(False, "tmc", f"{where} closed the connection during the handshake ({exc})", hint)
    return Item(True, "tmc", f"CONNECT accepted by {where}")


# ------------------------------------------------------------------------------------------ output


def _marks(out: TextIO) -> tuple[str, str]:
    try:
        "✓✗".encode(out.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return "OK  ", "FAIL"
    return "✓", "✗"


def _print(out: TextIO, item: Item) -> None:
    good, bad = _marks(out)
    print(f"{good if item.ok else bad} {item.name:<10} {item.detail}", file=out)
    if item.hint and not item.ok:
        _print_hint(out, item.hint)


def _print_hint(out: TextIO, hint: str) -> None:
    print(f"  {'':<10} hint: {hint}", file=out)
