"""Every storage class over the shared pool waits for a free connection no longer than the acquire
timeout (store.pooled): with the pool's only connection held, a read fails within it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from store.errors import StoreError
from store.pg import PgStore
from store.pg_connect import ConnectionLimits
from store.pg_reconciler import pg_reconciler_store

ACQUIRE_SECONDS = 0.3


async def test_with_the_pool_exhausted_the_reconciler_storage_gives_up_after_the_acquire_timeout(
    migrated_database: str,
) -> None:
    limits = ConnectionLimits(acquire=ACQUIRE_SECONDS)
    store = await PgStore.connect(migrated_database, min_size=1, max_size=1, limits=limits)
    try:
        storage = pg_reconciler_store(store, replica="test")
        reads: dict[str, Callable[[], Awaitable[object]]] = {
            "coverage": lambda: storage.coverage.coverage("shop-a", None, None),
            "reports": lambda: storage.reports.open_reports("shop-a"),
            "loads": lambda: storage.loads.state("shop-a"),
            "unresolved": lambda: storage.unresolved.counts(),
            "trades": lambda: storage.trades.existing_tids([1]),
            "store": lambda: store.last_position(),
        }
        async with store.pool.acquire():  # the only connection, held
            for name, read in reads.items():
                started = time.monotonic()
                with pytest.raises((StoreError, TimeoutError, asyncpg.PostgresError)):
                    async with asyncio.timeout(5):
                        await read()
                waited = time.monotonic() - started
                assert ACQUIRE_SECONDS * 0.9 <= waited < 3, f"{name} waited {waited:.2f} s"
    finally:
        await store.close()
