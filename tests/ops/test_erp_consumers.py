"""The ERP examples as the ERP runs them, as separate processes against a database the real daemon fills
from the stand-in: the Node.js consumer (examples/node-consumer), the psql recipe (examples/psql) and the
Python example (examples/erp_consumer.py, run as a lone file). Each must see every change exactly once
across killed connections and a restart, with every tid exact (the stand-in's tids are 19 digits, far
above 2^53, where a JS number would round them)."""

from __future__ import annotations

import ast
import json
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from store.migrate import migrate
from tests.conftest import create_database, drop_database
from tests.integration.harness import ROOT
from tests.ops.processes import (
    Process,
    daemon_environment,
    eventually,
    fetch,
    fetchval,
    free_port,
    required,
    start_standin,
)

NODE_DIR = ROOT / "examples" / "node-consumer"
PSQL_RECIPE = ROOT / "examples" / "psql" / "follow.sh"
PYTHON_EXAMPLE = ROOT / "examples" / "erp_consumer.py"
ORDER_SYNC = [str(Path(sys.executable).parent / "order-sync")]
SETTLE = 90.0


def test_the_python_example_imports_nothing_but_the_standard_library_and_asyncpg() -> None:
    tree = ast.parse(PYTHON_EXAMPLE.read_text(encoding="utf-8"))
    imported = {
        name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for name in ([a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""])
    }
    assert imported - set(sys.stdlib_module_names) == {"asyncpg"}


async def cursor(dsn: str, name: str) -> int:
    """Where consumer `name` stands (0 until a consumer has made its erp_cursor table)."""
    try:
        value = await fetchval(dsn, "SELECT position FROM erp_cursor WHERE consumer = $1", name)
    except asyncpg.UndefinedTableError:
        return 0
    return int(value or 0)


async def terminate(dsn: str, application_name: str) -> int:
    """Kill the consumer's database connections, as a failover or a NAT timeout would."""
    killed = await fetchval(
        dsn,
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE application_name = $1",
        application_name,
    )
    return int(killed)


@pytest.fixture
async def erp_database() -> AsyncIterator[str]:
    """A migrated database with the server's default search_path, as an ERP's is: the consumers must
    find the feed in the service's schema themselves, and their own tables land in `public`."""
    dsn = await create_database(search_path=None)
    try:
        await migrate(dsn)
        yield dsn
    finally:
        await drop_database(dsn)


async def test_node_psql_and_python_consumers_see_every_change_exactly_once(
    erp_database: str, tmp_path: Path
) -> None:
    node = shutil.which("node")
    required(node is not None, "node is not installed")
    required((NODE_DIR / "node_modules" / "pg").is_dir(), "run `npm ci` in examples/node-consumer")
    required(shutil.which("psql") is not None, "psql is not installed")
    assert node is not None
    dsn = erp_database
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(PYTHON_EXAMPLE, lone / "erp_consumer.py")  # nothing of the repository beside it

    env = {**os.environ, "DATABASE_URL": dsn}
    psql_env = {**env, "BATCH_SIZE": "7", "POLL_SECONDS": "0.2", "PGAPPNAME": "erp-consumer:psql"}
    consumers = {
        "node": Process("node", [node, "consumer.js", "--name", "node", "--batch-size", "7"], tmp_path,
                        env=env, cwd=NODE_DIR),
        "psql": Process("psql", ["bash", str(PSQL_RECIPE), "psql"], tmp_path, env=psql_env, cwd=lone),
        "py": Process("py", [sys.executable, "-I", "erp_consumer.py", "--name", "py"], tmp_path,
                      env=env, cwd=lone),
    }  # fmt: skip
    standin, info = await start_standin(ORDER_SYNC, tmp_path, "--seed", "11", "--shops", "2", "--rate", "4",
                                        "--history", "40")  # fmt: skip
    daemon = Process("daemon", [*ORDER_SYNC, "run"], tmp_path,
                     env={**os.environ, **daemon_environment(info, dsn, free_port())})  # fmt: skip
    everything = [daemon, standin, *consumers.values()]
    try:
        await daemon.start()
        for consumer in consumers.values():
            await consumer.start()

        async def all_consumed(at_least: int) -> bool:
            return all([await cursor(dsn, name) >= at_least for name in consumers])

        await eventually(lambda: all_consumed(20), SETTLE, "every consumer applied 20 changes", *everything)

        # Lost connections: each reconnects after a pause and catches up from its saved cursor.
        assert await terminate(dsn, "erp-consumer:node") >= 1
        assert await terminate(dsn, "erp-consumer:psql") >= 1
        killed_at = await last_position(dsn)
        await eventually(lambda: all_consumed(killed_at + 5), SETTLE, "every consumer went on", *everything)
        assert consumers["node"].stderr_path.read_text().count('"erp_connected"') == 2
        # A restart: the Node consumer stops gracefully and comes back while the daemon keeps writing.
        assert await consumers["node"].stop() == 0
        stopped_at = await cursor(dsn, "node")

        async def written_while_down() -> bool:
            return await last_position(dsn) >= stopped_at + 10

        await eventually(written_while_down, SETTLE, "10 changes while the consumer is down", daemon)
        await consumers["node"].start()
        await eventually(
            lambda: all_consumed(stopped_at + 10), SETTLE, "every consumer caught up", *everything
        )

        assert await daemon.stop() == 0  # graceful: the feed is final from here on
        feed = [
            (r["position"], r["tid"])
            for r in await fetch(dsn, "SELECT position, tid FROM order_sync.trade_changes ORDER BY position")
        ]
        last = feed[-1][0]
        await eventually(
            lambda: all_consumed(last), SETTLE, f"every consumer reached position {last}", *consumers.values()
        )
        for consumer in consumers.values():
            assert await consumer.stop() == 0, consumer.tail()
    finally:
        for proc in everything:
            if proc.process is not None and proc.process.returncode is None:
                await proc.stop(signal.SIGKILL, 10)

    assert [p for p, _ in feed] == list(range(1, last + 1))
    assert all(tid > 2**53 for _, tid in feed)
    for name in ("node", "psql"):
        # The ERP's own table, written in the transaction that moved the cursor: exactly once.
        applied = await fetch(
            dsn,
            "SELECT position, tid FROM erp_trade_events WHERE consumer = $1 ORDER BY position, applied_at",
            name,
        )
        assert [(r["position"], r["tid"]) for r in applied] == feed, name
    # What they printed after each commit: exact tids, never a change twice.
    for name in ("node", "psql", "py"):
        printed = [json.loads(line) for line in consumers[name].stdout_lines()]
        positions = [change["position"] for change in printed]
        assert len(positions) == len(set(positions)), name
        assert all((change["position"], change["tid"]) in set(feed) for change in printed), name
    # The Python example's connection was never killed, so its output is the whole feed, once.
    assert [(c["position"], c["tid"]) for c in map(json.loads, consumers["py"].stdout_lines())] == feed
    assert len(feed) >= 40


async def last_position(dsn: str) -> int:
    return int(await fetchval(dsn, "SELECT coalesce(max(position), 0) FROM order_sync.trade_changes"))


@pytest.fixture(autouse=True)
def _no_stray_cursor_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The examples read NOTIFY_CHANNEL; the daemon's default channel is what they must follow here.
    monkeypatch.delenv("NOTIFY_CHANNEL", raising=False)


def test_every_example_runs_the_catch_up_query_the_readme_documents() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    documented = readme.split("**Catch-up query**", 1)[1].split("```sql\n", 1)[1].split("```", 1)[0]
    select = " ".join(documented.split("WHERE", 1)[0].split())  # SELECT … FROM trade_changes
    for example in (NODE_DIR / "consumer.js", PSQL_RECIPE, PYTHON_EXAMPLE):
        text = " ".join(example.read_text(encoding="utf-8").split())
        # Each reads the feed qualified by the schema it is given (JS, psql, Python placeholders).
        for qualified in ("${schema}.trade_changes", ':"schema".trade_changes', "{schema}.trade_changes"):
            text = text.replace(qualified, "trade_changes")
        assert select in text, example
        assert "WHERE position > " in text.split(select, 1)[1][:40], example
        assert "ORDER BY position" in text, example
