"""Migrations: idempotent, transactional, safe when several replicas run them at once."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from daemon import migrate_cmd as cli
from store.errors import MigrationError
from store.migrate import Migration, load_migrations, migrate
from tests.conftest import create_database, drop_database

EXPECTED_TABLES = {
    "schema_migrations",
    "trades",
    "trade_orders",
    "trade_changes",
    "feed_counter",
    "shops",
    "dead_letters",
    "coverage",
    "gap_reports",
}


@pytest.fixture
async def empty_database() -> AsyncIterator[str]:
    dsn = await create_database()
    try:
        yield dsn
    finally:
        await drop_database(dsn)


async def _tables(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'order_sync'")
    finally:
        await conn.close()
    return {row["tablename"] for row in rows}


def test_shipped_migrations_start_at_one_and_only_go_up() -> None:
    # Numbers are reserved per area (the store 002-009, the reconciler from 010), so holes are allowed.
    versions = [m.version for m in load_migrations()]
    assert versions[0] == 1
    assert versions == sorted(set(versions))


async def test_migrate_creates_the_schema_once(empty_database: str) -> None:
    shipped = [m.version for m in load_migrations()]
    assert await migrate(empty_database) == shipped
    assert await migrate(empty_database) == []
    assert await _tables(empty_database) >= EXPECTED_TABLES


async def test_replicas_migrating_at_once_apply_each_version_exactly_once(empty_database: str) -> None:
    shipped = [m.version for m in load_migrations()]
    results = await asyncio.gather(*(migrate(empty_database) for _ in range(6)))
    assert sorted(results, key=len, reverse=True) == [shipped] + [[]] * 5
    conn = await asyncpg.connect(empty_database)
    try:
        rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
    finally:
        await conn.close()
    assert [row["version"] for row in rows] == shipped


async def test_a_failing_migration_leaves_no_trace_and_later_ones_wait(empty_database: str) -> None:
    plan = [
        Migration(1, "good", "CREATE TABLE a (x int)"),
        Migration(2, "bad", "CREATE TABLE b (x int); SELECT no_such_function()"),
        Migration(3, "after", "CREATE TABLE c (x int)"),
    ]
    with pytest.raises(MigrationError, match="no_such_function"):
        await migrate(empty_database, migrations=plan)
    assert await _tables(empty_database) == {"schema_migrations", "a"}
    fixed = [plan[0], Migration(2, "bad", "CREATE TABLE b (x int)"), plan[2]]
    assert await migrate(empty_database, migrations=fixed) == [2, 3]


async def test_an_applied_migration_that_changed_is_refused(empty_database: str) -> None:
    await migrate(empty_database, migrations=[Migration(1, "one", "CREATE TABLE a (x int)")])
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await migrate(empty_database, migrations=[Migration(1, "one", "CREATE TABLE a (y int)")])


async def test_versions_unknown_to_this_release_are_left_alone(empty_database: str) -> None:
    two = [Migration(1, "one", "CREATE TABLE a (x int)"), Migration(2, "two", "CREATE TABLE b (x int)")]
    await migrate(empty_database, migrations=two)
    assert await migrate(empty_database, migrations=two[:1]) == []


async def test_migrate_on_an_open_connection_leaves_it_open_and_unlocked(empty_database: str) -> None:
    conn = await asyncpg.connect(empty_database)
    try:
        await migrate(conn, migrations=[Migration(1, "one", "CREATE TABLE a (x int)")])
        assert not conn.is_closed()
        held = await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        )
        assert held == 0
    finally:
        await conn.close()


def _cli_args(url: str | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.configure(parser)
    return parser.parse_args([] if url is None else ["--database-url", url])


async def test_cli_migrates_from_database_url(
    empty_database: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", empty_database)
    # The CLI runs its own event loop, as `order-sync migrate` does.
    assert await asyncio.to_thread(cli.run, _cli_args(None)) == 0
    assert "applied migrations: 001" in capsys.readouterr().out
    assert await asyncio.to_thread(cli.run, _cli_args(empty_database)) == 0
    assert "up to date" in capsys.readouterr().out


def test_cli_without_a_database_url_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert cli.run(_cli_args(None)) == 2
    assert "DATABASE_URL" in capsys.readouterr().err


def test_cli_reports_an_unreachable_database(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(_cli_args("postgresql://postgres@127.0.0.1:1/none")) == 1
    assert "migration failed" in capsys.readouterr().err
