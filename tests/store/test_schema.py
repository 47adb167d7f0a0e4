"""The service's own schema: created by migrate, set on every connection, nothing created outside it,
an ERP's own `public.trades` and `public.schema_migrations` left alone, and the SQL printable for a DBA."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from daemon.cli import main
from daemon.settings import DatabaseSettings
from store.migrate import load_migrations, migrate, print_sql
from store.pg import PgStore
from store.schema import check_schema, connection_settings
from tests.conftest import create_database, drop_database
from tests.store.factory import fresh_tids, make_trade

# Not the default: a path that forgot its search_path would find nothing there.
SCHEMA = "erp_feed"

# Every object PostgreSQL names in a schema: relations (tables, sequences, indexes, views), functions
# and types; pg_toast holds the tables' own out-of-line storage, which belongs to them.
OBJECTS = """
SELECT * FROM (
SELECT n.nspname, 'class' AS kind, c.relname AS name FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
UNION ALL SELECT n.nspname, 'proc', p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
UNION ALL SELECT n.nspname, 'type', t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
UNION ALL SELECT nspname, 'schema', nspname FROM pg_namespace
) AS o WHERE nspname <> 'pg_toast'
"""


@pytest.fixture
async def plain_database() -> AsyncIterator[str]:
    """A database with the server's default search_path (`"$user", public`), as an ERP's is."""
    dsn = await create_database(search_path=None)
    try:
        yield dsn
    finally:
        await drop_database(dsn)


async def _objects(dsn: str) -> set[tuple[str, str, str]]:
    conn = await asyncpg.connect(dsn)
    try:
        return {(r["nspname"], r["kind"], r["name"]) for r in await conn.fetch(OBJECTS)}
    finally:
        await conn.close()


async def test_migrations_create_nothing_outside_the_schema(plain_database: str) -> None:
    before = await _objects(plain_database)
    await migrate(plain_database, schema=SCHEMA)
    created = await _objects(plain_database) - before
    assert {o for o in created if o[0] != SCHEMA} == set()
    assert (SCHEMA, "schema", SCHEMA) in created
    tables = {name for schema, kind, name in created if schema == SCHEMA and kind == "class"}
    assert {"trades", "trade_changes", "schema_migrations", "dead_letters"} <= tables


async def test_an_erps_own_trades_and_schema_migrations_are_left_alone(plain_database: str) -> None:
    conn = await asyncpg.connect(plain_database)
    try:
        await conn.execute(
            "CREATE TABLE public.trades (id serial PRIMARY KEY, erp_note text);"
            "INSERT INTO public.trades (erp_note) VALUES ('the ERP''s own');"
            "CREATE TABLE public.schema_migrations (id text PRIMARY KEY);"
            "INSERT INTO public.schema_migrations VALUES ('20240101_erp')"
        )
        shipped = [m.version for m in load_migrations()]
        assert await migrate(plain_database, schema=SCHEMA) == shipped
        assert await migrate(plain_database, schema=SCHEMA) == []
        assert await conn.fetchval("SELECT string_agg(erp_note, ',') FROM public.trades") == "the ERP's own"
        assert await conn.fetchval("SELECT id FROM public.schema_migrations") == "20240101_erp"
        versions = await conn.fetch(f"SELECT version FROM {SCHEMA}.schema_migrations ORDER BY 1")
        assert [r["version"] for r in versions] == shipped
    finally:
        await conn.close()


async def test_the_store_writes_and_rings_in_its_schema(plain_database: str) -> None:
    await migrate(plain_database, schema=SCHEMA)
    [tid] = fresh_tids(1)
    async with await PgStore.connect(plain_database, schema=SCHEMA) as store:
        result = await store.apply_trades([make_trade(tid, 0)], source="stream")
        assert result.changed == (tid,)
        assert await store.pool.fetchval("SHOW search_path") == SCHEMA
    conn = await asyncpg.connect(plain_database)
    try:
        assert await conn.fetchval(f"SELECT count(*) FROM {SCHEMA}.trade_changes WHERE tid = $1", tid) == 1
        assert await conn.fetchval("SELECT to_regclass('public.trades')") is None
    finally:
        await conn.close()


async def test_printed_sql_is_what_migrate_would_do(plain_database: str) -> None:
    conn = await asyncpg.connect(plain_database)
    try:
        await conn.execute(print_sql(SCHEMA))  # one simple-protocol script, as psql would run it
    finally:
        await conn.close()
    printed = await _objects(plain_database)
    assert await migrate(plain_database, schema=SCHEMA) == []  # recorded as migrate records
    other = await create_database(search_path=None)
    try:
        await migrate(other, schema=SCHEMA)
        assert {o for o in await _objects(other) if o[0] == SCHEMA} == {o for o in printed if o[0] == SCHEMA}
    finally:
        await drop_database(other)


def test_migrate_print_sql_needs_no_database(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("DATABASE_SCHEMA", SCHEMA)
    assert main(["migrate", "--print-sql", "--env-file", str(tmp_path / "absent.env")]) == 0
    out = capsys.readouterr().out
    assert out == print_sql(SCHEMA)
    assert f"CREATE SCHEMA {SCHEMA};" in out
    assert "INSERT INTO schema_migrations" in out


@pytest.mark.parametrize("bad", ["Order_Sync", "pg_sync", "order-sync", "1sync", "", "a" * 64, "x;drop"])
def test_a_schema_that_would_need_quoting_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="database schema"):
        check_schema(bad)
    with pytest.raises(ValueError, match="database_schema"):
        DatabaseSettings(database_schema=bad)


def test_every_connection_speaks_utc_under_its_name_in_its_schema() -> None:
    assert connection_settings(SCHEMA) == {
        "timezone": "UTC",
        "application_name": "order-sync",
        "search_path": SCHEMA,
    }


async def _order_sync(*args: str, schema: str, dsn: str) -> tuple[int, str]:
    env = {**os.environ, "DATABASE_URL": dsn, "DATABASE_SCHEMA": schema}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "daemon.cli", *args, "--env-file", "/nonexistent/.env", env=env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode() + err.decode()


async def test_the_commands_read_the_schema_they_are_given(plain_database: str) -> None:
    code, said = await _order_sync("migrate", schema=SCHEMA, dsn=plain_database)
    assert code == 0, said
    for command in (["report", "--json"], ["dead-letters", "--json"], ["migrate"]):
        code, said = await _order_sync(*command, schema=SCHEMA, dsn=plain_database)
        assert code == 0, (command, said)
    assert "schema is up to date" in said
    # The same commands against a schema that was never migrated find nothing of the service's.
    code, said = await _order_sync("report", "--json", schema="order_sync_elsewhere", dsn=plain_database)
    assert code != 0
    assert 'relation "gap_reports" does not exist' in said
