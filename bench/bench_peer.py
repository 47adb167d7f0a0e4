"""The product against a typical ISV pipeline (bench/peer), side by side on one stand-in in one run.

    .venv/bin/python -m bench.bench_peer [--quick] [--admin-url postgresql://postgres@127.0.0.1:5432/test]
        [--peer-workers 16] [--rate 100] [--latency-ms 20]

Needs the bench extra (`pip install -e '.[bench]'`: tmcpy, py-taobao-open, psycopg2-binary).

Both pipelines are child processes of this one: the daemon (`python -m listener`) and the peer
(`python -m bench.peer`, tmcpy + py-taobao-open + a thread pool + psycopg2). Each writes its own database
on the same PostgreSQL server. This process runs the stand-in (TOP gateway, TMC server, market) and
publishes every market change to two TMC groups, one per pipeline, so both see the same changes; it
LISTENs to both pipelines' NOTIFYs and matches them to publish times (a NOTIFY covers the changes of its
tid up to its `modified`). CPU times come from /proc/<pid>/stat of each pipeline's process.

Phases:
  side_by_side  the market runs at --rate changes/s for a while with the stand-in's API latency at
      --latency-ms, both pipelines on: CPU per change and publish → NOTIFY lag of each.
  alone_ours / alone_peer  N changes published at once to one pipeline (API latency 0): wall
      changes/s and CPU per change with the machine to itself.
Ratios: peer/ours CPU per change (= ours/peer changes per CPU-second, throughput per core),
peer/ours lag p50 and p99, ours/peer wall throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench.burst import publish
from bench.daemon_proc import CLOCK_TICKS, ROOT, DaemonProcess, daemon_env
from bench.machine import machine
from bench.permits import permit_every_shop
from bench.scenarios.database import throwaway_database
from daemon.demo import standin_settings
from simulator.market import MarketChange
from simulator.standin import StandIn, StandInConfig
from simulator.tmc_server import TmcServerConfig
from taobao.timefmt import parse_top_time

DEFAULT_ADMIN_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
OURS_GROUP, PEER_GROUP, NOBODY = "ours", "peer", "nobody"
PEER_CHANNEL = "peer_changed"
PEER_FAILURE_LINE = "sync failed"  # what bench/peer/pipeline.py logs for each message it drops
OUR_CHANNEL = "trade_changed"


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass
class Probe:
    """Publish instants per tid, matched against one pipeline's NOTIFYs."""

    name: str
    parse_modified: Callable[[str], datetime]
    pending: dict[int, deque[tuple[int, float]]] = field(default_factory=lambda: defaultdict(deque))
    lags: list[float] = field(default_factory=list)
    last_match: float = 0.0
    notifies: int = 0

    def published(self, change: MarketChange, at: float) -> None:
        self.pending[change.tid].append((int(change.modified.timestamp()), at))

    def on_notify(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        received = time.monotonic()
        self.notifies += 1
        body = json.loads(str(payload))
        waiting = self.pending.get(int(body["tid"]))
        if not waiting:
            return
        modified = int(self.parse_modified(str(body["modified"])).timestamp())
        while waiting and waiting[0][0] <= modified:
            self.lags.append(received - waiting.popleft()[1])
            self.last_match = received

    def unmatched(self) -> int:
        return sum(len(q) for q in self.pending.values())

    def reset(self) -> None:
        self.pending.clear()
        self.lags.clear()


@dataclass
class PeerProcess:
    env: dict[str, str]
    log_path: Path
    process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.peer", cwd=ROOT, env=self.env,
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
            )  # fmt: skip

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.terminate()
        try:
            async with asyncio.timeout(20):
                await self.process.wait()
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000, 1)


class PeerBench:
    def __init__(self, args: argparse.Namespace, our_dsn: str, peer_dsn: str, workdir: Path) -> None:
        self.args = args
        self.our_dsn, self.peer_dsn, self.workdir = our_dsn, peer_dsn, workdir
        self.standin = StandIn(
            StandInConfig(
                seed=5, shops=3, market_rate=0, history_trades=2000, tmc_group=OURS_GROUP,
                tmc=TmcServerConfig(confirm_timeout=120.0, failed_redelivery_delay=5.0, seed=5),
            )
        )  # fmt: skip
        self.ours = Probe("ours", datetime.fromisoformat)
        self.peer = Probe("peer", parse_top_time)
        self.to_ours = True
        self.to_peer = True
        self.standin.add_change_listener(self._on_change)
        self.daemon: DaemonProcess | None = None
        self.peer_proc: PeerProcess | None = None

    def _on_change(self, change: MarketChange) -> None:
        at = time.monotonic()
        if self.to_ours:
            self.ours.published(change, at)
        if self.to_peer:
            self.standin.tmc.publish(
                self.standin.app_key, topic=change.topic,
                content=json.dumps(change.content, ensure_ascii=False),
                nick=change.seller_nick, user_id=change.seller_id, time=change.modified, group=PEER_GROUP,
            )  # fmt: skip
            self.peer.published(change, at)

    def route(self, ours: bool, peer: bool) -> None:
        """Which pipelines get the next changes (the stand-in publishes ours to its configured group)."""
        self.to_ours, self.to_peer = ours, peer
        self.standin.config.tmc_group = OURS_GROUP if ours else NOBODY

    async def start(self) -> None:
        s = self.standin
        await s.start()
        await permit_every_shop(s)
        values: dict[str, Any] = {
            "database_url": self.our_dsn, **standin_settings(s.connection_info()),
            "taobao_tmc_group": OURS_GROUP, "sync_api_rate": 5000, "sync_initial_load_days": 0,
            "http_port": 0, "log_level": "WARNING",
        }  # fmt: skip
        self.daemon = DaemonProcess(daemon_env(values), self.workdir / "daemon.log")
        peer_env = {k: v for k, v in os.environ.items() if not k.startswith("PEER_")} | {
            "PEER_TMC_URL": str(s.tmc_url), "PEER_API_URL": s.api_url, "PEER_APP_KEY": s.app_key,
            "PEER_APP_SECRET": s.app_secret, "PEER_SHOPS": json.dumps(values["taobao_shops"]),
            "PEER_DATABASE_URL": self.peer_dsn,
            "PEER_GROUP": PEER_GROUP, "PEER_WORKERS": str(self.args.peer_workers), "PYTHONPATH": str(ROOT),
        }  # fmt: skip
        self.peer_proc = PeerProcess(peer_env, self.workdir / "peer.log")
        await self.daemon.start()
        await self.peer_proc.start()
        await self.until(self._both_connected, 60, "both pipelines to connect")
        self._listeners = [await asyncpg.connect(self.our_dsn), await asyncpg.connect(self.peer_dsn)]
        await self.until_async(self._has_peer_table, 30, "the peer's table")
        await self._listeners[0].add_listener(OUR_CHANNEL, self.ours.on_notify)
        await self._listeners[1].add_listener(PEER_CHANNEL, self.peer.on_notify)

    def _both_connected(self) -> bool:
        return {OURS_GROUP, PEER_GROUP} <= {c.group for c in self.standin.tmc.connections()}

    def _processes(self) -> list[asyncio.subprocess.Process]:
        found = [
            self.daemon.process if self.daemon else None,
            self.peer_proc.process if self.peer_proc else None,
        ]
        return [p for p in found if p is not None]

    async def _has_peer_table(self) -> bool:
        return bool(await self._listeners[1].fetchval("SELECT to_regclass('peer_trades') IS NOT NULL"))

    async def stop(self) -> None:
        for conn in getattr(self, "_listeners", []):
            await conn.close()
        if self.daemon is not None:
            await self.daemon.stop()
        if self.peer_proc is not None:
            await self.peer_proc.stop()
        await self.standin.stop()

    async def until(self, condition: Callable[[], bool], within: float, what: str) -> None:
        deadline = time.monotonic() + within
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"gave up after {within:g} s waiting for {what}")
            for proc in self._processes():
                if proc.returncode is not None:
                    raise RuntimeError(f"a pipeline exited ({proc.returncode}); logs in {self.workdir}")
            await asyncio.sleep(0.005)  # polling interval

    async def until_async(self, condition: Callable[[], Any], within: float, what: str) -> None:
        deadline = time.monotonic() + within
        while not await condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"gave up after {within:g} s waiting for {what}")
            await asyncio.sleep(0.05)  # polling interval

    def cpus(self) -> tuple[float, float]:
        assert self.daemon is not None and self.peer_proc is not None  # noqa: PT018
        return cpu_seconds(self.daemon.pid), cpu_seconds(self.peer_proc.pid)

    async def caught_up(self, probes: list[Probe], within: float = 300) -> None:
        what = "every change's NOTIFY (" + ", ".join(f"{p.name}: {p.unmatched()} left" for p in probes) + ")"
        await self.until(lambda: all(p.unmatched() == 0 for p in probes), within, what)

    # ------------------------------------------------------------------------------------- phases

    def peer_failures(self) -> int:
        return (self.workdir / "peer.log").read_text(errors="replace").count(PEER_FAILURE_LINE)

    async def raw_control_chars(self, n: int = 300) -> dict[str, Any]:
        """TOP sends TAB/LF/CR raw inside JSON strings (buyer messages, memos, addresses). Python's
        strict `json.loads`, which py-taobao-open's RestApi uses, rejects them: count the peer's failures
        on `n` changes as TOP would serve them. The product's client reads them (and the later phases
        have the stand-in escape them, so the peer can be measured at all)."""
        self.route(True, True)
        self.standin.faults.raw_control_chars = True
        self.ours.reset()
        self.peer.reset()
        failures0, notifies0 = self.peer_failures(), self.peer.notifies
        self.standin.market.step(n)
        await self.caught_up([self.ours])
        await self.until(
            lambda: self.peer.notifies - notifies0 + self.peer_failures() - failures0 >= n,
            120, "the peer to finish or fail every message",
        )  # fmt: skip
        failed = self.peer_failures() - failures0
        self.standin.faults.raw_control_chars = False
        return {
            "changes": n,
            "peer_failed_fetches": failed,
            "peer_failed_share": round(failed / n, 3),
            "ours_unmatched": self.ours.unmatched(),
        }

    async def warm_up(self) -> None:
        self.route(True, True)
        self.standin.faults.raw_control_chars = False
        self.ours.reset()
        self.peer.reset()
        self.standin.market.step(300)
        await self.caught_up([self.ours, self.peer])

    async def side_by_side(self, rate: float, seconds: float, latency_ms: float) -> dict[str, Any]:
        self.route(True, True)
        self.standin.faults.latency_ms = latency_ms
        self.ours.reset()
        self.peer.reset()
        (ours0, peer0), published0 = self.cpus(), self.standin.tmc.stats.published
        market = self.standin.market
        market.set_rate(rate)
        market.resume()
        if not market.running:
            market.start(rate)
        await asyncio.sleep(seconds)  # the length of the measurement
        market.pause()
        await self.caught_up([self.ours, self.peer])
        ours1, peer1 = self.cpus()
        n = len(self.ours.lags)
        result: dict[str, Any] = {
            "rate": rate, "seconds": seconds, "api_latency_ms": latency_ms, "changes": n,
            "tmc_messages": self.standin.tmc.stats.published - published0,
        }  # fmt: skip
        for name, probe, cpu in (("ours", self.ours, ours1 - ours0), ("peer", self.peer, peer1 - peer0)):
            result[name] = {
                "cpu_s": round(cpu, 2),
                "cpu_ms_per_change": round(cpu / max(len(probe.lags), 1) * 1000, 3),
                "lag_p50_ms": _pct(probe.lags, 0.5),
                "lag_p99_ms": _pct(probe.lags, 0.99),
                "lag_mean_ms": round(statistics.fmean(probe.lags) * 1000, 1) if probe.lags else None,
            }
        return result

    async def alone(self, which: str, n: int) -> dict[str, Any]:
        probe = self.ours if which == "ours" else self.peer
        self.route(which == "ours", which == "peer")
        self.standin.faults.latency_ms = 0
        probe.reset()
        cpu0 = self.cpus()[0 if which == "ours" else 1]
        started = time.monotonic()
        await publish(self.standin.market, n)
        await self.caught_up([probe])
        seconds = probe.last_match - started
        cpu = self.cpus()[0 if which == "ours" else 1] - cpu0
        self.route(True, True)
        return {
            "changes": n,
            "seconds": round(seconds, 2),
            "changes_per_s": round(n / seconds, 1),
            "cpu_s": round(cpu, 2),
            "cpu_ms_per_change": round(cpu / n * 1000, 3),
            "changes_per_cpu_s": round(n / cpu, 1) if cpu else None,
        }

    async def run(self) -> dict[str, Any]:
        args = self.args
        results: dict[str, Any] = {"benchmark": "peer", "machine": machine()}
        await self.start()
        try:
            results["raw_control_chars"] = await self.raw_control_chars()
            await self.warm_up()
            results["side_by_side"] = await self.side_by_side(args.rate, args.seconds, args.latency_ms)
            results["alone_ours"] = await self.alone("ours", args.changes)
            results["alone_peer"] = await self.alone("peer", args.changes)
        finally:
            await self.stop()
        results["machine"]["load_1m_after"] = machine()["load_1m"]
        sbs, ao, ap = results["side_by_side"], results["alone_ours"], results["alone_peer"]
        results["ratios"] = {
            "cpu_per_change_peer_over_ours_side_by_side": _ratio(
                sbs["peer"]["cpu_ms_per_change"], sbs["ours"]["cpu_ms_per_change"]
            ),
            "cpu_per_change_peer_over_ours_alone": _ratio(ap["cpu_ms_per_change"], ao["cpu_ms_per_change"]),
            "throughput_per_core_ours_over_peer": _ratio(ao["changes_per_cpu_s"], ap["changes_per_cpu_s"]),
            "wall_throughput_ours_over_peer": _ratio(ao["changes_per_s"], ap["changes_per_s"]),
            "lag_p50_peer_over_ours": _ratio(sbs["peer"]["lag_p50_ms"], sbs["ours"]["lag_p50_ms"]),
            "lag_p99_peer_over_ours": _ratio(sbs["peer"]["lag_p99_ms"], sbs["ours"]["lag_p99_ms"]),
        }
        results["targets"] = {
            "cpu_per_change_ratio>=2.5": (results["ratios"]["cpu_per_change_peer_over_ours_alone"] or 0)
            >= 2.5
        }
        return results


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def table(r: dict[str, Any]) -> str:
    sbs, ao, ap, q = r["side_by_side"], r["alone_ours"], r["alone_peer"], r["ratios"]
    rows = [
        (f"CPU ms per change, side by side @ {sbs['rate']}/s, API {sbs['api_latency_ms']} ms",
         sbs["ours"]["cpu_ms_per_change"], sbs["peer"]["cpu_ms_per_change"],
         q["cpu_per_change_peer_over_ours_side_by_side"]),
        ("publish→NOTIFY p50 ms, side by side", sbs["ours"]["lag_p50_ms"], sbs["peer"]["lag_p50_ms"],
         q["lag_p50_peer_over_ours"]),
        ("publish→NOTIFY p99 ms, side by side", sbs["ours"]["lag_p99_ms"], sbs["peer"]["lag_p99_ms"],
         q["lag_p99_peer_over_ours"]),
        (f"CPU ms per change, alone, {ao['changes']} at once",
         ao["cpu_ms_per_change"], ap["cpu_ms_per_change"],
         q["cpu_per_change_peer_over_ours_alone"]),
        ("changes per CPU-second, alone", ao["changes_per_cpu_s"], ap["changes_per_cpu_s"],
         q["throughput_per_core_ours_over_peer"]),
        ("changes/s wall, alone", ao["changes_per_s"], ap["changes_per_s"],
         q["wall_throughput_ours_over_peer"]),
    ]  # fmt: skip
    width = max(len(row[0]) for row in rows)
    lines = [f"{'figure':<{width}}  {'ours':>10}  {'peer':>10}  ratio"]
    lines += [f"{a:<{width}}  {b!s:>10}  {c!s:>10}  {d}" for a, b, c, d in rows]
    return "\n".join(lines)


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    async with (
        throwaway_database(args.admin_url, "bench_peer_ours") as (our_dsn, _),
        throwaway_database(args.admin_url, "bench_peer_peer") as (peer_dsn, _),
    ):
        if args.keep_logs is not None:
            args.keep_logs.mkdir(parents=True, exist_ok=True)
            return await PeerBench(args, our_dsn, peer_dsn, args.keep_logs).run()
        with tempfile.TemporaryDirectory(prefix="bench-peer-") as workdir:
            return await PeerBench(args, our_dsn, peer_dsn, Path(workdir)).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_peer", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller phases")
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL)
    parser.add_argument("--peer-workers", type=int, default=16, help="the peer's thread pool size")
    parser.add_argument("--rate", type=float, default=100.0, help="market rate of the side-by-side phase")
    parser.add_argument("--seconds", type=float, default=None, help="length of the side-by-side phase")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="stand-in API latency, side by side")
    parser.add_argument("--changes", type=int, default=None, help="changes per alone phase")
    parser.add_argument("--keep-logs", type=Path, default=None, help="keep the pipelines' logs here")
    args = parser.parse_args(argv)
    args.seconds = args.seconds or (10.0 if args.quick else 30.0)
    args.changes = args.changes or (2000 if args.quick else 6000)
    started = time.monotonic()
    results = asyncio.run(_main(args))
    results["wall_s"] = round(time.monotonic() - started, 1)
    results["command"] = "python -m bench.bench_peer " + " ".join(argv if argv is not None else sys.argv[1:])
    print(table(results), file=sys.stderr)
    print(json.dumps(results, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
