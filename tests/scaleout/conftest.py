"""What the scale-out tests share: a migrated database per test (replica rows, locks and bans are
per database) and replica sets built in this process, each with its own coordination connection."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from replicas.replica_set import ReplicaConfig, ReplicaSet
from store.migrate import migrate
from taobao.limiter import TopRateLimiter
from tests.conftest import create_database, drop_database

SHOPS = [f"shop-{n}" for n in range(7)]
RATE = 60.0


@pytest.fixture
async def dsn() -> AsyncIterator[str]:
    database = await create_database()
    try:
        await migrate(database)
        yield database
    finally:
        await drop_database(database)


@pytest.fixture
async def pool(fresh_database: str) -> AsyncIterator[asyncpg.Pool]:
    """A small pool on the module's database, migrated, for the tests that run replicas as processes."""
    await migrate(fresh_database)
    async with asyncpg.create_pool(fresh_database, min_size=1, max_size=3) as pool:
        yield pool


def replica_set(dsn: str, name: str, *, shops: list[str] | None = None, **config: Any) -> ReplicaSet:
    values: dict[str, Any] = {"heartbeat_seconds": 0.2} | config
    return ReplicaSet(
        ReplicaConfig(replica=name, app_key="app", api_rate=RATE, **values),
        dsn=dsn,
        shops=shops or SHOPS,
        limiter=TopRateLimiter(RATE),
    )


@contextlib.asynccontextmanager
async def running(*sets: ReplicaSet) -> AsyncIterator[list[asyncio.Task[None]]]:
    """Each set's side task running; cancelled (a graceful leave) on the way out."""
    tasks = [asyncio.create_task(s.run(), name=f"replica-{s.replica}") for s in sets]
    try:
        yield tasks
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def eventually(condition: Callable[[], bool | Awaitable[bool]], within: float, what: str) -> None:
    """Poll `condition` with a deadline (never a bare sleep to wait for something)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = condition()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within:g} s waiting for {what}")
        await asyncio.sleep(0.02)


def leaders(*sets: ReplicaSet) -> dict[str, list[str]]:
    """shop → the replicas that say they lead it."""
    out: dict[str, list[str]] = {shop: [] for shop in sets[0].leadership.shops}
    for s in sets:
        for shop in s.leadership.led:
            out[shop].append(s.replica)
    return out
