"""Several replicas of the daemon on one database and one TMC group: throughput with 1, 2 and 3
replicas when the TOP quota is not the limit, and how the quota is shared when it is.

    .venv/bin/python -m bench.bench_replicas [--replicas 1,2,3] [--changes 6000] [--quota 60]
        [--quota-seconds 12] [--admin-url postgresql://postgres@127.0.0.1:5432/test]

Processes: the stand-in (bench/scenarios/standin_proc.py) and every replica (`python -m listener`,
SYNC_REPLICA_ID r1, r2, …) are children of this process, which only drives them and reads figures;
PostgreSQL is a third party. Each run has a fresh stand-in and a fresh database.

* throughput: the market makes N changes at once (TMC spreads the messages over the replicas'
  connections); changes/s from then until the stand-in has every message confirmed, with the API
  quota far away (SYNC_API_RATE 5000). Two profiles: `io` (50 ms API latency, SYNC_WORKERS=8 per
  replica: each replica is bound by its own concurrency, as when the API is slow) and `cpu` (no API
  latency, default workers: the machine's cores are the limit, shared by every process here).
* quota: the stand-in enforces R calls/s for the app (the R+1-th call in a second is answered code 7
  with a one-second ban) and every replica runs with SYNC_API_RATE=R against a backlog; fullinfo
  calls/s at the gateway over a window, in total and per replica (its `partner_id`), code-7 answers,
  the most calls in one second, and the shares the replicas wrote in their heartbeat rows. With the
  most replicas, one is then SIGKILLed and a second window shows the survivors taking its share.

Prints a table on stderr and one JSON object on stdout. Timings are goals, never CI asserts. The
machine is shared: its load is recorded before and after each run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench.daemon_proc import DaemonProcess, daemon_env
from bench.machine import machine
from bench.scenarios.database import throwaway_database
from bench.scenarios.runner import subscribed
from bench.scenarios.standin_client import StandInProcess
from daemon.demo import standin_settings
from store.migrate import migrate
from store.schema import connection_settings
from taobao.fields import TRADE_FULLINFO_GET

DEFAULT_ADMIN_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
FREE_API_RATE = 5000
SHOPS = 6
HEARTBEAT_SECONDS = 1.0
PROFILES = {
    "io": {"latency_ms": 50, "workers": 8},
    "cpu": {"latency_ms": 0, "workers": 0},
}


class Cluster:
    """A stand-in and `n` replicas on a fresh database."""

    def __init__(self, workdir: Path, admin_url: str, n: int, *, api_rate: float, latency_ms: float,
                 workers: int, history: int) -> None:  # fmt: skip
        self.workdir = workdir
        self.admin_url = admin_url
        self.n = n
        self.api_rate = api_rate
        self.workers = workers
        args = ["--seed", "5", "--shops", str(SHOPS), "--rate", "0", "--history", str(history),
                "--latency-ms", str(latency_ms), "--tmc-confirm-timeout", "60"]  # fmt: skip
        self.standin = StandInProcess(args, workdir / f"standin-{n}.log")
        self.replicas: dict[str, DaemonProcess] = {}
        self.dsn = ""

    async def start(self, dsn: str) -> None:
        self.dsn = dsn
        await migrate(dsn)
        info = await self.standin.start()
        for i in range(1, self.n + 1):
            name = f"r{i}"
            values: dict[str, Any] = {
                "database_url": dsn, **standin_settings(info),
                "sync_api_rate": self.api_rate, "sync_workers": self.workers, "sync_initial_load_days": 0,
                "sync_replica_id": name, "sync_heartbeat_seconds": HEARTBEAT_SECONDS,
                "http_port": 0, "log_level": "WARNING",
            }  # fmt: skip
            daemon = DaemonProcess(daemon_env(values), self.workdir / f"{name}-of-{self.n}.log")
            await daemon.start()
            self.replicas[name] = daemon
        deadline = time.monotonic() + 60
        while not subscribed(await self.standin.tmc(), self.n - 1, SHOPS):
            if time.monotonic() > deadline:
                logs = "\n".join(d.log_tail() for d in self.replicas.values())
                raise RuntimeError(f"the replicas did not all connect and permit:\n{logs}")
            await asyncio.sleep(0.1)  # polling the stand-in's counter

    async def stop(self) -> None:
        await asyncio.gather(*(d.stop(grace=20) for d in self.replicas.values()))
        await self.standin.stop()

    async def changes(self, n: int) -> None:
        """`n` market changes at once (each published on the TMC queue)."""
        left = n
        while left > 0:
            step = min(left, 20_000)
            await self.standin.market(action="step", n=step)
            left -= step

    async def settled(self, within: float) -> float:
        """Seconds until every published message is confirmed."""
        started = time.monotonic()
        while True:
            tmc = await self.standin.tmc()
            if tmc["confirmed"] >= tmc["published"] and tmc["pending"] == 0:
                return time.monotonic() - started
            if time.monotonic() - started > within:
                raise TimeoutError(f"messages left unconfirmed after {within:g} s: {tmc['pending']}")
            await asyncio.sleep(0.05)  # polling the stand-in's counters

    async def fullinfo_calls(self) -> list[dict[str, Any]]:
        stats = await self.standin.get("/__standin/stats", recent="100000")
        return [r for r in stats["recent"] if r["method"] == TRADE_FULLINFO_GET]

    async def shares(self) -> dict[str, float]:
        conn = await asyncpg.connect(self.dsn, server_settings=connection_settings())
        try:
            rows = await conn.fetch(
                "SELECT replica, api_rate FROM replicas WHERE stopped_at IS NULL"
                " AND backend_pid IN (SELECT pid FROM pg_stat_activity)"
            )
        finally:
            await conn.close()
        return {r["replica"]: round(float(r["api_rate"] or 0), 2) for r in rows}

    def cpu_seconds(self) -> float:
        return sum(
            d.cpu_seconds() for d in self.replicas.values() if d.process and d.process.returncode is None
        )


def _caller(record: dict[str, Any]) -> str:
    return str(record["params"].get("partner_id", "")).rpartition("/")[2] or "?"


def _window(calls: list[dict[str, Any]], t0: datetime, t1: datetime) -> dict[str, Any]:
    inside = [c for c in calls if t0 <= datetime.fromisoformat(c["at"]) < t1]
    ok = [c for c in inside if c["code"] == 0]
    seconds = (t1 - t0).total_seconds()
    per_second = Counter(int(datetime.fromisoformat(c["at"]).timestamp()) for c in inside)
    # Whole calendar seconds only: the first and last are cut by the window.
    full = [n for s, n in per_second.items() if t0.timestamp() <= s and s + 1 <= t1.timestamp()]
    by_replica = Counter(_caller(c) for c in ok)
    return {
        "window_s": round(seconds, 2),
        "calls_per_s": round(len(ok) / seconds, 1),
        "by_replica_per_s": {r: round(n / seconds, 1) for r, n in sorted(by_replica.items())},
        "code7_answers": sum(1 for c in inside if c["code"] == 7),
        "max_calls_in_one_second": max(full, default=0),
    }


async def throughput(workdir: Path, admin_url: str, n: int, changes: int, profile: str) -> dict[str, Any]:
    shape = PROFILES[profile]
    cluster = Cluster(workdir, admin_url, n, api_rate=FREE_API_RATE, latency_ms=shape["latency_ms"],
                      workers=shape["workers"], history=max(20_000, changes * 2))  # fmt: skip
    load_before = machine()["load_1m"]
    async with throwaway_database(admin_url, "bench_replicas") as (dsn, _):
        try:
            await cluster.start(dsn)
            await cluster.changes(50)  # warm-up: every replica has connected and fetched
            await cluster.settled(60)
            cpu0, t0 = cluster.cpu_seconds(), datetime.now(UTC)
            await cluster.changes(changes)
            seconds = await cluster.settled(600)
            t1, cpu1 = datetime.now(UTC), cluster.cpu_seconds()
            window = _window(await cluster.fullinfo_calls(), t0, t1)
        finally:
            await cluster.stop()
    return {
        "profile": profile,
        "replicas": n,
        "changes": changes,
        "seconds": round(seconds, 2),
        "changes_per_s": round(changes / seconds, 1),
        "fullinfo_per_s": window["calls_per_s"],
        "fullinfo_by_replica_per_s": window["by_replica_per_s"],
        "replicas_cpu_s": round(cpu1 - cpu0, 2),
        "load_1m": {"before": load_before, "after": machine()["load_1m"]},
    }


async def quota(workdir: Path, admin_url: str, n: int, rate: int, seconds: float) -> dict[str, Any]:
    backlog = int(rate * (seconds * (2 if n > 1 else 1) + 10) * 1.5)
    cluster = Cluster(
        workdir, admin_url, n, api_rate=rate, latency_ms=20, workers=0, history=max(20_000, backlog * 3)
    )
    load_before = machine()["load_1m"]
    result: dict[str, Any] = {"replicas": n, "sync_api_rate": rate}
    async with throwaway_database(admin_url, "bench_replicas") as (dsn, _):
        try:
            await cluster.start(dsn)
            # The limit goes on once everyone is connected; the stand-in then answers as TOP does.
            await cluster.standin.post("/__standin/faults", {"rate_limit_per_second": rate, "ban_seconds": 1})
            await cluster.changes(backlog)
            await asyncio.sleep(3 * HEARTBEAT_SECONDS)  # the pipeline fills and the shares settle
            t0 = datetime.now(UTC)
            await asyncio.sleep(seconds)  # the measurement window
            t1 = datetime.now(UTC)
            result["shares"] = await cluster.shares()
            if n > 1:
                victim = f"r{n}"
                process = cluster.replicas[victim].process
                assert process is not None
                process.send_signal(signal.SIGKILL)
                await process.wait()
                await asyncio.sleep(3 * HEARTBEAT_SECONDS)  # the survivors re-split the quota
                t2 = datetime.now(UTC)
                await asyncio.sleep(seconds)  # the second window
                t3 = datetime.now(UTC)
                result["shares_after_kill"] = await cluster.shares()
            calls = await cluster.fullinfo_calls()
            result["window"] = _window(calls, t0, t1)
            if n > 1:
                result["after_sigkill_of_one"] = _window(calls, t2, t3)
        finally:
            await cluster.stop()
    result["load_1m"] = {"before": load_before, "after": machine()["load_1m"]}
    return result


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"benchmark": "replicas", "machine": machine(), "throughput": [], "quota": []}
    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as workdir:
        for profile in args.profiles:
            for n in args.replicas:
                run = await throughput(Path(workdir), args.admin_url, n, args.changes, profile)
                results["throughput"].append(run)
                _say(f"throughput {profile:>3} {n} replica(s): {run['changes_per_s']:>7} changes/s "
                     f"({run['fullinfo_by_replica_per_s']}), load {run['load_1m']}")  # fmt: skip
        for n in args.replicas:
            run = await quota(Path(workdir), args.admin_url, n, args.quota, args.quota_seconds)
            results["quota"].append(run)
            window = run["window"]
            _say(f"quota {args.quota}/s, {n} replica(s): {window['calls_per_s']} calls/s "
                 f"{window['by_replica_per_s']}, code-7 {window['code7_answers']}, "
                 f"max {window['max_calls_in_one_second']} in a second, shares {run['shares']}")  # fmt: skip
            if "after_sigkill_of_one" in run:
                after = run["after_sigkill_of_one"]
                _say(f"   after SIGKILL of one: {after['calls_per_s']} calls/s {after['by_replica_per_s']}, "
                     f"code-7 {after['code7_answers']}, shares {run['shares_after_kill']}")  # fmt: skip
    results["machine"]["load_1m_after"] = machine()["load_1m"]
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_replicas", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--replicas", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 3])
    parser.add_argument("--profiles", type=lambda s: s.split(","), default=list(PROFILES))
    parser.add_argument("--changes", type=int, default=6000, help="market changes per throughput run")
    parser.add_argument("--quota", type=int, default=60, help="SYNC_API_RATE and the stand-in's limit")
    parser.add_argument("--quota-seconds", type=float, default=12.0, help="each quota measurement window")
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL)
    args = parser.parse_args(argv)
    started = time.monotonic()
    results = asyncio.run(_main(args))
    results["wall_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(results, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
