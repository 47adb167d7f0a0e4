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

# The server the tests create their databases on. CI makes sure it is up (.ci/run).
ADMIN_DSN = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


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


def _dsn_for(database: str) -> str:
    base, _, _ = ADMIN_DSN.rpartition("/")
    return f"{base}/{database}"


async def create_database() -> str:
    """Create an empty database with a unique name; return its DSN."""
    name = f"tos_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return _dsn_for(name)


async def drop_database(dsn: str) -> None:
    name = dsn.rpartition("/")[2]
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
