"""The layers hold at run time too: the bottom loads nothing above it, and the daemon's entry point
loads the daemon and not the stand-in or the demo."""

from __future__ import annotations

import asyncio
import sys

from tests.integration.harness import ROOT
from tests.ops.test_cli import clean_env

OURS = {"common", "taobao", "store", "listener", "reconciler", "replicas", "daemon", "simulator"}


async def imported_by(*args: str) -> set[str]:
    """Our modules a fresh interpreter imported while running `args` (from `-X importtime`)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-X",
        "importtime",
        *args,
        cwd=ROOT,
        env=clean_env(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        _, err = await process.communicate()
    modules = set()
    for line in err.decode().splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name.split(".")[0] in OURS:
                modules.add(name)
    return modules


async def test_the_top_client_imports_only_the_bottom_layers() -> None:
    modules = await imported_by("-c", "import taobao.client")
    assert "taobao.client" in modules
    assert {m.split(".")[0] for m in modules} <= {"taobao", "common"}, sorted(modules)


async def test_order_sync_run_loads_the_daemon_and_no_stand_in() -> None:
    # Bad settings end it right after the daemon's modules are loaded (exit 2, nothing started).
    modules = await imported_by("-m", "daemon.cli", "run", "--env-file", "/nonexistent")
    assert {"daemon.app", "listener.session", "reconciler.reconciler"} <= modules
    assert not {m for m in modules if m.split(".")[0] == "simulator" or m == "daemon.demo"}
