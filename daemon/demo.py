"""`order-sync demo`: the whole product on one machine with no Taobao account.

It starts the Taobao stand-in (a seeded order market behind a TOP gateway and a TMC server), a
PostgreSQL (an embedded one unless DATABASE_URL is set, in the environment or the --env-file), and the
daemon, and prints one line of progress a second: market changes, changes applied to the database,
fullinfo calls, confirms, and the publish → NOTIFY lag. Ctrl-C (or --seconds) stops everything
gracefully, then the demo compares the database with the stand-in's truth.

The demo writes stand-in trades, so a DATABASE_URL whose database holds anything but an empty schema
of ours (tables of its own, or trades) is refused unless --reuse says to write there anyway. The
daemon logs at WARNING in text; on a terminal each record takes a line above the progress line
(`daemon.terminal`), which is drawn again below it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import statistics
import sys
import time
from collections import deque
from collections.abc import Coroutine, Iterator, Mapping
from typing import Any, TextIO

import asyncpg

from common.errors import OrderSyncError
from common.exit_codes import EXIT_FAILED, EXIT_USAGE
from daemon.app import assemble, open_parts
from daemon.embedded_db import EmbeddedPostgresUnavailable, create_database, embedded_postgres
from daemon.logs import configure_logging
from daemon.service import Service, serve
from daemon.settings import DatabaseSettings, Settings, add_env_file_option, settings_or_exit
from daemon.terminal import Terminal
from simulator.compare import compare_with_market
from simulator.market import MarketChange
from simulator.standin import StandIn, StandInConfig
from simulator.tmc_server import TmcServerConfig
from store.errors import DATABASE_ERRORS
from store.migrate import load_migrations
from store.pg import PgStore
from store.schema import DEFAULT_SCHEMA, check_schema
from taobao.client import TopClient
from taobao.fields import TRADE_FULLINFO_GET

DEMO_DATABASE = "order_sync_demo"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=None, help="stop after N seconds (default: Ctrl-C)")
    parser.add_argument("--rate", type=float, default=20.0, help="market changes per second (default 20)")
    parser.add_argument("--shops", type=int, default=3, help="number of shops (default 3)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the market (default 7)")
    parser.add_argument("--api-latency-ms", type=float, default=0.0, help="stand-in TOP latency per call")
    parser.add_argument(
        "--http-port", type=int, default=0, help="daemon's HTTP port: /metrics, /reports (default: any free)"
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="write into DATABASE_URL's database even though it holds tables or trades already",
    )
    add_env_file_option(parser)


def run(args: argparse.Namespace) -> int:
    database = settings_or_exit(DatabaseSettings, args.env_file, need_database=False)
    if isinstance(database, int):
        return database
    try:
        with choose_database(database) as dsn:
            if database.database_url is not None and not args.reuse:
                held = asyncio.run(contents(dsn, database.database_schema))
                if held:
                    print(
                        f"order-sync demo: DATABASE_URL's database is not empty ({held}); the demo writes "
                        "stand-in trades into it. Use an empty database, unset DATABASE_URL for an "
                        "embedded one, or pass --reuse to write there anyway.",
                        file=sys.stderr,
                    )
                    return EXIT_USAGE
            return asyncio.run(_demo(args, dsn, sys.stdout))
    except (EmbeddedPostgresUnavailable, OrderSyncError) as exc:
        print(f"order-sync demo: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except DATABASE_ERRORS as exc:
        # The type only: driver messages can quote the DSN's user and database.
        print(f"order-sync demo: cannot use DATABASE_URL's database ({type(exc).__name__})", file=sys.stderr)
        return EXIT_FAILED


# What the migrations create (and their own bookkeeping): a database holding only these, with no
# trades, is an empty one of ours.
_CREATED = re.compile(r"CREATE TABLE (?:IF NOT EXISTS )?([a-z_][a-z0-9_]*)", re.IGNORECASE)


async def contents(dsn: str, schema: str = DEFAULT_SCHEMA) -> str | None:
    """What the database at `dsn` holds besides an empty `schema` of ours, in words; None: nothing."""
    ours = {"schema_migrations"} | {name for m in load_migrations() for name in _CREATED.findall(m.sql)}
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT n.nspname AS schema, c.relname AS name FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') "
            "AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1, 2"
        )
        others = [
            r["name"] if r["schema"] == "public" else f"{r['schema']}.{r['name']}"
            for r in rows
            if r["schema"] != schema or r["name"] not in ours
        ]
        if others:
            shown = ", ".join(others[:5]) + (", …" if len(others) > 5 else "")
            return f"{len(others)} table(s) not of order-sync: {shown}"
        if any(r["name"] == "trades" and r["schema"] == schema for r in rows):
            trades = await conn.fetchval(f"SELECT count(*) FROM {check_schema(schema)}.trades")
            if trades:
                return f"{trades:,} trades"
        return None
    finally:
        await conn.close()


@contextlib.contextmanager
def choose_database(settings: DatabaseSettings) -> Iterator[str]:
    """DATABASE_URL when it is set; otherwise a fresh database on an embedded PostgreSQL."""
    if settings.database_url is not None:
        yield settings.dsn()
        return
    print("starting an embedded PostgreSQL (set DATABASE_URL to use your own)…", flush=True)
    with embedded_postgres() as admin_dsn:
        yield asyncio.run(create_database(admin_dsn, DEMO_DATABASE, replace=True))


async def _demo(args: argparse.Namespace, dsn: str, out: TextIO) -> int:
    standin = _standin(args)
    published_at: dict[int, float] = {}

    def remember(change: MarketChange) -> None:
        published_at[change.tid] = time.monotonic()

    standin.add_change_listener(remember)
    await standin.start()
    try:
        print(
            f"stand-in: TOP {standin.api_url} · TMC {standin.tmc_url} · {len(standin.shops)} shops", file=out
        )
        settings = _settings(args, dsn, standin)
        if isinstance(settings, int):
            return settings
        terminal = Terminal(out)
        # On one terminal the log takes lines above the progress line; elsewhere stderr, as usual.
        shared = terminal.tty and sys.stderr.isatty()
        configure_logging(settings.log_level, settings.log_format, stream=terminal.log if shared else None)
        async with open_parts(settings) as (store, client):
            service = assemble(settings, store, client).service
            lags: deque[float] = deque(maxlen=2000)
            listener = await _listen_for_lag(dsn, settings, published_at, lags)
            try:
                companions = {"demo-progress": _report(service, standin, store, client, lags, terminal)}
                if args.seconds is not None:
                    companions["demo-timer"] = _finish_after(args.seconds, service, standin)
                code = await _serve_beside(service, companions)
            finally:
                await listener.close()
            standin.market.pause()
            comparison = await compare_with_market(store.pool, standin.market)
            terminal.end()
            print(
                "summary: " + json.dumps(_summary(service, standin, client, lags) | comparison.to_json()),
                file=out,
            )
            if not comparison.ok:
                print(
                    "some changes were still in flight when the demo stopped; the next start "
                    "(or the reconciler) picks them up",
                    file=out,
                )
            return code
    finally:
        await standin.stop()


def _standin(args: argparse.Namespace) -> StandIn:
    standin = StandIn(
        StandInConfig(
            seed=args.seed,
            shops=args.shops,
            market_rate=args.rate,
            history_trades=200,
            tmc=TmcServerConfig(confirm_timeout=30.0, failed_redelivery_delay=10.0, seed=args.seed),
        )
    )
    standin.faults.latency_ms = args.api_latency_ms
    return standin


def standin_settings(info: Mapping[str, Any]) -> dict[str, Any]:
    """The settings that point the daemon at a stand-in, from its `connection_info()` (what
    `order-sync simulate` prints)."""
    return {
        "taobao_app_key": info["app_key"],
        "taobao_app_secret": info["app_secret"],
        "taobao_api_url": info["api_url"],
        "taobao_tmc_url": info["tmc_url"],
        "taobao_shops": [{"nick": shop["nick"], "session": shop["session"]} for shop in info["shops"]],
    }


def _settings(args: argparse.Namespace, dsn: str, standin: StandIn) -> Settings | int:
    """The stand-in's app, endpoints and shops; anything else may come from the environment and .env."""
    return settings_or_exit(
        Settings,
        args.env_file,
        database_url=dsn,
        **standin_settings(standin.connection_info()),
        sync_api_rate=500,
        http_port=args.http_port,
        log_level="WARNING",
        log_format="text",
    )


async def _serve_beside(service: Service, companions: Mapping[str, Coroutine[Any, Any, None]]) -> int:
    """`serve(service)` with the named `companions` running beside it; they are cancelled when it
    returns."""
    tasks = [asyncio.create_task(companion, name=name) for name, companion in companions.items()]
    try:
        return await serve(service)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _finish_after(seconds: float, service: Service, standin: StandIn) -> None:
    """Close the market, give the daemon a few seconds to confirm what is still in flight, then stop:
    a timed demo ends with the database equal to the truth."""
    await asyncio.sleep(seconds)
    standin.market.pause()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(standin.tmc.wait_drained(standin.app_key), timeout=10.0)
    service.request_stop("demo time is up")


async def _listen_for_lag(
    dsn: str, settings: Settings, published_at: dict[int, float], lags: deque[float]
) -> asyncpg.Connection:
    conn: asyncpg.Connection = await asyncpg.connect(dsn, server_settings=settings.server_settings())

    def on_doorbell(_conn: object, _pid: int, _channel: str, payload: object) -> None:
        sent = published_at.get(int(json.loads(str(payload))["tid"]))
        if sent is not None:
            lags.append(time.monotonic() - sent)

    await conn.add_listener(settings.notify_channel, on_doorbell)
    return conn


def _summary(service: Service, standin: StandIn, client: TopClient, lags: deque[float]) -> dict[str, Any]:
    tmc = standin.tmc.stats
    fullinfo = sum(n for (method, _), n in client.stats.calls.items() if method == TRADE_FULLINFO_GET)
    return {
        "market_changes": tmc.published,
        "confirmed": tmc.confirmed,
        "fullinfo_calls": fullinfo,
        "pending_on_tmc": standin.tmc.pending(standin.app_key),
        "lag_p50_ms": round(statistics.median(lags) * 1000, 1) if lags else None,
        "lag_p99_ms": round(_p99(lags) * 1000, 1) if lags else None,
    }


def _p99(values: deque[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def _report(
    service: Service,
    standin: StandIn,
    store: PgStore,
    client: TopClient,
    lags: deque[float],
    terminal: Terminal,
) -> None:
    announced = False
    while True:
        await asyncio.sleep(1.0)
        if not announced and service.http_port is not None:
            base = f"http://127.0.0.1:{service.http_port}"
            terminal.log.write(
                f"daemon: metrics at {base}/metrics · gap reports at {base}/reports · Ctrl-C stops\n"
            )
            announced = True
        s = _summary(service, standin, client, lags)
        applied = await store.last_position()
        terminal.show(
            f"market changes {s['market_changes']:>6} · applied {applied:>6}"
            f" · fullinfo {s['fullinfo_calls']:>6}"
            f" · confirmed {s['confirmed']:>6} · pending {s['pending_on_tmc']:>4}"
            f" · lag p50 {s['lag_p50_ms'] or '-'} ms p99 {s['lag_p99_ms'] or '-'} ms"
        )
