"""The product and the ERP examples as separate processes, the way users run them: `order-sync simulate`
(the Taobao stand-in), `order-sync run` wired to it by environment, and consumers with their output in
files. Shared by the consumer tests and the image test."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

STOP_SECONDS = 30.0  # docker-compose.yml's stop_grace_period


def free_port() -> int:
    """A TCP port nothing listens on now, on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def required(condition: bool, reason: str) -> None:
    """Skip when `condition` does not hold, except in CI (CI=true), where the test must run: fail."""
    import pytest

    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must provide it: .ci/run)")
    pytest.skip(reason)


@dataclass
class Process:
    """A child process whose stdout and stderr go to files (nothing blocks on a full pipe)."""

    name: str
    command: Sequence[str]
    logs: Path
    env: dict[str, str] | None = None
    cwd: Path | None = None
    process: asyncio.subprocess.Process | None = field(default=None, repr=False)

    @property
    def stdout_path(self) -> Path:
        return self.logs / f"{self.name}.out"

    @property
    def stderr_path(self) -> Path:
        return self.logs / f"{self.name}.err"

    async def start(self) -> Process:
        with self.stdout_path.open("ab") as out, self.stderr_path.open("ab") as err:
            self.process = await asyncio.create_subprocess_exec(
                *self.command, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=err,
                env=self.env, cwd=self.cwd,
            )  # fmt: skip
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def tail(self, lines: int = 30) -> str:
        text = self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""
        return f"--- {self.name} stderr ---\n" + "\n".join(text.splitlines()[-lines:])

    async def stop(self, sig: int | None = signal.SIGTERM, within: float = STOP_SECONDS) -> int:
        """Send `sig` (None: none, just wait), wait for the exit (SIGKILL after `within` s); return the
        exit code."""
        assert self.process is not None
        if self.process.returncode is None and sig is not None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)
        if self.process.returncode is None:
            try:
                async with asyncio.timeout(within):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
                raise AssertionError(f"{self.name} did not stop within {within:g} s\n{self.tail()}") from None
        assert self.process.returncode is not None
        return self.process.returncode

    def stdout_lines(self) -> list[str]:
        return self.stdout_path.read_text().splitlines()


async def start_standin(command: Sequence[str], logs: Path, *args: str) -> tuple[Process, dict[str, Any]]:
    """`<command> simulate ARGS`; return it and its one JSON line (api_url, tmc_url, app_key, …)."""
    standin = await Process("standin", [*command, "simulate", *args], logs).start()
    deadline = time.monotonic() + 60
    while True:
        text = standin.stdout_path.read_text() if standin.stdout_path.exists() else ""
        if text.endswith("\n"):
            return standin, json.loads(text.splitlines()[0])
        assert standin.process is not None
        if standin.process.returncode is not None or time.monotonic() > deadline:
            await standin.stop()
            raise AssertionError(f"the stand-in printed no address line\n{standin.tail()}")
        await asyncio.sleep(0.05)


def daemon_environment(info: dict[str, Any], database_url: str, http_port: int) -> dict[str, str]:
    """What `order-sync run` needs to sync the stand-in described by `info` into `database_url`."""
    shops = [{"nick": shop["nick"], "session": shop["session"]} for shop in info["shops"]]
    return {
        "DATABASE_URL": database_url,
        "TAOBAO_API_URL": info["api_url"],
        "TAOBAO_TMC_URL": info["tmc_url"],
        "TAOBAO_APP_KEY": info["app_key"],
        "TAOBAO_APP_SECRET": info["app_secret"],
        "TAOBAO_SHOPS": json.dumps(shops, ensure_ascii=False),
        "HTTP_HOST": "127.0.0.1",
        "HTTP_PORT": str(http_port),
    }


async def eventually(check: Callable[[], Awaitable[bool]], within: float, what: str, *procs: Process) -> None:
    """Poll `check` until it holds; fail after `within` s with the processes' last log lines."""
    deadline = time.monotonic() + within
    while not await check():
        for proc in procs:
            if proc.process is not None and proc.process.returncode is not None:
                raise AssertionError(
                    f"{proc.name} exited ({proc.process.returncode}) before {what}\n{proc.tail()}"
                )
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g} s waiting until {what}\n" +
                                 "\n".join(p.tail() for p in procs))  # fmt: skip
        await asyncio.sleep(0.2)


async def on_a_terminal(
    command: Sequence[str], *, env: dict[str, str], cwd: Path, within: float = 120
) -> tuple[int, str]:
    """Run `command` with a pseudo-terminal as its stdout and stderr, as a person at a shell would;
    its exit code and everything it wrote there."""
    leader, follower = pty.openpty()
    process = await asyncio.create_subprocess_exec(
        *command, cwd=cwd, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=follower, stderr=follower
    )
    os.close(follower)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other side closed
                return
            if not chunk:
                return
            chunks.append(chunk)

    try:
        async with asyncio.timeout(within):
            await asyncio.gather(asyncio.to_thread(read), process.wait())
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        os.close(leader)
    assert process.returncode is not None
    return process.returncode, b"".join(chunks).decode(errors="replace")


async def fetchval(dsn: str, sql: str, *args: Any) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


async def fetch(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
        return rows
    finally:
        await conn.close()
