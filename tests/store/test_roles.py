"""README's two roles, applied as written to fresh roles: the service's role migrates and writes in the
schema it was given; the ERP's read role follows the feed (catch-up query, LISTEN) and nothing else."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from store.feed import parse_doorbell
from store.migrate import migrate, print_sql
from store.pg import PgStore
from store.schema import DEFAULT_SCHEMA
from tests import database_server
from tests.conftest import ADMIN_DSN, create_database, drop_database
from tests.integration.harness import ROOT
from tests.store.factory import fresh_tids, make_trade

FEED_TABLES = {"trades", "trade_orders", "trade_changes"}
WAIT = 5.0


def readme_role_blocks() -> list[str]:
    """The ```sql blocks of README's "Database roles" section, in order."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Database roles\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sql\n(.*?)```", section, re.DOTALL)


@dataclass
class Roles:
    dsn: str
    database: str
    owner: str
    reader: str

    def as_written(self, block: str) -> str:
        """A README block for this test's database and roles (roles are server-wide: names are unique)."""
        block = block.replace("DATABASE erp", f'DATABASE "{self.database}"')
        return block.replace("order_sync_svc", self.owner).replace("erp_reader", self.reader)


@pytest.fixture
async def roles() -> AsyncIterator[Roles]:
    dsn = await create_database(search_path=None)
    suffix = uuid.uuid4().hex[:8]
    made = Roles(dsn, database_server.database_of(dsn), f"tos_svc_{suffix}", f"tos_erp_{suffix}")
    try:
        yield made
    finally:
        await drop_database(dsn)  # with it the schema, its grants and the roles' memberships
        admin = await asyncpg.connect(ADMIN_DSN)
        try:
            for role in (made.owner, made.reader):
                await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        finally:
            await admin.close()


def _as_user(dsn: str, user: str) -> str:
    parts = urlsplit(dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


async def _as_superuser(dsn: str, script: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(script)
    finally:
        await conn.close()


@pytest.mark.parametrize("how", ["migrate", "print-sql"])
async def test_readme_roles_let_the_erp_follow_the_feed_and_read_nothing_else(roles: Roles, how: str) -> None:
    before, after = readme_role_blocks()
    await _as_superuser(roles.dsn, roles.as_written(before))
    # The service's role, a non-superuser that owns the schema and holds nothing else, migrates; or a
    # DBA runs `migrate --print-sql`'s script as that role, and `migrate` then finds nothing to do.
    service = await asyncpg.connect(roles.dsn, user=roles.owner)
    try:
        assert not await service.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        if how == "print-sql":
            await service.execute(print_sql())
            assert await migrate(service) == []
        else:
            assert await migrate(service) != []
    finally:
        await service.close()
    await _as_superuser(roles.dsn, roles.as_written(after))

    reader = await asyncpg.connect(roles.dsn, user=roles.reader)  # search_path from ALTER ROLE
    bells: asyncio.Queue[str] = asyncio.Queue()
    await reader.add_listener("trade_changed", lambda *args: bells.put_nowait(str(args[3])))
    try:
        [tid] = fresh_tids(1)
        store = await PgStore.connect(_as_user(roles.dsn, roles.owner))
        async with store:
            assert (await store.apply_trades([make_trade(tid, 0)], source="stream")).changed == (tid,)
        bell = parse_doorbell(await asyncio.wait_for(bells.get(), WAIT))
        assert bell.tid == tid
        rows = await reader.fetch(
            "SELECT c.position, t.tid, o.oid FROM trade_changes c JOIN trades t USING (tid) "
            "JOIN trade_orders o USING (tid) WHERE c.position > $1 ORDER BY c.position",
            bell.position - 1,
        )
        assert [r["tid"] for r in rows] == [tid]
        await _refused_everything_else(reader)
    finally:
        await reader.close()


async def _refused_everything_else(reader: asyncpg.Connection) -> None:
    tables = {
        r["relname"]
        for r in await reader.fetch(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'S')",
            DEFAULT_SCHEMA,
        )
    }
    assert {"dead_letters", "unresolved_trades", "shops", "sync_shops", "schema_migrations"} < tables
    readable = set()
    for table in sorted(tables):
        try:
            await reader.fetch(f"SELECT * FROM {DEFAULT_SCHEMA}.{table} LIMIT 0")
            readable.add(table)
        except asyncpg.InsufficientPrivilegeError:
            pass
    assert readable == FEED_TABLES
    # No column the read role can see could hold a session key or the app secret.
    columns = await reader.fetch(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = $1",
        DEFAULT_SCHEMA,
    )
    assert {r["table_name"] for r in columns} == FEED_TABLES
    assert not [r for r in columns if re.search("session|secret|token", r["column_name"])]
