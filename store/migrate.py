"""Versioned schema migrations: `store/migrations/NNN_name.sql`, applied in order, each in its own
transaction, all under one PostgreSQL advisory lock so replicas that start together take turns.

Everything, the bookkeeping table `schema_migrations` included, goes into the service's own schema
(`store.schema`), created first when missing; `print_sql` writes the same steps as a script for a DBA
who applies them by hand.

A migration that fails leaves no trace (its transaction rolls back and its version is not recorded).
An applied migration whose file later changes is refused: the schema would no longer match the code.
Versions in the database that this release does not know are tolerated (a newer replica ran first).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

import asyncpg

from store import sql
from store.constants import MIGRATION_LOCK_KEY
from store.errors import DATABASE_ERRORS, MigrationError
from store.schema import (
    DEFAULT_SCHEMA,
    connection_settings,
    create_schema_if_missing_sql,
    create_schema_sql,
    set_search_path_sql,
)

logger = logging.getLogger(__name__)

_FILE_NAME = re.compile(r"^(?P<version>\d{3,})_(?P<name>[a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


def load_migrations(directory: Traversable | None = None) -> list[Migration]:
    """The migrations shipped with the package (or in `directory`), sorted by version."""
    folder = directory if directory is not None else resources.files("store").joinpath("migrations")
    found: dict[int, Migration] = {}
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE_NAME.match(entry.name)
        if match is None:
            raise MigrationError(f"migration file {entry.name!r} is not named NNN_lower_snake.sql")
        version = int(match["version"])
        if version in found:
            raise MigrationError(f"two migration files have version {version}")
        found[version] = Migration(version, match["name"], entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


async def migrate(
    target: str | asyncpg.Connection,
    *,
    schema: str = DEFAULT_SCHEMA,
    migrations: Sequence[Migration] | None = None,
) -> list[int]:
    """Apply the pending migrations in `schema`; return the versions this call applied (empty when up
    to date).

    `target` is a DSN or an open connection (left open, its search_path set to `schema`). Safe to run
    from several processes at once.
    """
    plan = list(migrations) if migrations is not None else load_migrations()
    try:
        if isinstance(target, str):
            conn = await asyncpg.connect(target, server_settings=connection_settings(schema))
            try:
                return await _migrate_locked(conn, plan, schema)
            finally:
                await conn.close()
        return await _migrate_locked(target, plan, schema)
    except DATABASE_ERRORS as exc:
        raise MigrationError(f"migration failed: {exc}") from exc


async def applied_versions(conn: asyncpg.Connection) -> list[int] | None:
    """The versions applied to this database, oldest first; None before its first migration. Only reads
    (`order-sync check` uses it)."""
    try:
        rows = await conn.fetch(sql.SELECT_MIGRATIONS)
    except asyncpg.UndefinedTableError:
        return None
    return [row["version"] for row in rows]


def print_sql(schema: str = DEFAULT_SCHEMA, migrations: Sequence[Migration] | None = None) -> str:
    """The whole schema as one psql script, each migration in its own transaction and recorded as
    `migrate` records it, so `migrate` afterwards finds nothing to do. Needs no database."""
    plan = list(migrations) if migrations is not None else load_migrations()
    parts = [
        f"-- taobao-order-sync schema in {schema}: run as the role that is to own it",
        f"{create_schema_if_missing_sql(schema)};",
        f"{set_search_path_sql(schema)};",
        f"{sql.CREATE_SCHEMA_MIGRATIONS.strip()};",
    ]
    for m in plan:
        # Version, a [a-z0-9_] name and a hex digest: literals that need no escaping.
        record = sql.INSERT_MIGRATION.replace("$1", str(m.version))
        record = record.replace("$2", f"'{m.name}'").replace("$3", f"'{m.checksum}'")
        parts += [
            f"\n-- {m.version:03d}_{m.name}",
            "BEGIN;",
            m.sql.strip(),
            f"{record};",
            "COMMIT;",
        ]
    return "\n".join(parts) + "\n"


async def _migrate_locked(conn: asyncpg.Connection, plan: Sequence[Migration], schema: str) -> list[int]:
    # A session-level lock spans the per-migration transactions; it is released when the connection
    # closes even if this process dies half-way.
    await conn.execute(sql.MIGRATION_LOCK, MIGRATION_LOCK_KEY)
    try:
        # Only when missing: CREATE SCHEMA checks the database's CREATE privilege even with IF NOT
        # EXISTS, and an owner role given a schema by its DBA need not hold it.
        if not await conn.fetchval(sql.SCHEMA_EXISTS, schema):
            await conn.execute(create_schema_sql(schema))
        await conn.execute(set_search_path_sql(schema))
        await conn.execute(sql.CREATE_SCHEMA_MIGRATIONS)
        applied = {row["version"]: row["checksum"] for row in await conn.fetch(sql.SELECT_MIGRATIONS)}
        _check_applied(plan, applied)
        done: list[int] = []
        for migration in plan:
            if migration.version in applied:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    sql.INSERT_MIGRATION, migration.version, migration.name, migration.checksum
                )
            logger.info(
                "applied migration %03d_%s",
                migration.version,
                migration.name,
                extra={"action": "migration_applied", "version": migration.version},
            )
            done.append(migration.version)
        return done
    finally:
        if not conn.is_closed():
            await conn.execute(sql.MIGRATION_UNLOCK, MIGRATION_LOCK_KEY)


def _check_applied(plan: Iterable[Migration], applied: dict[int, str]) -> None:
    known = {m.version: m for m in plan}
    for version, checksum in applied.items():
        migration = known.get(version)
        if migration is None:
            logger.info(
                "database has migration %03d that this release does not know; leaving it",
                version,
                extra={"action": "migration_unknown", "version": version},
            )
        elif migration.checksum != checksum:
            raise MigrationError(
                f"migration {version:03d}_{migration.name} changed after it was applied; "
                "add a new migration instead of editing an applied one"
            )
