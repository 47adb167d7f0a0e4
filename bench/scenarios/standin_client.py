"""The stand-in as a child process (bench/scenarios/standin_proc.py) and a small client for its admin
surface: truth, stats, fault knobs, the TMC server's counters, the market, and the bench routes."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.daemon_proc import ROOT

ADMIN = "/__standin"


@dataclass
class StandInProcess:
    args: list[str]
    log_path: Path
    info: dict[str, Any] = field(default_factory=dict, repr=False)
    process: asyncio.subprocess.Process | None = field(default=None, repr=False)
    _http: aiohttp.ClientSession | None = field(default=None, repr=False)

    async def start(self, within: float = 60.0) -> dict[str, Any]:
        """Start the process and return its one JSON line (api_url, tmc_url, app_key, …)."""
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.scenarios.standin_proc", *self.args,
                cwd=ROOT, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=log,
            )  # fmt: skip
        assert self.process.stdout is not None
        try:
            async with asyncio.timeout(within):
                line = await self.process.stdout.readline()
        except TimeoutError:
            await self.stop()
            raise RuntimeError(f"the stand-in printed nothing within {within:g} s") from None
        if not line:
            await self.stop()
            raise RuntimeError(f"the stand-in exited:\n{self.log_tail()}")
        self.info = json.loads(line)
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))
        return self.info

    @property
    def base_url(self) -> str:
        return str(self.info["truth_url"]).rsplit(ADMIN, 1)[0]

    async def get(self, path: str, **query: str) -> Any:
        assert self._http is not None
        async with self._http.get(self.base_url + path, params=query) as response:
            response.raise_for_status()
            return await response.json(content_type=None)

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        assert self._http is not None
        async with self._http.post(self.base_url + path, json=body) as response:
            if response.status >= 400:
                raise RuntimeError(f"POST {path} {body}: {response.status} {await response.text()}")
            return await response.json(content_type=None)

    async def truth(self, changes: bool = False, fields: tuple[str, ...] = ()) -> dict[str, Any]:
        """The truth without digests; with `changes`, the change log; with `fields`, those fields' current
        values per trade."""
        query = {"digest": "0"} | ({"changes": "1"} if changes else {})
        if fields:
            query["fields"] = ",".join(fields)
        result: dict[str, Any] = await self.get(ADMIN + "/truth", **query)
        return result

    async def tmc(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.get(ADMIN + "/tmc")
        return result

    async def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.get(ADMIN + "/stats", recent="0")
        return result

    async def market(self, **command: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self.post(ADMIN + "/market", command)
        return result

    async def published(self, after: int = 0) -> dict[int, float]:
        body = await self.get("/__bench/published", after=str(after))
        return dict(zip(body["seq"], body["at"], strict=True))

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
        process = self.process
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(15):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
