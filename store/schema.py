"""The service's own PostgreSQL schema (docs/design.md#its-own-schema).

Every table, sequence and function of the service lives in one schema, `order_sync` unless
DATABASE_SCHEMA names another. The SQL names nothing by schema: every connection the service opens sets
`search_path` to that schema alone (`connection_settings`), so an ERP's own `public.trades` or
`public.schema_migrations` is neither read nor touched.
"""

from __future__ import annotations

import re
from typing import Final

from store.constants import SERVER_SETTINGS

DEFAULT_SCHEMA: Final = "order_sync"

# Unquoted in search_path and in the printed SQL, so it must need no quoting; `pg_` names are reserved.
_SCHEMA = re.compile(r"^(?!pg_)[a-z_][a-z0-9_]{0,62}$")


def check_schema(schema: str) -> str:
    if not _SCHEMA.match(schema):
        raise ValueError(
            f"database schema must be a lower-case identifier of at most 63 bytes, not pg_*: {schema!r}"
        )
    return schema


def connection_settings(schema: str = DEFAULT_SCHEMA) -> dict[str, str]:
    """asyncpg `server_settings` for every connection the service opens: UTC, its name, its schema."""
    return {**SERVER_SETTINGS, "search_path": check_schema(schema)}


def create_schema_sql(schema: str) -> str:
    return f"CREATE SCHEMA IF NOT EXISTS {check_schema(schema)}"


def create_schema_if_missing_sql(schema: str) -> str:
    """For a script: `CREATE SCHEMA IF NOT EXISTS` checks the database's CREATE privilege even when the
    schema exists, which a role given its schema by a DBA need not hold; this creates it only when
    missing."""
    name = check_schema(schema)
    return (
        f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = '{name}') THEN "
        f"CREATE SCHEMA {name}; END IF; END $$"
    )


def set_search_path_sql(schema: str) -> str:
    return f"SET search_path TO {check_schema(schema)}"
