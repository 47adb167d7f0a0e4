"""`order-sync demo` as someone tries it: it refuses to write stand-in trades into a database that holds
data of its own unless told (--reuse); on a terminal its progress line stays whole; and the embedded
PostgreSQL it starts without DATABASE_URL is stopped even when the demo is killed with SIGKILL."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import asyncpg
import pytest

from daemon.embedded_db import alive
from tests.conftest import create_database, drop_database
from tests.integration.harness import ROOT
from tests.ops.processes import Process, eventually, fetchval, on_a_terminal

SETTINGS_PREFIXES = ("TAOBAO_", "SYNC_", "DATABASE_", "HTTP_", "LOG_", "READY_", "NOTIFY_")


def demo_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(SETTINGS_PREFIXES)}
    return env | {"PYTHONPATH": str(ROOT), "PYTHONIOENCODING": "utf-8"} | extra


def demo_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "daemon.cli", "demo", "--rate", "10", "--shops", "2", *args]


async def run_demo(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *demo_command(*args, "--env-file", "/nonexistent/.env"), cwd=cwd, env=env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(90):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.fixture
async def erp_database() -> str:
    """A database the ERP already uses: a table of its own, with rows (and the server's default
    search_path)."""
    dsn = await create_database(search_path=None)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE erp_orders (id bigint PRIMARY KEY, note text)")
        await conn.execute("INSERT INTO erp_orders VALUES (1, 'keep me')")
    finally:
        await conn.close()
    return dsn


async def test_the_demo_refuses_a_database_with_data_of_its_own_unless_told(
    erp_database: str, tmp_path: Path
) -> None:
    try:
        code, out, err = await run_demo(
            "--seconds", "2", env=demo_env(DATABASE_URL=erp_database), cwd=tmp_path
        )
        assert code == 2, err
        assert err.splitlines() == [
            "order-sync demo: DATABASE_URL's database is not empty (1 table(s) not of order-sync: "
            "erp_orders); the demo writes stand-in trades into it. Use an empty database, unset "
            "DATABASE_URL for an embedded one, or pass --reuse to write there anyway."
        ]
        assert "stand-in" not in out  # nothing was started
        assert await fetchval(erp_database, "SELECT to_regclass('order_sync.trades') IS NULL")  # nor migrated

        code, out, err = await run_demo(
            "--seconds", "2", "--reuse", env=demo_env(DATABASE_URL=erp_database), cwd=tmp_path
        )
        assert code == 0, err
        assert await fetchval(erp_database, "SELECT count(*) FROM order_sync.trades") > 0
        assert await fetchval(erp_database, "SELECT note FROM erp_orders WHERE id = 1") == "keep me"

        # Its own trades are data too: the next demo asks again.
        code, _, err = await run_demo("--seconds", "1", env=demo_env(DATABASE_URL=erp_database), cwd=tmp_path)
        assert code == 2
        assert "not empty (1 table(s) not of order-sync: erp_orders)" in err
    finally:
        await drop_database(erp_database)


async def test_on_a_terminal_the_progress_line_is_rewritten_in_place_and_ended(tmp_path: Path) -> None:
    dsn = await create_database()
    try:
        code, out = await on_a_terminal(
            demo_command("--seconds", "3", "--env-file", "/nonexistent/.env"),
            env=demo_env(DATABASE_URL=dsn), cwd=tmp_path,
        )  # fmt: skip
    finally:
        await drop_database(dsn)
    assert code == 0, out
    progress = re.findall(r"\r\x1b\[Kmarket changes +(\d+) · applied +(\d+)[^\r\n]*", out)
    assert len(progress) >= 2, out
    # Every other line is whole: no record or summary glued to the end of a progress line.
    lines = [line for line in re.sub(r"\r\x1b\[K[^\r\n]*(?=\r\x1b\[K)", "", out).split("\n") if line.strip()]
    assert any(line.startswith("daemon: metrics at http://127.0.0.1:") for line in lines), out
    assert "/reports · Ctrl-C stops" in out
    summary = [line for line in lines if "summary: " in line]
    assert len(summary) == 1, out
    assert summary[0].strip().startswith("summary: "), out  # on a line of its own, after the last update


def postmaster_of(run: Path) -> int:
    return int((run / "pgdata" / "postmaster.pid").read_text().split("\n", 1)[0])


async def test_a_demo_killed_with_sigkill_leaves_no_embedded_server_behind(
    tmp_path: Path, outside_basetemp: Path
) -> None:
    cache = outside_basetemp / "cache"  # not under tmp_path: see the fixture
    servers = cache / "taobao-order-sync" / "demo-servers"
    env = demo_env(XDG_CACHE_HOME=str(cache))
    demo = await Process(
        "demo", demo_command("--env-file", "/nonexistent/.env"), tmp_path, env, tmp_path
    ).start()
    try:

        async def progressing() -> bool:
            return demo.stdout_path.exists() and "market changes" in demo.stdout_path.read_text()

        await eventually(progressing, 90, "the demo shows progress", demo)
        (run,) = servers.glob("run-*")
        postmaster = postmaster_of(run)
        assert alive(postmaster)
    finally:
        await demo.stop(signal.SIGKILL)

    async def gone() -> bool:
        return not alive(postmaster) and not run.exists()

    await eventually(gone, 30, "the killed demo's PostgreSQL is stopped and its directory removed")

    # The next demo starts a server of its own and stops it when it ends.
    code, out, err = await run_demo("--seconds", "2", env=env, cwd=tmp_path)
    assert code == 0, err
    assert "starting an embedded PostgreSQL" in out
    assert list(servers.glob("run-*")) == []
