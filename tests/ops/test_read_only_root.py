"""A new shop's initial load on a read-only root filesystem, as hardened Kubernetes deployments run the
image: /tmp, /var/tmp, TMPDIR and the working directory all refuse writes. The TOPATS result file goes
to SYNC_TEMP_DIR, a writable volume, when one is set, is held in memory when none is, and a SYNC_TEMP_DIR
that cannot be written stops the command before it starts. Before, the download found no temporary
directory and the error ended the daemon.

Each command runs in a mount namespace of its own (`unshare --mount`, root), where those directories
are bind-mounted read-only; CI runs as root, elsewhere the test is skipped without root or unshare.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.load_plan import history_span
from simulator.standin import StandIn, StandInConfig
from tests.integration.harness import ROOT, daemon_env, running_standin
from tests.ops.processes import fetch, fetchval, required

DAYS = 20
# $1: a directory to leave writable (or ""); then the command. Everything else a temporary file could
# go to is read-only, and so is the working directory.
READ_ONLY_ROOT = (
    'writable=$1; shift; set -e; for dir in /tmp /var/tmp "$TMPDIR"; do [ -d "$dir" ] || continue; '
    'mount --bind "$dir" "$dir"; mount -o remount,bind,ro "$dir"; done; '
    'if [ -n "$writable" ]; then mount --bind "$writable" "$writable"; '
    'mount -o remount,bind,rw "$writable"; fi; cd "$TMPDIR"; exec "$@"'
)


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    async with running_standin(
        StandInConfig(seed=11, shops=3, market_rate=0, history_trades=300)
    ) as stand_in:
        yield stand_in


async def initial_load(
    standin: StandIn, dsn: str, shop: str, unwritable: Path, *, temp_dir: Path | None
) -> tuple[int, str, str]:
    env = daemon_env(standin, dsn, log_level="INFO")
    env |= {"TMPDIR": str(unwritable), "PYTHONDONTWRITEBYTECODE": "1"}
    if temp_dir is not None:
        env["SYNC_TEMP_DIR"] = str(temp_dir)
    command = [sys.executable, "-m", "daemon.cli", "initial-load", "--shop", shop, "--days", str(DAYS)]
    command += ["--env-file", "/nonexistent/.env"]
    writable = str(temp_dir) if temp_dir is not None and temp_dir.name == "volume" else ""
    process = await asyncio.create_subprocess_exec(
        "unshare", "--mount", "--propagation", "private", "sh", "-c", READ_ONLY_ROOT, "sh", writable,
        *command, cwd=ROOT, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(120):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def assert_loaded(standin: StandIn, dsn: str, shop: str) -> None:
    """The shop's load is done, through TOPATS, and the database holds every trade of its history."""
    assert (
        await fetchval(dsn, "SELECT method FROM initial_loads WHERE shop = $1 AND state = 'done'", shop)
        == "topats"
    )
    span = history_span(datetime.now(UTC), DAYS)
    index = standin.market.shop_index(shop)
    assert index is not None
    history = standin.market.created_between(index, int(span.start.timestamp()), int(span.end.timestamp()))
    rows = await fetch(dsn, "SELECT tid FROM trades WHERE seller_nick = $1", shop)
    assert history
    assert {r.tid for r in history} <= {row["tid"] for row in rows}


async def test_an_initial_load_on_a_read_only_root(
    standin: StandIn, migrated_database: str, tmp_path: Path
) -> None:
    required(
        os.geteuid() == 0 and shutil.which("unshare") is not None, "needs root and unshare (mount namespaces)"
    )
    unwritable = tmp_path / "tmpdir"  # TMPDIR, mounted read-only like the rest
    unwritable.mkdir()
    volume = tmp_path / "volume"  # an emptyDir volume, say
    volume.mkdir()
    with_volume, in_memory, misconfigured = (s.nick for s in standin.shops)
    dsn = migrated_database

    code, _, err = await initial_load(standin, dsn, with_volume, unwritable, temp_dir=volume)
    assert code == 0, err[-3000:]
    await assert_loaded(standin, dsn, with_volume)
    assert "topats_in_memory" not in err
    assert list(volume.iterdir()) == []  # the result file was removed after loading

    code, _, err = await initial_load(standin, dsn, in_memory, unwritable, temp_dir=None)
    assert code == 0, err[-3000:]
    await assert_loaded(standin, dsn, in_memory)
    assert "[action=topats_in_memory" in err

    code, _, err = await initial_load(standin, dsn, misconfigured, unwritable, temp_dir=unwritable)
    assert code == 2
    assert "SYNC_TEMP_DIR: not a writable directory (Read-only file system)" in err
    assert await fetch(dsn, "SELECT 1 FROM initial_loads WHERE shop = $1", misconfigured) == []
