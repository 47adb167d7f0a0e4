"""Fixtures shared by every test area: a throwaway PostgreSQL database and the aioresponses shim."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import aioresponses.core
import asyncpg
import pytest

from store.migrate import migrate
from store.schema import DEFAULT_SCHEMA, check_schema
from tests import database_server

# The server the tests create their databases on: TEST_DATABASE_URL's, or an embedded one when that does
# not answer (tests/database_server.py). Settled at session start, before any test module is imported.
ADMIN_DSN = os.environ.get("TEST_DATABASE_URL", database_server.DEFAULT_URL)
_server: database_server.Server | None = None


def pytest_sessionstart(session: pytest.Session) -> None:
    global ADMIN_DSN, _server
    _server = database_server.resolve()
    ADMIN_DSN = _server.admin_dsn
    # Child processes (the daemon, benchmarks) that read it reach the same server.
    os.environ["TEST_DATABASE_URL"] = ADMIN_DSN


def pytest_report_header(config: pytest.Config) -> str:
    return f"database: {_server.origin if _server else ADMIN_DSN}"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _server is not None and _server.stop is not None:
        _server.stop()


class _SentStreamWriter:
    """Stands in for the writer of a request that was never sent; aiohttp >= 3.14.5 reads its size."""

    output_size = 0


class _ShimmedClientResponse(aiohttp.ClientResponse):
    """aioresponses 0.7.9 builds ClientResponse without `stream_writer`, which aiohttp >= 3.14
    requires (pnuckowski/aioresponses#289). The response it builds never writes; it passes
    `writer=None`, for which aiohttp only reads the writer's `output_size`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("stream_writer") is None:
            kwargs["stream_writer"] = _SentStreamWriter()
        super().__init__(*args, **kwargs)


aioresponses.core.ClientResponse = _ShimmedClientResponse  # type: ignore[attr-defined]


async def create_database(*, search_path: str | None = DEFAULT_SCHEMA) -> str:
    """Create an empty database with a unique name; return its DSN.

    The tests' own connections find the service's tables unqualified, as an ERP role with that
    search_path does (README's roles): the database's default `search_path` is the service's schema.
    The service never relies on it (it sets its own on every connection; tests/store/test_schema.py
    proves that on a database with `search_path=None`, the server's default)."""
    name = f"tos_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
        if search_path is not None:
            await conn.execute(f'ALTER DATABASE "{name}" SET search_path TO {check_schema(search_path)}')
    finally:
        await conn.close()
    return database_server.with_database(ADMIN_DSN, name)


async def drop_database(dsn: str) -> None:
    name = database_server.database_of(dsn)
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="module")
async def fresh_database() -> AsyncIterator[str]:
    """An empty database for one test module, dropped afterwards (even if the server kept sessions)."""
    dsn = await create_database()
    try:
        yield dsn
    finally:
        await drop_database(dsn)


@pytest.fixture(scope="module")
async def migrated_database(fresh_database: str) -> str:
    """`fresh_database` with the store's schema applied (all migrations in store/migrations/)."""
    await migrate(fresh_database)
    return fresh_database
