"""The daemon in its own process for benchmarks, with its CPU time and memory read from /proc."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, summed over all CPUs (/proc/stat)."""
    with open("/proc/stat") as fh:
        fields = [int(v) for v in fh.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


def daemon_env(values: dict[str, Any]) -> dict[str, str]:
    """The environment for `python -m listener`: ours without order-sync settings, plus `values`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TAOBAO_", "SYNC_", "DATABASE_"))}
    for name, value in values.items():
        env[name.upper()] = value if isinstance(value, str) else json.dumps(value)
    env["PYTHONPATH"] = str(ROOT)
    return env


@dataclass
class DaemonProcess:
    env: dict[str, str]
    log_path: Path
    process: asyncio.subprocess.Process | None = field(default=None, repr=False)

    async def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "listener",
                "--env-file",
                os.devnull,
                cwd=ROOT,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("daemon not started")
        return self.process.pid

    def cpu_seconds(self) -> float:
        """User + system CPU time of the daemon so far (clock-tick resolution)."""
        with open(f"/proc/{self.pid}/stat") as fh:
            fields = fh.read().rpartition(")")[2].split()
        # After the command name: state is field 3, utime 14 and stime 15 (1-based, man 5 proc).
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def memory_kib(self) -> tuple[int, int]:
        """(current RSS, peak RSS) in KiB."""
        values: dict[str, int] = {}
        with open(f"/proc/{self.pid}/status") as fh:
            for line in fh:
                name, _, rest = line.partition(":")
                if name in ("VmRSS", "VmHWM"):
                    values[name] = int(rest.split()[0])
        return values.get("VmRSS", 0), values.get("VmHWM", 0)

    async def stop(self, grace: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after `grace` seconds; the exit code."""
        process = self.process
        if process is None or process.returncode is not None:
            return None if process is None else process.returncode
        process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(grace):
                return await process.wait()
        except TimeoutError:
            process.kill()
            return await process.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
