"""Borrowing connections from the shared pool with a bounded wait (DATABASE_ACQUIRE_TIMEOUT_SECONDS,
docs/operations.md#database-timeouts).

asyncpg's `Pool.fetch()` and friends, and `Pool.acquire()` without a timeout, wait for a free
connection for ever: while the database hangs, every caller queues behind the stuck connections. The
storage classes over the pool borrow through `Pooled` instead, so each wait fails with TimeoutError
after the limit and the caller's usual error handling (retry, next round) takes over.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from asyncpg.pool import PoolAcquireContext

from store.pg_connect import ConnectionLimits

DEFAULT_ACQUIRE_SECONDS = ConnectionLimits().acquire


class Pooled:
    """`pool`, each connection borrowed for at most `acquire_timeout` seconds of waiting."""

    def __init__(self, pool: asyncpg.Pool, acquire_timeout: float = DEFAULT_ACQUIRE_SECONDS) -> None:
        self.pool = pool
        self.acquire_timeout = acquire_timeout

    def acquire(self) -> PoolAcquireContext:
        return self.pool.acquire(timeout=self.acquire_timeout)

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async with self.acquire() as conn:
            rows: list[asyncpg.Record] = await conn.fetch(query, *args)
            return rows

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        async with self.acquire() as conn:
            row: asyncpg.Record | None = await conn.fetchrow(query, *args)
            return row

    async def fetchval(self, query: str, *args: Any) -> Any:
        async with self.acquire() as conn:
            return await conn.fetchval(query, *args)

    async def execute(self, query: str, *args: Any) -> str:
        async with self.acquire() as conn:
            status: str = await conn.execute(query, *args)
            return status
