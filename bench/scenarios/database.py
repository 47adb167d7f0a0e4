"""A throwaway database for one run: CREATE DATABASE on the server of an admin DSN, DROP afterwards.
When that server cannot be reached, an embedded PostgreSQL serves, started as the demo starts its own
(`daemon.embedded_db`: the wheel's documented API, a watchdog, reaped when its run dies)."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator

import asyncpg

from daemon.embedded_db import EmbeddedPostgresUnavailable, create_database, drop_database, embedded_postgres
from store.errors import DATABASE_ERRORS

logger = logging.getLogger(__name__)


async def _reachable(dsn: str) -> bool:
    try:
        conn = await asyncpg.connect(dsn, timeout=5)
    except DATABASE_ERRORS:
        return False
    await conn.close()
    return True


@contextlib.asynccontextmanager
async def throwaway_database(admin_dsn: str, prefix: str) -> AsyncIterator[tuple[str, str]]:
    """Yield (dsn of a new empty database, admin dsn of its server)."""
    async with contextlib.AsyncExitStack() as stack:
        if not await _reachable(admin_dsn):
            logger.warning("no PostgreSQL at the admin DSN; starting an embedded one")
            try:
                admin_dsn = stack.enter_context(embedded_postgres())
            except EmbeddedPostgresUnavailable as exc:
                raise RuntimeError(f"no PostgreSQL reachable and no embedded one: {exc}") from exc
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        dsn = await create_database(admin_dsn, name)
        try:
            yield dsn, admin_dsn
        finally:
            await drop_database(admin_dsn, name)
