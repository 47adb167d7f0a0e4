"""How long the daemon takes to recover a gap of N changes after a restart, against the quota-bound
minimum (every call the recovery needs, made back to back at SYNC_API_RATE), and what the recovery
costs the freshness of the changes that keep coming meanwhile.

    .venv/bin/python -m bench.bench_gap_recovery [--gaps 200,1000] [--api-rate 50] [--latency-ms 20]
        [--modes before,during] [--live-rate 5] [--admin-url postgresql://postgres@127.0.0.1:5432/test]

For each N: the daemon runs and follows the stream; it is stopped (SIGTERM); N market changes are made
while it is down (spread over --downtime seconds), with the stand-in's TMC server dropping whatever is
published while no client is connected (the old stream's behaviour), so only the reconciler's increment
backfill can bring them in;
the daemon starts again. Recovery time: from the daemon's start until the database holds every changed
trade at its truth `modified`. Minimum: (distinct trades to fetch + list calls the reconciler made) ÷
SYNC_API_RATE. The difference is start-up, the safety lag (increment windows end SYNC_SAFETY_LAG_SECONDS
in the past) and the commit path.

Freshness: while the daemon recovers, the market keeps changing at --live-rate. Each mode runs the
same gap: `before` (the default: the gap is backfilled before the TMC stream resumes) and `during`
(SYNC_STREAM_DURING_BACKFILL=true). `stream_held_s` is how long after the daemon's start the TMC
connection came up; `live_lag_ms` is, for the changes made during the recovery, the time from the
change to its NOTIFY (p50/p99/max).
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
from pathlib import Path
from typing import Any

import asyncpg

from bench.daemon_proc import DaemonProcess, daemon_env
from bench.machine import machine
from bench.permits import permit_every_shop
from bench.scenarios.database import throwaway_database
from daemon.demo import standin_settings
from simulator.market import MarketChange
from simulator.standin import StandIn, StandInConfig
from simulator.tmc_server import TmcServerConfig
from store.schema import connection_settings
from taobao.fields import TRADE_FULLINFO_GET

DEFAULT_ADMIN_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
LIST_METHODS = ("taobao.trades.sold.increment.get", "taobao.trades.sold.get")
SAFETY_LAG_SECONDS = 2


async def _until(condition: Any, within: float, what: str, daemon: DaemonProcess | None = None) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {within:g} s waiting for {what}")
        if daemon is not None and daemon.process is not None and daemon.process.returncode is not None:
            raise RuntimeError(f"the daemon exited:\n{daemon.log_tail()}")
        await asyncio.sleep(0.05)  # polling interval


async def measure(n: int, mode: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    standin = StandIn(
        StandInConfig(seed=13, shops=3, market_rate=0, history_trades=3000,
                      tmc=TmcServerConfig(confirm_timeout=120.0, seed=13))
    )  # fmt: skip
    standin.faults.latency_ms = args.latency_ms
    await standin.start()
    await permit_every_shop(standin)
    try:
        async with throwaway_database(args.admin_url, "bench_gap") as (dsn, _):
            values: dict[str, Any] = {
                "database_url": dsn, **standin_settings(standin.connection_info()),
                "sync_api_rate": args.api_rate, "sync_initial_load_days": 0, "http_port": 0,
                "log_level": "WARNING", "sync_safety_lag_seconds": SAFETY_LAG_SECONDS,
                "sync_reconcile_seconds": 1, "sync_stream_settle_seconds": 1,
                "sync_overlap_seconds": args.overlap,
                "sync_stream_during_backfill": mode == "during",
            }  # fmt: skip
            conn = await asyncpg.connect(dsn, server_settings=connection_settings())
            try:
                return {"mode": mode} | await _run(n, args, standin, conn, values, workdir)
            finally:
                await conn.close()
    finally:
        await standin.stop()


async def _run(n: int, args: argparse.Namespace, standin: StandIn, conn: asyncpg.Connection,
               values: dict[str, Any], workdir: Path) -> dict[str, Any]:  # fmt: skip
    tmc, key = standin.tmc, standin.app_key
    first = DaemonProcess(daemon_env(values), workdir / f"daemon-{n}-a.log")
    await first.start()

    async def connected() -> bool:
        return tmc.stats.connections >= 1

    async def drained() -> bool:
        return tmc.pending(key) == 0

    await _until(connected, 60, "the daemon to connect", first)
    standin.market.step(3)
    await _until(drained, 60, "the warm-up changes", first)
    await first.stop()
    tmc.faults.lose_while_disconnected = True
    # The daemon stays down for --downtime seconds while the N changes happen, spread over that time.
    changes = []
    steps = 10
    for k in range(steps):
        changes += standin.market.step(n // steps + (1 if k < n % steps else 0))
        await asyncio.sleep(args.downtime / steps)  # the outage itself, not a wait for a condition
    tmc.faults.lose_while_disconnected = False
    withheld = sum(1 for m in tmc.withheld if m.reason == "disconnected")
    want = {c.tid: c.modified for c in changes}
    tids = list(want)
    calls = standin.stats.calls
    fullinfo0 = calls[TRADE_FULLINFO_GET]
    lists0 = sum(calls[m] for m in LIST_METHODS)

    async def recovered() -> bool:
        rows = await conn.fetch("SELECT tid, modified FROM trades WHERE tid = ANY($1::bigint[])", tids)
        return len(rows) == len(want) and all(r["modified"] >= want[r["tid"]] for r in rows)

    # Changes made while the daemon recovers: when does each reach the database (its NOTIFY)?
    published: dict[int, float] = {}
    lags: list[float] = []
    live = [False]

    def on_change(change: MarketChange) -> None:
        if live[0]:
            published[change.tid] = time.monotonic()

    def on_notify(_conn: object, _pid: int, _channel: str, payload: object) -> None:
        sent = published.pop(int(json.loads(str(payload))["tid"]), None)
        if sent is not None:
            lags.append(time.monotonic() - sent)

    standin.market.add_change_listener(on_change)
    await conn.add_listener("trade_changed", on_notify)
    connections0 = tmc.stats.connections
    second = DaemonProcess(daemon_env(values), workdir / f"daemon-{n}-b.log")
    started = time.monotonic()
    held: float | None = None
    await second.start()
    live[0] = True
    if args.live_rate > 0:
        standin.market.start(args.live_rate)
    try:
        try:
            deadline = time.monotonic() + args.within
            while not await recovered():
                if held is None and tmc.stats.connections > connections0:
                    held = time.monotonic() - started
                if time.monotonic() > deadline:
                    raise TimeoutError
                if second.process is not None and second.process.returncode is not None:
                    raise RuntimeError(f"the daemon exited:\n{second.log_tail()}")
                await asyncio.sleep(0.05)  # polling interval
            done = True
        except TimeoutError:
            done = False
        seconds = time.monotonic() - started
        if held is None and tmc.stats.connections > connections0:
            held = seconds
        standin.market.pause()
        live[0] = False

        async def live_in() -> bool:
            return not published

        with contextlib.suppress(TimeoutError):
            await _until(live_in, 60, "the live changes to arrive", second)
    finally:
        standin.market.pause()
        await second.stop()
        await conn.remove_listener("trade_changed", on_notify)
        standin.market.remove_change_listener(on_change)
    fullinfo = calls[TRADE_FULLINFO_GET] - fullinfo0
    lists = sum(calls[m] for m in LIST_METHODS) - lists0
    minimum = (len(want) + lists) / args.api_rate
    reports = await conn.fetch(
        "SELECT cause, started_at, finished_at, list_calls, fullinfo_calls, trades_found FROM gap_reports"
    )
    ordered = sorted(lags)
    return {
        "stream_held_s": None if held is None else round(held, 2),
        "live_changes": len(lags),
        "live_lag_ms": {
            "p50": round(ordered[len(ordered) // 2] * 1000) if ordered else None,
            "p99": round(ordered[int(len(ordered) * 0.99)] * 1000) if ordered else None,
            "max": round(ordered[-1] * 1000) if ordered else None,
        },
        "changes": n,
        "recovered": done,
        "withheld": withheld,
        "trades": len(want),
        "recovery_s": round(seconds, 2),
        "fullinfo_calls": fullinfo,
        "list_calls": lists,
        "quota_bound_s": round(minimum, 2),
        "recovery_over_bound": round(seconds / minimum, 2),
        "excess_s": round(seconds - minimum, 2),
        "reports": [
            {"cause": r["cause"], "list_calls": r["list_calls"], "fullinfo_calls": r["fullinfo_calls"],
             "trades_found": r["trades_found"],
             "seconds": round((r["finished_at"] - r["started_at"]).total_seconds(), 2)
             if r["finished_at"] and r["started_at"] else None}
            for r in reports
        ],
    }  # fmt: skip


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "benchmark": "gap_recovery", "machine": machine(), "api_rate": args.api_rate,
        "api_latency_ms": args.latency_ms, "safety_lag_s": SAFETY_LAG_SECONDS, "overlap_s": args.overlap,
        "live_rate": args.live_rate, "downtime_s": args.downtime,
        "runs": [],
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-gap-") as workdir:
        for n in args.gaps:
            for mode in args.modes:
                results["runs"].append(await measure(n, mode, args, Path(workdir)))
    results["machine"]["load_1m_after"] = machine()["load_1m"]
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_gap_recovery", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--gaps", type=lambda s: [int(x) for x in s.split(",")], default=[200, 1000])
    parser.add_argument("--api-rate", type=float, default=50.0, help="SYNC_API_RATE")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="the stand-in's API latency")
    parser.add_argument("--overlap", type=int, default=600, help="SYNC_OVERLAP_SECONDS (default 600)")
    parser.add_argument("--within", type=float, default=300.0, help="give up on a gap after S seconds")
    parser.add_argument(
        "--modes",
        type=lambda s: [m for m in s.split(",") if m in ("before", "during")],
        default=["before", "during"],
        help="before: backfill before the stream resumes (default); during: SYNC_STREAM_DURING_BACKFILL",
    )
    parser.add_argument("--live-rate", type=float, default=5.0, help="market changes/s during recovery")
    parser.add_argument("--downtime", type=float, default=10.0, help="seconds the daemon is down")
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL)
    args = parser.parse_args(argv)
    started = time.monotonic()
    results = asyncio.run(_main(args))
    results["wall_s"] = round(time.monotonic() - started, 1)
    for run in results["runs"]:
        print(
            f"[{run['mode']}] gap of {run['changes']} changes ({run['trades']} trades): "
            f"{'recovered' if run['recovered'] else 'NOT recovered'} in {run['recovery_s']} s; "
            f"quota-bound minimum {run['quota_bound_s']} s ({run['fullinfo_calls']} fullinfo + "
            f"{run['list_calls']} list calls at {args.api_rate:g}/s); stream held back "
            f"{run['stream_held_s']} s; live changes reached the database in p50 "
            f"{run['live_lag_ms']['p50']} ms, p99 {run['live_lag_ms']['p99']} ms",
            file=sys.stderr,
        )
    print(json.dumps(results, ensure_ascii=False, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
