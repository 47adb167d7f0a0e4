"""A migrated database and a PgStore on it, one per test module."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from store.pg import PgStore


@pytest.fixture(scope="module")
async def store(migrated_database: str) -> AsyncIterator[PgStore]:
    pg = await PgStore.connect(migrated_database, max_size=10)
    try:
        yield pg
    finally:
        await pg.close()
