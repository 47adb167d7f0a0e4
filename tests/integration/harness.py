"""What the end-to-end tests share: daemon settings pointing at a stand-in, the daemon as a separate
process (`python -m listener`), and the check that the database equals the stand-in's truth."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
from pydantic import SecretStr

from daemon.demo import standin_settings
from daemon.settings import Settings, load_settings
from simulator.compare import compare_with_market
from simulator.standin import StandIn, StandInConfig
from taobao import shop_calls
from taobao.client import TopClient
from taobao.limiter import TopRateLimiter

ROOT = Path(__file__).resolve().parents[2]


@contextlib.asynccontextmanager
async def running_standin(config: StandInConfig) -> AsyncIterator[StandIn]:
    """A stand-in serving on free ports until the block ends."""
    standin = StandIn(config)
    await standin.start()
    try:
        yield standin
    finally:
        await standin.stop()


async def permit_every_shop(standin: StandIn) -> None:
    """`taobao.tmc.user.permit` for every shop, through the product's own call, as a daemon's start does.
    For tests whose daemon must find the shops subscribed already, as after an earlier run: messages
    queued before it connects are delivered (the stand-in, like the platform, withholds an unpermitted
    seller's)."""
    client = TopClient(
        app_key=standin.app_key,
        app_secret=SecretStr(standin.app_secret),
        api_url=standin.api_url,
        limiter=TopRateLimiter(1000),
    )
    async with client:
        for shop in standin.shops:
            await shop_calls.permit(client, SecretStr(shop.session))
    assert standin.permits.users >= {shop.nick for shop in standin.shops}


def daemon_values(standin: StandIn, dsn: str, **overrides: Any) -> dict[str, Any]:
    """The daemon's settings for `standin` and database `dsn`, as keyword values."""
    values: dict[str, Any] = {
        "database_url": dsn,
        **standin_settings(standin.connection_info()),
        "sync_api_rate": 2000,
        "sync_drain_seconds": 10,
        "http_port": 0,
        "log_level": "WARNING",
        "log_format": "text",
    }
    values.update(overrides)
    return values


def daemon_settings(standin: StandIn, dsn: str, **overrides: Any) -> Settings:
    return load_settings(env_file=None, **daemon_values(standin, dsn, **overrides))


def daemon_env(standin: StandIn, dsn: str, **overrides: Any) -> dict[str, str]:
    """The same settings as environment variables, for a daemon in its own process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TAOBAO_", "SYNC_", "DATABASE_"))}
    for name, value in daemon_values(standin, dsn, **overrides).items():
        env[name.upper()] = value if isinstance(value, str) else json.dumps(value)
    env["PYTHONPATH"] = str(ROOT)
    return env


async def wait_for(condition: Callable[[], bool], within: float, what: str) -> None:
    """Poll `condition` until it holds; fail with `what` after `within` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within:g} s waiting for {what}")
        await asyncio.sleep(0.02)


async def wait_for_async(condition: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within:g} s waiting for {what}")
        await asyncio.sleep(0.05)


@dataclass
class DaemonProcess:
    """`python -m listener` in its own process; its log goes to a file (a pipe nobody reads would
    eventually block it)."""

    env: dict[str, str]
    log_path: Path
    process: asyncio.subprocess.Process | None = field(default=None, repr=False)

    async def start(self) -> None:
        log = self.log_path.open("ab")
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "listener",
                "--env-file",
                str(self.log_path.with_suffix(".env-absent")),
                cwd=ROOT,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        finally:
            log.close()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def send(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    async def wait(self, within: float) -> int:
        """The exit code; fails after `within` seconds."""
        assert self.process is not None
        async with asyncio.timeout(within):
            return await self.process.wait()

    async def stop(self) -> None:
        """Make sure the process is gone (test teardown)."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


async def assert_in_sync(pool: asyncpg.Pool, standin: StandIn, *, shops: int = 3) -> int:
    """The database holds the stand-in's truth for every trade the market changed, the change feed has
    a row covering every market change, and TMC has every message confirmed. Returns the change count."""
    market = standin.market
    changes = list(market.changes)
    assert changes, "the market made no changes: nothing was tested"
    assert len({c.seller_nick for c in changes}) == shops

    comparison = await compare_with_market(pool, market)
    assert comparison.ok, comparison.to_json() | {"lost": comparison.lost[:5], "stale": comparison.stale[:5]}
    assert comparison.matched == len({c.tid for c in changes})

    rows = await pool.fetch(
        "SELECT position, tid, status, modified FROM trade_changes WHERE tid = ANY($1::bigint[]) "
        "ORDER BY position",
        sorted({c.tid for c in changes}),
    )
    newest: dict[int, tuple[datetime, str | None]] = {}
    for row in rows:
        newest[int(row["tid"])] = (row["modified"], row["status"])  # ordered by position: last wins
    uncovered = [c.seq for c in changes if c.tid not in newest or newest[c.tid][0] < c.modified]
    assert not uncovered, f"{len(uncovered)} market changes have no feed row (first seqs {uncovered[:5]})"
    for tid, (modified, status) in newest.items():
        truth = market.record(tid)
        assert truth is not None
        assert (int(modified.timestamp()), status) == (truth.modified, truth.status), tid

    stats = standin.tmc.stats
    assert stats.published == len(changes)
    assert stats.confirmed == stats.published, standin.tmc_summary()
    assert standin.tmc.pending(standin.app_key) == 0
    return len(changes)
