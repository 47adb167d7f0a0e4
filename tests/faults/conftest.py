"""Fixtures of the fault tests: the test server's address and a proxy in front of it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest

from tests.conftest import ADMIN_DSN
from tests.faults.pgproxy import PgProxy


def upstream() -> tuple[str, int]:
    """Host and port of the PostgreSQL server the tests use."""
    parts = urlsplit(ADMIN_DSN)
    return parts.hostname or "127.0.0.1", parts.port or 5432


def database_of(dsn: str) -> str:
    return dsn.rpartition("/")[2]


@pytest.fixture
async def proxy() -> AsyncIterator[PgProxy]:
    async with PgProxy(*upstream()) as pg_proxy:
        yield pg_proxy
