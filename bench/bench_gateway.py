"""How many `taobao.trade.fullinfo.get` calls per second the stand-in's gateway serves on this machine.

The stand-in runs in its own process (`python -m simulator`, market frozen); signed clients in this
process call fullinfo for random tids for a bounded time. Prints one JSON object.

    .venv/bin/python -m bench.bench_gateway [--duration 10] [--concurrency 32] [--history 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from taobao.signing import sign
from taobao.timefmt import format_top_time

ROOT = Path(__file__).resolve().parents[1]


async def _start_server(history: int) -> tuple[asyncio.subprocess.Process, dict[str, Any]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "simulator",
        "--port",
        "0",
        "--rate",
        "0",
        "--history",
        str(history),
        "--seed",
        "1",
        "--shops",
        "3",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), timeout=60)
    return process, json.loads(line)


async def _tids(http: aiohttp.ClientSession, info: dict[str, Any], nick: str) -> list[int]:
    async with http.get(info["truth_url"], params={"shop": nick, "digest": "0"}) as response:
        truth = await response.json()
    return [int(tid) for tid in truth["trades"]]


async def _worker(
    http: aiohttp.ClientSession,
    info: dict[str, Any],
    session_key: str,
    tids: list[int],
    deadline: float,
    latencies: list[float],
    errors: list[str],
    rng: random.Random,
) -> None:
    fields = "tid,status,type,seller_nick,buyer_nick,created,modified,payment,orders"
    while time.perf_counter() < deadline:
        params = {
            "method": "taobao.trade.fullinfo.get",
            "app_key": info["app_key"],
            "timestamp": format_top_time(datetime.now(UTC)),
            "v": "2.0",
            "format": "json",
            "sign_method": "hmac-sha256",
            "session": session_key,
            "fields": fields,
            "tid": str(rng.choice(tids)),
        }
        params["sign"] = sign(params, info["app_secret"], "hmac-sha256")
        started = time.perf_counter()
        async with http.post(info["api_url"], data=params) as response:
            body = await response.read()
        latencies.append(time.perf_counter() - started)
        if response.status != 200 or b"error_response" in body:
            errors.append(body[:200].decode("utf-8", "replace"))


async def main(duration: float, concurrency: int, history: int) -> dict[str, Any]:
    process, info = await _start_server(history)
    try:
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as http:
            shop = info["shops"][0]
            tids = await _tids(http, info, shop["nick"])
            latencies: list[float] = []
            errors: list[str] = []
            started = time.perf_counter()
            deadline = started + duration
            await asyncio.gather(
                *(
                    _worker(http, info, shop["session"], tids, deadline, latencies, errors, random.Random(i))
                    for i in range(concurrency)
                )
            )
            elapsed = time.perf_counter() - started
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), timeout=30)
    latencies.sort()

    def pct(p: float) -> float:
        if not latencies:
            return 0.0
        return round(latencies[min(int(p * len(latencies)), len(latencies) - 1)] * 1000, 2)

    return {
        "benchmark": "gateway_fullinfo",
        "calls": len(latencies),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "duration_s": round(elapsed, 2),
        "calls_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "concurrency": concurrency,
        "history_trades": history,
        "shop_trades": len(tids),
        "cpus": os.cpu_count(),
        "setup": "stand-in in its own process; aiohttp clients in this process; hmac-sha256; POST form",
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--history", type=int, default=20_000)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.duration, args.concurrency, args.history))))
