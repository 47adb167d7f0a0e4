"""The whole product end to end: stand-in market → TMC → daemon → fullinfo → PostgreSQL → NOTIFY.

    .venv/bin/python -m bench.bench_e2e [--quick] [--admin-url postgresql://postgres@127.0.0.1:5432/test]

Prints a readable table on stderr and one JSON object on stdout. Timings are goals, never CI asserts.

Processes: the daemon runs as `python -m listener` (settings from the environment), so its CPU time and
memory are its own (/proc/<pid>); this process runs the stand-in (TOP gateway, TMC server, market),
drives the load and LISTENs for the daemon's NOTIFYs. PostgreSQL is a third party on the same machine.
A throwaway database is created on the server of --admin-url and dropped afterwards.

Phases (the daemon keeps running between the first ones):
  throughput_0ms / throughput_20ms  N market changes published at once with the stand-in's API latency
      at 0 and 20 ms; changes/s from the first publish until every message is confirmed, and the
      daemon's CPU seconds over that interval (per 10k changes and per change).
  latency_0ms / latency_20ms  the market runs at half the measured throughput; publish → NOTIFY lag of
      every change, matched by tid and `modified` (a NOTIFY covers the changes of its tid up to its
      `modified`). latency_0ms_at_100: the same at a light 100 changes/s, for comparison.
  burst_clustered / burst / burst_at_quota  new trades that each change 3-4 times (bench/burst.py):
      created, Alipay order, paid, memo. Fullinfo calls per change when a trade's changes come at one
      instant (an order placed and paid at once), when they are spread over 2 s with the API quota far
      away, and spread over 2 s with SYNC_API_RATE well below the burst's rate (a Double-11 minute).
  backlog  100k trade messages published while the daemon is stopped, then the daemon starts: its
      peak RSS (VmHWM) while it works through the backlog for a bounded time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import sys
import tempfile
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from bench.burst import publish, run_burst
from bench.daemon_proc import DaemonProcess, daemon_env, machine_cpu_seconds
from bench.permits import permit_every_shop
from bench.scenarios.database import throwaway_database
from daemon.demo import standin_settings
from simulator.market import MarketChange
from simulator.standin import StandIn, StandInConfig
from simulator.tmc_server import TmcServerConfig
from taobao.fields import TRADE_FULLINFO_GET

DEFAULT_ADMIN_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
CHANNEL = "trade_changed"
# Far above what the stand-in serves on this machine: the quota is not the limit unless a phase says so.
FREE_API_RATE = 5000


@dataclass(frozen=True)
class Plan:
    changes: int  # per throughput phase
    latency_seconds: float  # per latency phase
    burst_trades: int
    backlog: int
    backlog_watch_seconds: float
    # SYNC_API_RATE for the quota-bound burst: about a quarter of the burst's change rate (the limiter
    # lets one second's worth of calls through at once, so a quota close to the rate hardly binds).
    quota: float
    history: int = 20_000

    @classmethod
    def of(cls, quick: bool) -> Plan:
        if quick:
            return cls(
                changes=2500, latency_seconds=4, burst_trades=400, backlog=100_000, backlog_watch_seconds=5,
                quota=100,
            )  # fmt: skip
        return cls(
            changes=10_000, latency_seconds=12, burst_trades=1500, backlog=100_000, backlog_watch_seconds=20,
            quota=300,
        )  # fmt: skip


@dataclass
class LagProbe:
    """Publish times per tid, matched against the daemon's NOTIFYs while armed."""

    armed: bool = False
    pending: dict[int, deque[tuple[int, float]]] = field(default_factory=lambda: defaultdict(deque))
    lags: list[float] = field(default_factory=list)

    def on_change(self, change: MarketChange) -> None:
        if self.armed:
            self.pending[change.tid].append((int(change.modified.timestamp()), time.monotonic()))

    def on_notify(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        received = time.monotonic()
        if not self.armed:
            return
        body = json.loads(str(payload))
        waiting = self.pending.get(int(body["tid"]))
        if not waiting:
            return
        modified = int(datetime.fromisoformat(body["modified"]).timestamp())
        while waiting and waiting[0][0] <= modified:
            self.lags.append(received - waiting.popleft()[1])

    def arm(self) -> None:
        self.pending.clear()
        self.lags.clear()
        self.armed = True

    def unmatched(self) -> int:
        return sum(len(queue) for queue in self.pending.values())


class CpuWatch:
    """CPU used during one phase, in cores (1.0 = one CPU busy all the time): the daemon, this process
    (stand-in + load + NOTIFY probe) and the whole machine (also PostgreSQL and anything else running,
    which on a shared machine is the noise to read the other figures against)."""

    def __init__(self, daemon: DaemonProcess) -> None:
        self.daemon = daemon
        self.started = time.monotonic()
        self.daemon0 = daemon.cpu_seconds()
        self.own0 = time.process_time()
        self.machine0 = machine_cpu_seconds()[0]

    def cores(self) -> dict[str, float]:
        wall = time.monotonic() - self.started
        return {
            "daemon": round((self.daemon.cpu_seconds() - self.daemon0) / wall, 2),
            "standin": round((time.process_time() - self.own0) / wall, 2),
            "machine": round((machine_cpu_seconds()[0] - self.machine0) / wall, 2),
        }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


class Bench:
    def __init__(
        self, plan: Plan, dsn: str, workdir: Path, daemon_settings: dict[str, str] | None = None
    ) -> None:
        self.plan = plan
        self.daemon_settings = dict(daemon_settings or {})
        self.dsn = dsn
        self.workdir = workdir
        self.standin = StandIn(
            StandInConfig(
                seed=5,
                shops=3,
                market_rate=0,
                history_trades=plan.history,
                tmc=TmcServerConfig(confirm_timeout=120.0, failed_redelivery_delay=5.0, seed=5),
            )
        )
        self.probe = LagProbe()
        self.standin.add_change_listener(self.probe.on_change)
        self.daemon: DaemonProcess | None = None
        self.metrics_url = ""
        self._daemons = 0

    # ----------------------------------------------------------------------------- plumbing

    @property
    def market_changes(self) -> int:
        return self.standin.tmc.stats.published

    def fullinfo_calls(self) -> int:
        return self.standin.stats.calls[TRADE_FULLINFO_GET]

    async def start_daemon(self, api_rate: float) -> DaemonProcess:
        standin = self.standin
        self._daemons += 1
        values: dict[str, Any] = {
            "database_url": self.dsn,
            **standin_settings(standin.connection_info()),
            "sync_api_rate": api_rate,
            "http_port": free_port(),
            "log_level": "WARNING",
            # The reconciler stays out of the stream's figures: no 90-day initial load of the history,
            # a gap after a restart is backfilled beside the stream rather than before it, and without
            # the 10-minute overlap (a restart between phases would re-read every trade changed in the
            # phases before). The stream's own fetches are counted from the daemon's /metrics anyway.
            "sync_initial_load_days": 0,
            "sync_stream_during_backfill": True,
            "sync_overlap_seconds": 0,
        }
        values.update(self.daemon_settings)
        daemon = DaemonProcess(daemon_env(values), self.workdir / f"daemon-{self._daemons}.log")
        self.metrics_url = f"http://127.0.0.1:{values['http_port']}/metrics"
        connections = standin.tmc.stats.connections
        self.daemon = daemon
        await daemon.start()
        await self.until(lambda: standin.tmc.stats.connections > connections, 60, "the daemon to connect")
        return daemon

    async def stream_counts(self) -> tuple[float, float, float]:
        """The daemon's stream fetches, commit batches and committed trades so far."""
        metrics = await self.daemon_metrics()
        return (
            metrics["order_sync_fullinfo_fetches_total"],
            metrics["order_sync_store_batches_total"],
            metrics["order_sync_trades_committed_total"],
        )

    async def daemon_metrics(self) -> dict[str, float]:
        """The daemon's /metrics, summed over labels: {name: value}."""
        async with aiohttp.ClientSession() as http, http.get(self.metrics_url) as response:
            text = await response.text()
        totals: dict[str, float] = defaultdict(float)
        for line in text.splitlines():
            if line and not line.startswith("#"):
                series, _, value = line.rpartition(" ")
                totals[series.partition("{")[0]] += float(value)
        return totals

    async def stop_daemon(self) -> None:
        if self.daemon is not None:
            code = await self.daemon.stop()
            if code not in (0, None):
                print(f"daemon exited with {code}:\n{self.daemon.log_tail()}", file=sys.stderr)
            self.daemon = None

    async def until(self, condition: Callable[[], bool], within: float, what: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not condition():
            if loop.time() > deadline:
                raise TimeoutError(f"gave up after {within:g} s waiting for {what}")
            if self.daemon is not None and self.daemon.process and self.daemon.process.returncode is not None:
                raise RuntimeError(f"the daemon died:\n{self.daemon.log_tail()}")
            await asyncio.sleep(0.005)

    async def drained(self, within: float = 300) -> None:
        tmc, key = self.standin.tmc, self.standin.app_key
        await self.until(lambda: tmc.pending(key) == 0, within, "every message to be confirmed")

    def _run_market(self, rate: float) -> None:
        market = self.standin.market
        if market.running:
            market.set_rate(rate)
            market.resume()
        else:
            market.start(rate)

    # ----------------------------------------------------------------------------- phases

    async def throughput(self, latency_ms: float) -> dict[str, Any]:
        assert self.daemon is not None
        self.standin.faults.latency_ms = latency_ms
        await self.drained()
        n = self.plan.changes
        cpu0, calls0, stream0 = self.daemon.cpu_seconds(), self.fullinfo_calls(), await self.stream_counts()
        watch = CpuWatch(self.daemon)
        started = time.monotonic()
        await publish(self.standin.market, n)
        await self.drained()
        seconds = time.monotonic() - started
        cpu = self.daemon.cpu_seconds() - cpu0
        calls = self.fullinfo_calls() - calls0
        fetches, batches, committed = (
            b - a for a, b in zip(stream0, await self.stream_counts(), strict=True)
        )
        return {
            "api_latency_ms": latency_ms,
            "changes": n,
            "seconds": round(seconds, 2),
            "changes_per_s": round(n / seconds, 1),
            "fullinfo_calls": calls,
            "stream_fetches": int(fetches),
            "commits": int(batches),
            "trades_per_commit": round(committed / max(batches, 1), 1),
            "daemon_cpu_s": round(cpu, 2),
            "daemon_cpu_s_per_10k": round(cpu / n * 10_000, 2),
            "daemon_cpu_ms_per_change": round(cpu / n * 1000, 3),
            "daemon_cpu_ms_per_fullinfo": round(cpu / max(calls, 1) * 1000, 3),
            "cpu_cores": watch.cores(),
        }

    async def latency(self, latency_ms: float, rate: float, seconds: float | None = None) -> dict[str, Any]:
        self.standin.faults.latency_ms = latency_ms
        await self.drained()
        self.probe.arm()
        assert self.daemon is not None
        watch = CpuWatch(self.daemon)
        published0 = self.market_changes
        self._run_market(rate)
        await asyncio.sleep(seconds or self.plan.latency_seconds)  # the length of the measurement
        self.standin.market.pause()
        await self.drained()
        await self.until(lambda: self.probe.unmatched() == 0, 5, "the last NOTIFYs")
        self.probe.armed = False
        lags = [lag * 1000 for lag in self.probe.lags]
        p99 = _percentile(lags, 0.99) if lags else None
        return {
            "api_latency_ms": latency_ms,
            "rate_per_s": round(rate, 1),
            "changes": self.market_changes - published0,
            "matched": len(lags),
            "p50_ms": round(statistics.median(lags), 1) if lags else None,
            "p99_ms": round(p99, 1) if p99 is not None else None,
            "max_ms": round(max(lags), 1) if lags else None,
            "target_p99_ms": latency_ms + 25,
            "meets_target": p99 is not None and p99 <= latency_ms + 25,
            "cpu_cores": watch.cores(),
        }

    async def burst(self, latency_ms: float, api_rate: float, span: float = 2.0) -> dict[str, Any]:
        self.standin.faults.latency_ms = latency_ms
        await self.drained()
        calls0, published0, stream0 = self.fullinfo_calls(), self.market_changes, await self.stream_counts()
        assert self.daemon is not None
        watch = CpuWatch(self.daemon)
        started = time.monotonic()
        trades = self.plan.burst_trades
        made = await run_burst(self.standin.market, trades=trades, create_window=1.0, span=span)
        await self.drained()
        calls = self.fullinfo_calls() - calls0
        fetches = int((await self.stream_counts())[0] - stream0[0])
        assert self.market_changes - published0 == made
        return {
            "api_latency_ms": latency_ms,
            "sync_api_rate": api_rate,
            "spread_s": span,
            "trades": trades,
            "changes": made,
            "seconds": round(time.monotonic() - started, 2),
            "fullinfo_calls": calls,  # every caller (the gateway's count)
            "stream_fetches": fetches,  # the stream's own (the daemon's count)
            "calls_per_change": round(fetches / made, 3),
            "calls_per_trade": round(fetches / trades, 2),
            "meets_target": fetches / made <= 0.35,
            "cpu_cores": watch.cores(),
        }

    async def backlog(self) -> dict[str, Any]:
        """Publish the backlog straight onto the TMC queue (the market needs ~180 µs per change; these are
        trade messages for existing trades, which the daemon handles exactly like market changes)."""
        await self.stop_daemon()
        standin = self.standin
        tmc, market = standin.tmc, standin.market
        rng = random.Random(3)
        records = list(market.records())
        now = datetime.now(UTC)
        for _ in range(self.plan.backlog):
            record = records[rng.randrange(len(records))]
            shop = market.shops[record.shop]
            tmc.publish(
                standin.app_key,
                topic="taobao_trade_TradeMemoModified",
                content=json.dumps({"tid": record.tid, "seller_nick": shop.nick, "status": record.status}),
                nick=shop.nick,
                user_id=shop.user_id,
                time=now,
            )
        confirmed0 = tmc.stats.confirmed
        daemon = await self.start_daemon(FREE_API_RATE)
        started = time.monotonic()
        peak_rss = 0
        while time.monotonic() - started < self.plan.backlog_watch_seconds:
            rss, hwm = daemon.memory_kib()
            peak_rss = max(peak_rss, hwm, rss)
            await asyncio.sleep(0.05)  # sampling interval
        confirmed = tmc.stats.confirmed - confirmed0
        seconds = time.monotonic() - started
        rss_now, hwm = daemon.memory_kib()
        peak_rss = max(peak_rss, hwm)
        await self.stop_daemon()
        return {
            "backlog": self.plan.backlog,
            "watched_s": round(seconds, 1),
            "confirmed_while_watched": confirmed,
            "drain_per_s": round(confirmed / seconds, 1),
            "peak_rss_mb": round(peak_rss / 1024, 1),
            "rss_at_end_mb": round(rss_now / 1024, 1),
            "target_mb": 200,
            "meets_target": peak_rss / 1024 <= 200,
        }

    async def run(self) -> dict[str, Any]:
        standin = self.standin
        await standin.start()
        await permit_every_shop(standin)
        listener: asyncpg.Connection = await asyncpg.connect(self.dsn)
        results: dict[str, Any] = {"benchmark": "e2e", "cpus": os.cpu_count(), "plan": self.plan.__dict__}
        try:
            daemon = await self.start_daemon(FREE_API_RATE)
            await listener.add_listener(CHANNEL, self.probe.on_notify)
            standin.market.step(300)  # warm up: connections, prepared statements, caches
            await self.drained()
            results["idle_rss_mb"] = round(daemon.memory_kib()[0] / 1024, 1)
            results["throughput_0ms"] = await self.throughput(0)
            results["throughput_20ms"] = await self.throughput(20)
            results["latency_0ms"] = await self.latency(0, results["throughput_0ms"]["changes_per_s"] / 2)
            results["latency_20ms"] = await self.latency(20, results["throughput_20ms"]["changes_per_s"] / 2)
            results["latency_0ms_at_100"] = await self.latency(0, 100)
            results["burst_clustered"] = await self.burst(20, FREE_API_RATE, span=0.0)
            results["burst"] = await self.burst(20, FREE_API_RATE)
            await self.stop_daemon()
            await self.start_daemon(self.plan.quota)
            results["burst_at_quota"] = await self.burst(20, self.plan.quota)
            results["backlog"] = await self.backlog()
        finally:
            await self.stop_daemon()
            await listener.close()
            await standin.stop()
        thr = results["throughput_0ms"]
        results["targets"] = {
            "cpu_ms_per_change<=0.5": thr["daemon_cpu_ms_per_change"] <= 0.5,
            "p99_0ms<=25": results["latency_0ms"]["meets_target"],
            "p99_20ms<=45": results["latency_20ms"]["meets_target"],
            "burst_clustered_calls_per_change<=0.35": results["burst_clustered"]["meets_target"],
            "burst_calls_per_change<=0.35": results["burst"]["meets_target"],
            "burst_at_quota_calls_per_change<=0.35": results["burst_at_quota"]["meets_target"],
            "backlog_rss<=200MB": results["backlog"]["meets_target"],
        }
        return results


def table(results: dict[str, Any]) -> str:
    t0, t20 = results["throughput_0ms"], results["throughput_20ms"]
    l0, l20 = results["latency_0ms"], results["latency_20ms"]
    bc, b, bq, bl = (
        results["burst_clustered"],
        results["burst"],
        results["burst_at_quota"],
        results["backlog"],
    )
    rows = [
        ("changes/s end to end, API 0 ms", f"{t0['changes_per_s']}", ""),
        ("changes/s end to end, API 20 ms", f"{t20['changes_per_s']}", ""),
        ("daemon CPU s per 10k changes (API 0 ms)", f"{t0['daemon_cpu_s_per_10k']}", "≤ 5.0"),
        ("daemon CPU ms per change (API 0 / 20 ms)",
         f"{t0['daemon_cpu_ms_per_change']} / {t20['daemon_cpu_ms_per_change']}", "≤ 0.5"),
        (f"publish→NOTIFY p50/p99 ms, API 0 ms @ {l0['rate_per_s']}/s",
         f"{l0['p50_ms']} / {l0['p99_ms']}", "p99 ≤ 25"),
        (f"publish→NOTIFY p50/p99 ms, API 20 ms @ {l20['rate_per_s']}/s",
         f"{l20['p50_ms']} / {l20['p99_ms']}", "p99 ≤ 45"),
        ("publish→NOTIFY p50/p99 ms, API 0 ms @ 100/s",
         "{p50_ms} / {p99_ms}".format(**results["latency_0ms_at_100"]), ""),
        ("fullinfo calls per change, burst at one instant", f"{bc['calls_per_change']}", "≤ 0.35"),
        ("fullinfo calls per change, burst over 2 s", f"{b['calls_per_change']}", "≤ 0.35"),
        (f"fullinfo calls per change, burst over 2 s, quota {bq['sync_api_rate']}/s",
         f"{bq['calls_per_change']}", "≤ 0.35"),
        (f"daemon peak RSS MB, {bl['backlog']} backlog", f"{bl['peak_rss_mb']}", "≤ 200"),
        ("daemon RSS MB when idle", f"{results['idle_rss_mb']}", ""),
        ("CPU cores daemon / stand-in / machine, API 0 ms",
         "{daemon} / {standin} / {machine}".format(**t0["cpu_cores"]), f"of {results['cpus']}"),
    ]  # fmt: skip
    width = max(len(r[0]) for r in rows)
    lines = [f"{'figure':<{width}}  {'measured':>16}  target"]
    lines += [f"{name:<{width}}  {value:>16}  {target}" for name, value, target in rows]
    return "\n".join(lines)


async def _with_database(admin_url: str, plan: Plan, daemon_settings: dict[str, str]) -> dict[str, Any]:
    async with throwaway_database(admin_url, "bench_e2e") as (dsn, _):
        with tempfile.TemporaryDirectory(prefix="bench-e2e-") as workdir:
            return await Bench(plan, dsn, Path(workdir), daemon_settings).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_e2e", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="smaller phases; the whole run in under a minute"
    )
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a daemon setting for every phase, e.g. --set SYNC_BATCH_MS=20 (repeatable)",
    )
    args = parser.parse_args(argv)
    daemon_settings = dict(item.split("=", 1) for item in args.set)
    started = time.monotonic()
    results = asyncio.run(_with_database(args.admin_url, Plan.of(args.quick), daemon_settings))
    results["daemon_settings"] = daemon_settings
    results["wall_s"] = round(time.monotonic() - started, 1)
    print(table(results), file=sys.stderr)
    print(json.dumps(results, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
