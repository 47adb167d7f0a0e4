"""Many shops, few of them trading: what reconciliation costs per idle shop and in all, start-up time,
memory, and publish → NOTIFY latency for the active shops.

    .venv/bin/python -m bench.bench_shops [--shops 1000] [--active 5] [--seconds 120] [--api-rate 400]
        [--share 0.1] [--sweep-seconds 30] [--idle-after-seconds 3600] [--idle-sweep-seconds 1800]
        [--overlap-seconds 20] [--admin-url postgresql://postgres@127.0.0.1:5432/test]

The stand-in runs in this process with `--shops` shops (it requires TMC permits); the daemon runs in
its own process (`python -m listener`) with the shops in its registry (seeded from TAOBAO_SHOPS), no
initial load, and a throwaway database. Start-up time is from spawning the daemon to every shop
permitted and the stream connected. Then, for `--seconds`, the market changes a trade a second (the
shops it picks are the active ones) while the rest stay idle; the stand-in's call log gives the list calls the
reconciliation made (increment.get and sold.get; fullinfo is the stream's) and a LISTEN on the
database gives publish → NOTIFY per change. RSS is the daemon's own (VmRSS, VmHWM).

Prints one JSON object on stdout and a summary on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench.daemon_proc import DaemonProcess, daemon_env
from bench.machine import machine
from bench.scenarios.database import throwaway_database
from simulator.market import MarketChange
from simulator.standin import StandIn, StandInConfig
from store.migrate import migrate
from store.secret_box import generate_key

DEFAULT_ADMIN_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
LIST_METHODS = ("taobao.trades.sold.increment.get", "taobao.trades.sold.get")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--shops", type=int, default=1000)
    parser.add_argument("--changes-per-second", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--api-rate", type=float, default=400.0)
    parser.add_argument("--share", type=float, default=0.1)
    parser.add_argument("--sweep-seconds", type=float, default=30.0)
    # A shop with no change this long is swept every --idle-sweep-seconds (0: never idle, every shop
    # on the --sweep-seconds schedule as before idle shops were told apart).
    parser.add_argument("--idle-after-seconds", type=float, default=3600.0)
    parser.add_argument("--idle-sweep-seconds", type=float, default=1800.0)
    # A sweep reads only what is older than the overlap: a short one lets a few minutes show the steady
    # state that takes ten with the default 600 s.
    parser.add_argument("--overlap-seconds", type=int, default=20)
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL)
    return parser.parse_args(argv)


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


async def wait_until(condition: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    config = StandInConfig(seed=1000, shops=args.shops, market_rate=0, history_trades=0, require_permits=True)
    async with StandIn(config) as standin, throwaway_database(args.admin_url, "bench_shops") as (dsn, _):
        await migrate(dsn)
        env = daemon_env(
            {
                "database_url": dsn,
                "taobao_app_key": standin.app_key,
                "taobao_app_secret": standin.app_secret,
                "taobao_api_url": standin.api_url,
                "taobao_tmc_url": standin.tmc_url,
                "taobao_shops": [{"nick": s.nick, "session": s.session} for s in standin.shops],
                "sync_secret_key": generate_key(),
                "sync_api_rate": args.api_rate,
                "sync_reconcile_share": args.share,
                "sync_sweep_seconds": args.sweep_seconds,
                "sync_sweep_idle_after_seconds": args.idle_after_seconds,
                "sync_sweep_idle_seconds": args.idle_sweep_seconds,
                "sync_overlap_seconds": args.overlap_seconds,
                "sync_safety_lag_seconds": 5,
                "sync_initial_load_days": 0,
                "http_port": 0,
                "log_level": "WARNING",
            }
        )
        published: dict[int, float] = {}
        latencies: list[float] = []

        def on_change(change: MarketChange) -> None:
            published.setdefault(change.tid, time.monotonic())

        def on_notify(_conn: Any, _pid: int, _channel: str, payload: object) -> None:
            tid = json.loads(str(payload)).get("tid")
            at = published.pop(int(tid), None) if tid is not None else None
            if at is not None:
                latencies.append(time.monotonic() - at)

        standin.add_change_listener(on_change)
        listener = await asyncpg.connect(dsn)
        await listener.add_listener("trade_changed", on_notify)
        log_path = Path(tempfile.mkstemp(prefix="bench_shops_", suffix=".log")[1])
        daemon = DaemonProcess(env, log_path)
        started = time.monotonic()
        await daemon.start()
        try:
            everyone = {s.nick for s in standin.shops}
            await wait_until(
                lambda: _true(standin.permits.users == everyone and bool(standin.tmc.connections())),
                120,
                "every shop permitted and the stream connected",
            )
            startup = time.monotonic() - started
            permits = [c.at for c in standin.stats.calls_of("taobao.tmc.user.permit") if c.code == 0]
            permit_span = (max(permits) - min(permits)).total_seconds() if permits else 0.0
            first_permit = startup - (datetime.now(UTC) - min(permits)).total_seconds() if permits else 0.0
            permit_calls = len(permits)
            calls_before = len(standin.stats.log)
            window_start = time.monotonic()
            traded = await trade(standin, args.changes_per_second, args.seconds)
            window = time.monotonic() - window_start
            rss, peak = daemon.memory_kib()
            log = list(standin.stats.log)[calls_before:]
        finally:
            await daemon.stop()
            await listener.close()
    result = report(args, log, traded, window, startup, rss, peak, latencies)
    # Where start-up goes: until the first permit call (process start, migrations, registry), then the
    # permit calls themselves.
    result |= {
        "first_permit_s": round(first_permit, 2),
        "permit_calls_s": round(permit_span, 2),
        "permit_calls": permit_calls,
    }
    return result


async def _true(value: bool) -> bool:
    return value


async def trade(standin: StandIn, per_second: float, seconds: float) -> set[str]:
    """The market changes `per_second` trades a second (the shops it picks are the active ones);
    returns their nicks."""
    traded: set[str] = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        traded |= {change.seller_nick for change in standin.market.step(max(1, round(per_second)))}
        await asyncio.sleep(1.0)  # the pace of the trading, not a wait for something
    return traded


def report(
    args: argparse.Namespace,
    log: list[Any],
    traded: set[str],
    window: float,
    startup: float,
    rss: int,
    peak: int,
    latencies: list[float],
) -> dict[str, Any]:
    lists = [c for c in log if c.method in LIST_METHODS]
    idle = [c for c in lists if c.shop not in traded]
    idle_shops = args.shops - len(traded)
    per_hour = 3600 / window
    interval = max(args.sweep_seconds, args.shops * 2 / (args.share * args.api_rate))
    idle_per_hour = len(idle) * per_hour / max(1, idle_shops)
    return {
        "shops": args.shops,
        "idle_shops": idle_shops,
        "window_s": round(window, 1),
        "reconcile_calls_per_hour": round(len(lists) * per_hour),
        "reconcile_calls_per_hour_per_idle_shop": round(idle_per_hour, 2),
        "idle_after_s": args.idle_after_seconds,
        "idle_sweep_s": args.idle_sweep_seconds,
        "sweep_interval_s": round(interval, 1),
        # What an idle shop costs per sweep, and so per hour at the defaults (40 calls/s, 10 %, 300 s).
        "calls_per_idle_sweep": round(idle_per_hour * interval / 3600, 2),
        "idle_shop_calls_per_hour_at_defaults": round(
            idle_per_hour * interval / max(300.0, args.shops * 2 / (0.1 * 40.0)), 2
        ),
        "reconcile_share_of_rate": round(len(lists) / window / args.api_rate, 4),
        "configured_share": args.share,
        "startup_s": round(startup, 2),
        "rss_mib": round(rss / 1024, 1),
        "peak_rss_mib": round(peak / 1024, 1),
        "active_shops": len(traded),
        "notify_p50_ms": _ms(percentile(latencies, 0.5)),
        "notify_p99_ms": _ms(percentile(latencies, 0.99)),
        "machine": machine(),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = asyncio.run(run(args))
    print(json.dumps(result))
    print(
        f"{result['shops']} shops: start-up {result['startup_s']} s, RSS {result['rss_mib']} MiB, "
        f"reconciliation {result['reconcile_calls_per_hour']} calls/h "
        f"({result['reconcile_share_of_rate']:.1%} of the rate), "
        f"{result['reconcile_calls_per_hour_per_idle_shop']} per idle shop, "
        f"publish→NOTIFY p99 {result['notify_p99_ms']} ms",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
