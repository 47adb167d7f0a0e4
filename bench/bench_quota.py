"""How much of the configured API rate the daemon uses when the rate is the bottleneck, and whether it
ever goes over it (a self-inflicted code-7 ban).

    .venv/bin/python -m bench.bench_quota [--rates 40,200] [--seconds 20] [--latency-ms 20]
        [--admin-url postgresql://postgres@127.0.0.1:5432/test]

For each rate R: the stand-in enforces R calls per second per app (its rate limit: the R+1-th call within
one second is answered code 7 and bans the app for a second, as TOP does) and the daemon runs with
SYNC_API_RATE=R. A backlog of distinct trades (one TMC message each, so nothing coalesces) larger than R
× the measurement time is published at once; once the daemon is past its first second, the fullinfo
calls the gateway answered are counted over the measurement window. Figures: calls/s ÷ R (target ≥ 95 %),
code-7 answers (target 0), and the most calls the gateway saw within any one second of its clock.

The daemon is a child process (`python -m listener`); this process runs the stand-in in-process, as
bench/bench_e2e.py does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.daemon_proc import DaemonProcess, daemon_env
from bench.machine import machine
from bench.permits import permit_every_shop
from bench.scenarios.database import throwaway_database
from daemon.demo import standin_settings
from simulator.standin import StandIn, StandInConfig
from simulator.tmc_server import TmcServerConfig
from taobao.fields import TRADE_FULLINFO_GET

DEFAULT_ADMIN_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
WARM_UP_SECONDS = 2.0


async def measure(
    rate: int, seconds: float, latency_ms: float, admin_url: str, workdir: Path
) -> dict[str, Any]:
    standin = StandIn(
        StandInConfig(
            seed=9, shops=3, market_rate=0, history_trades=max(2000, int(rate * (seconds + 10) * 1.5)),
            tmc=TmcServerConfig(confirm_timeout=300.0, seed=9),
        )
    )  # fmt: skip
    standin.faults.latency_ms = latency_ms
    await standin.start()
    await permit_every_shop(standin)
    try:
        async with throwaway_database(admin_url, "bench_quota") as (dsn, _):
            values: dict[str, Any] = {
                "database_url": dsn, **standin_settings(standin.connection_info()),
                "sync_api_rate": rate, "sync_initial_load_days": 0, "http_port": 0, "log_level": "WARNING",
                "sync_api_latency_seconds": max(latency_ms / 1000, 0.01),
            }  # fmt: skip
            daemon = DaemonProcess(daemon_env(values), workdir / f"daemon-{rate}.log")
            await daemon.start()
            try:
                return await _run(standin, daemon, rate, seconds, latency_ms)
            finally:
                await daemon.stop()
    finally:
        await standin.stop()


async def _run(standin: StandIn, daemon: DaemonProcess, rate: int, seconds: float,
               latency_ms: float) -> dict[str, Any]:  # fmt: skip
    deadline = time.monotonic() + 60
    while standin.tmc.stats.connections < 1:
        if time.monotonic() > deadline or (daemon.process and daemon.process.returncode is not None):
            raise RuntimeError(f"the daemon did not connect:\n{daemon.log_tail()}")
        await asyncio.sleep(0.05)  # polling the stand-in's counter
    # The limit goes on only now: the daemon's start-up calls (reconciler) are not part of the figure.
    standin.faults.update({"rate_limit_per_second": rate, "ban_seconds": 1, "methods": []})
    standin.gateway.injector.clear_bans()
    records = list(standin.market.records())
    random.Random(3).shuffle(records)
    backlog = int(rate * (seconds + WARM_UP_SECONDS + 5))
    if backlog > len(records):
        raise RuntimeError("not enough history trades for the backlog")
    now = datetime.now(UTC)
    errors0 = sum(v for k, v in standin.stats.errors.items() if k.startswith("7:"))
    for record in records[:backlog]:
        shop = standin.market.shops[record.shop]
        standin.tmc.publish(
            standin.app_key, topic="taobao_trade_TradeMemoModified",
            content=json.dumps({"tid": record.tid, "seller_nick": shop.nick, "status": record.status}),
            nick=shop.nick, user_id=shop.user_id, time=now,
        )  # fmt: skip
    calls = standin.stats.calls
    await asyncio.sleep(WARM_UP_SECONDS)  # the measurement starts once the pipeline is full
    calls0, t0, cpu0 = calls[TRADE_FULLINFO_GET], time.monotonic(), daemon.cpu_seconds()
    await asyncio.sleep(seconds)  # the measurement window
    calls1, t1, cpu1 = calls[TRADE_FULLINFO_GET], time.monotonic(), daemon.cpu_seconds()
    bans = sum(v for k, v in standin.stats.errors.items() if k.startswith("7:")) - errors0
    measured = (calls1 - calls0) / (t1 - t0)
    return {
        "sync_api_rate": rate,
        "api_latency_ms": latency_ms,
        "window_s": round(t1 - t0, 2),
        "fullinfo_calls": calls1 - calls0,
        "calls_per_s": round(measured, 1),
        "share_of_rate": round(measured / rate, 3),
        "code7_answers": bans,
        "backlog_left": standin.tmc.pending(standin.app_key),
        "daemon_cpu_ms_per_call": round((cpu1 - cpu0) / max(calls1 - calls0, 1) * 1000, 3),
        "meets_target": measured / rate >= 0.95 and bans == 0,
    }


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"benchmark": "quota", "machine": machine(), "runs": []}
    with tempfile.TemporaryDirectory(prefix="bench-quota-") as workdir:
        for rate in args.rates:
            run = await measure(rate, args.seconds, args.latency_ms, args.admin_url, Path(workdir))
            results["runs"].append(run)
    results["machine"]["load_1m_after"] = machine()["load_1m"]
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_quota", description=__doc__.split("\n")[0])
    parser.add_argument("--rates", type=lambda s: [int(x) for x in s.split(",")], default=[40, 200])
    parser.add_argument("--seconds", type=float, default=20.0, help="measurement window per rate")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="the stand-in's API latency")
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL)
    args = parser.parse_args(argv)
    started = time.monotonic()
    results = asyncio.run(_main(args))
    results["wall_s"] = round(time.monotonic() - started, 1)
    for run in results["runs"]:
        print(
            f"SYNC_API_RATE {run['sync_api_rate']:>5}: {run['calls_per_s']:>7} calls/s = "
            f"{run['share_of_rate'] * 100:.1f} % of the rate, code-7 answers {run['code7_answers']}",
            file=sys.stderr,
        )
    print(json.dumps(results, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
