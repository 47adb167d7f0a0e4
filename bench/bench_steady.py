"""The daemon's CPU per change at the steady rates shops really run (bench.bench_e2e's setup: 3 shops,
API latency 0, the daemon as `python -m listener`), and optionally where that CPU goes.

    .venv/bin/python -m bench.bench_steady [--rates 20,100] [--seconds 20] [--profile DIR]

Per rate: the market runs at that many changes/s for --seconds, then pauses; the phase ends when every
message is confirmed and every NOTIFY matched. Reported: the daemon's process CPU (user + system, from
/proc) over the phase divided by the changes published, publish → NOTIFY p50/p99, and the machine's
load. With --profile, `py-spy record` (not a project dependency: install it into your venv) samples the
daemon during each phase; DIR gets the raw collapsed stacks and a top list (`bench.profile_top`).
Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from bench.bench_e2e import CHANNEL, DEFAULT_ADMIN_URL, FREE_API_RATE, Bench, Plan
from bench.profile_top import top_entries
from bench.scenarios.database import throwaway_database


async def _profiled(bench: Bench, rate: float, seconds: float, profile: Path | None) -> dict[str, Any]:
    assert bench.daemon is not None
    spy: asyncio.subprocess.Process | None = None
    raw = None if profile is None else profile / f"rate-{rate:g}.txt"
    if raw is not None:
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        spy = await asyncio.create_subprocess_exec(
            py_spy, "record", "--pid", str(bench.daemon.pid), "--format", "raw", "--rate", "200",
            "--output", str(raw), "--nonblocking",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
    cpu0, published0 = bench.daemon.cpu_seconds(), bench.market_changes
    phase = await bench.latency(0, rate, seconds)
    cpu = bench.daemon.cpu_seconds() - cpu0
    changes = bench.market_changes - published0
    if spy is not None:
        spy.send_signal(2)  # py-spy writes its file on SIGINT
        await spy.wait()
    phase["daemon_cpu_s"] = round(cpu, 3)
    phase["daemon_cpu_ms_per_change"] = round(cpu / max(changes, 1) * 1000, 3)
    phase["load_1m"] = round(os.getloadavg()[0], 2)
    if raw is not None and raw.exists():
        phase["profile_top"] = top_entries(raw.read_text(), limit=15)
    return phase


async def _run(admin_url: str, rates: list[float], seconds: float, profile: Path | None) -> dict[str, Any]:
    async with throwaway_database(admin_url, "bench_steady") as (dsn, _):
        with tempfile.TemporaryDirectory(prefix="bench-steady-") as workdir:
            bench = Bench(Plan.of(True), dsn, Path(workdir))
            await bench.standin.start()
            listener = await asyncpg.connect(dsn)
            try:
                await bench.start_daemon(FREE_API_RATE)
                await listener.add_listener(CHANNEL, bench.probe.on_notify)
                bench.standin.market.step(300)  # warm up: connections, prepared statements, caches
                await bench.drained()
                idle_cpu0, idle_started = bench.daemon.cpu_seconds(), time.monotonic()  # type: ignore[union-attr]
                await asyncio.sleep(5)  # idle CPU: what the daemon spends with nothing to do
                idle = (bench.daemon.cpu_seconds() - idle_cpu0) / (time.monotonic() - idle_started)  # type: ignore[union-attr]
                phases = [await _profiled(bench, rate, seconds, profile) for rate in rates]
            finally:
                await bench.stop_daemon()
                await listener.close()
                await bench.standin.stop()
    return {"benchmark": "steady", "seconds": seconds, "idle_cores": round(idle, 4), "phases": phases}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_steady", description=__doc__.split("\n")[0])
    parser.add_argument("--rates", default="20,100", help="changes/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--profile", type=Path, default=None, help="folder for py-spy profiles")
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL)
    args = parser.parse_args(argv)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    results = asyncio.run(_run(args.admin_url, rates, args.seconds, args.profile))
    for phase in results["phases"]:
        print(
            f"{phase['rate_per_s']:>6}/s: {phase['changes']} changes, daemon CPU "
            f"{phase['daemon_cpu_ms_per_change']} ms per change, p50/p99 {phase['p50_ms']} / "
            f"{phase['p99_ms']} ms, load {phase['load_1m']}",
            file=sys.stderr,
        )
    print(json.dumps(results, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
