"""Peak memory of the daemon while PostgreSQL is blackholed under a steady stream, and while large gzip
pushes arrive (docs/performance.md#memory).

The daemon runs in its own process (`bench.daemon_proc`); its database path goes through the fault
proxy (`python -m tests.faults.pgproxy`, another process), which blackholes every connection for the
stall. Its resident memory is sampled every half second and its peak (VmHWM) read at the end of each
phase. Phase one: the market changes `--rate` times a second, every trade's fullinfo answer about
`--trade-mib` MiB (a long buyer's message), PostgreSQL is silent for `--stall-seconds`, then back, and
the daemon catches up. Phase two: `--pushes` messages whose gzip
content inflates to `--push-mib` MiB each (one trade, so the stand-in keeps one copy of the text).

    python -m bench.bench_memory                 # 5 minutes of stall at 100 changes/s of 1 MiB trades,
                                                 # then 200 pushes of 15 MiB
    python -m bench.bench_memory --quick         # 20 s of stall, 20 pushes
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bench.daemon_proc import ROOT, DaemonProcess, daemon_env
from bench.machine import machine
from bench.permits import permit_every_shop
from bench.scenarios.database import throwaway_database
from daemon.demo import standin_settings
from simulator.standin import StandIn, StandInConfig
from simulator.tmc_server import TmcServerConfig
from store.migrate import migrate

DEFAULT_ADMIN_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
MIB = 1024 * 1024


@dataclass(frozen=True)
class Plan:
    stall_seconds: float
    rate: float
    pushes: int
    push_mib: int
    trade_mib: float  # every trade's fullinfo answer about this large (the stand-in's trade_text_bytes)
    catch_up_seconds: float = 300.0  # how long the catch-up after the stall is watched at most


class Proxy:
    """The fault proxy in its own process, driven one command a line."""

    def __init__(self, process: asyncio.subprocess.Process, host: str, port: int) -> None:
        self.process, self.host, self.port = process, host, port

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, upstream: str) -> AsyncIterator[Proxy]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.faults.pgproxy", "--upstream", upstream,
            cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert process.stdout is not None
        address = json.loads(await process.stdout.readline())
        try:
            yield cls(process, address["host"], int(address["port"]))
        finally:
            if process.stdin is not None:
                process.stdin.close()
            async with asyncio.timeout(10):
                await process.wait()

    async def command(self, line: str) -> dict[str, Any]:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(line.encode() + b"\n")
        await self.process.stdin.drain()
        answer: dict[str, Any] = json.loads(await self.process.stdout.readline())
        return answer


def through(dsn: str, host: str, port: int) -> str:
    parts = urlsplit(dsn)
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=f"{user}{host}:{port}"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def until(condition: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {within:g} s waiting for {what}")
        await asyncio.sleep(0.2)  # the polling period


class RssWatch:
    """The daemon's resident memory sampled every half second: the largest sample in MiB."""

    def __init__(self, daemon: DaemonProcess) -> None:
        self.daemon = daemon
        self.largest = 0
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            self.largest = max(self.largest, self.daemon.memory_kib()[0])
            await asyncio.sleep(0.5)  # the sampling period

    def __enter__(self) -> RssWatch:
        self.largest = 0
        self._task = asyncio.get_running_loop().create_task(self._sample())
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._task is not None:
            self._task.cancel()

    @property
    def largest_mib(self) -> float:
        return round(self.largest / 1024, 1)


async def stall_phase(plan: Plan, standin: StandIn, proxy: Proxy, daemon: DaemonProcess) -> dict[str, Any]:
    tmc = standin.tmc.stats
    with RssWatch(daemon) as watch:
        standin.market.start(plan.rate)
        await until(lambda: tmc.confirmed > 0, 60, "the stream to run")
        await proxy.command("stall")
        stalled_at = time.monotonic()
        await asyncio.sleep(plan.stall_seconds)  # the outage being measured
        await proxy.command("resume")
        standin.market.pause()
        # Memory is what is measured: a catch-up that takes longer than this is reported, not waited for.
        try:
            await until(lambda: tmc.confirmed >= tmc.published, plan.catch_up_seconds, "the catch-up")
            caught_up_after: float | None = round(time.monotonic() - stalled_at - plan.stall_seconds, 1)
        except TimeoutError:
            caught_up_after = None
        backlog = tmc.published - tmc.confirmed
    return {
        "stall_s": plan.stall_seconds,
        "rate": plan.rate,
        "trade_mib": plan.trade_mib,
        "changes": tmc.published,
        "rss_largest_mib": watch.largest_mib,
        "rss_peak_mib": round(daemon.memory_kib()[1] / 1024, 1),
        "caught_up_after_s": caught_up_after,  # None: not within --catch-up-seconds
        "unconfirmed_at_end": backlog,
    }


async def push_phase(plan: Plan, standin: StandIn, daemon: DaemonProcess) -> dict[str, Any]:
    shop = standin.market.shops[0]
    record = next(iter(standin.market.records(0)))
    memo = "x" * (plan.push_mib * MIB)
    content = json.dumps({"tid": record.tid, "seller_nick": shop.nick, "memo": memo})
    tmc = standin.tmc.stats
    before = tmc.confirmed
    with RssWatch(daemon) as watch:
        for _ in range(plan.pushes):
            standin.tmc.publish(
                standin.app_key,
                topic="taobao_trade_TradeMemoModified",
                content=content,
                nick=shop.nick,
                user_id=shop.user_id,
                time=datetime.now(UTC),
            )
        await until(lambda: tmc.confirmed >= before + plan.pushes, 600, "the large pushes")
    return {
        "pushes": plan.pushes,
        "push_mib": plan.push_mib,
        "rss_largest_mib": watch.largest_mib,
        "rss_peak_mib": round(daemon.memory_kib()[1] / 1024, 1),
    }


async def run(plan: Plan, admin_url: str) -> dict[str, Any]:
    async with throwaway_database(admin_url, "bench_memory") as (dsn, _):
        await migrate(dsn)
        upstream = urlsplit(dsn)
        standin = StandIn(
            StandInConfig(
                seed=7, shops=2, market_rate=0, history_trades=200,
                trade_text_bytes=int(plan.trade_mib * MIB),
                tmc=TmcServerConfig(seed=7, gzip_fraction=1.0, confirm_timeout=600.0),
            )
        )  # fmt: skip
        await standin.start()
        await permit_every_shop(standin)
        try:
            async with Proxy.running(f"{upstream.hostname}:{upstream.port or 5432}") as proxy:
                values: dict[str, Any] = {
                    "database_url": through(dsn, proxy.host, proxy.port),
                    **standin_settings(standin.connection_info()),
                    "sync_api_rate": 1000,
                    "http_port": free_port(),
                    "log_level": "WARNING",
                    "sync_initial_load_days": 0,
                }
                with tempfile.TemporaryDirectory(prefix="bench-memory-") as workdir:
                    daemon = DaemonProcess(daemon_env(values), Path(workdir) / "daemon.log")
                    await daemon.start()
                    try:
                        await until(lambda: standin.tmc.stats.connections > 0, 60, "the daemon to connect")
                        started_mib = round(daemon.memory_kib()[0] / 1024, 1)
                        stall = await stall_phase(plan, standin, proxy, daemon)
                        pushes = await push_phase(plan, standin, daemon)
                    except BaseException:
                        print(daemon.log_tail(), file=sys.stderr)
                        raise
                    finally:
                        await daemon.stop()
        finally:
            await standin.stop()
    return {"started_rss_mib": started_mib, "stall": stall, "pushes": pushes, "machine": machine()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_memory", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 s of stall and 20 pushes")
    parser.add_argument("--stall-seconds", type=float, default=300.0)
    parser.add_argument("--rate", type=float, default=100.0, help="market changes per second")
    parser.add_argument("--pushes", type=int, default=200)
    parser.add_argument("--push-mib", type=int, default=15, help="each push's content once inflated")
    parser.add_argument("--trade-mib", type=float, default=1.0, help="each trade's fullinfo answer")
    parser.add_argument("--catch-up-seconds", type=float, default=300.0, help="watched after the stall")
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL)
    args = parser.parse_args(argv)
    stall, pushes = (20.0, 20) if args.quick else (args.stall_seconds, args.pushes)
    plan = Plan(stall, args.rate, pushes, args.push_mib, args.trade_mib, args.catch_up_seconds)
    started = time.monotonic()
    results = asyncio.run(run(plan, args.admin_url))
    results["wall_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(results, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
