"""The example ERP consumer recovers every change, exactly once, across killed connections."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from examples.erp_consumer import Change, ErpConsumer
from store.pg import PgStore
from tests.store.factory import fresh_tids, make_trade

WAIT = 10.0


async def _until(check: Callable[[], Awaitable[bool] | bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while True:
        outcome = check()
        if outcome if isinstance(outcome, bool) else await outcome:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.01)


async def record_in_erp_table(conn: asyncpg.Connection, change: Change) -> None:
    # The ERP's own write, in the same transaction that advances its cursor.
    await conn.execute("INSERT INTO erp_seen (position, tid) VALUES ($1, $2)", change.position, change.tid)


@pytest.fixture
async def consumer(migrated_database: str) -> AsyncIterator[ErpConsumer]:
    conn = await asyncpg.connect(migrated_database)
    await conn.execute("CREATE TABLE IF NOT EXISTS erp_seen (position bigint NOT NULL, tid bigint NOT NULL)")
    await conn.close()
    erp = ErpConsumer(
        migrated_database,
        "trade_changed",
        record_in_erp_table,
        batch_size=7,  # several batches per catch-up
        idle_probe_seconds=0.2,
        backoff_initial_seconds=0.01,
        backoff_max_seconds=0.1,
    )
    task = asyncio.create_task(erp.run(), name="erp-consumer")
    try:
        yield erp
    finally:
        erp.stop()
        await asyncio.wait_for(task, WAIT)


async def _kill(store: PgStore, erp: ErpConsumer) -> None:
    await _until(lambda: erp.backend_pid is not None, "the consumer is connected")
    killed = await store.pool.fetchval("SELECT pg_terminate_backend($1)", erp.backend_pid)
    assert killed


async def test_consumer_sees_every_position_exactly_once_across_killed_connections(
    store: PgStore, consumer: ErpConsumer
) -> None:
    tids = fresh_tids(60)
    await _until(lambda: consumer.connections == 1, "the consumer connected")
    for round_ in range(6):
        batch = tids[round_ * 10 : (round_ + 1) * 10]
        await store.apply_trades([make_trade(t, 0) for t in batch], source="stream")
        if round_ % 2 == 1:
            await _kill(store, consumer)
            # Changes committed while it is away must come back on reconnect, not by doorbell.
            await store.apply_trades([make_trade(t, 1) for t in batch], source="sweep")
    last = await store.last_position()
    await asyncio.wait_for(consumer.wait_for_position(last), WAIT)

    assert consumer.connections >= 4
    rows = await store.pool.fetch("SELECT position FROM erp_seen ORDER BY position")
    positions = [row["position"] for row in rows]
    assert positions == list(range(1, last + 1))
    assert len(positions) >= 90
    saved = await store.pool.fetchval("SELECT position FROM erp_cursor WHERE consumer = 'erp'")
    assert saved == last


async def test_consumer_probes_an_idle_connection(store: PgStore, consumer: ErpConsumer) -> None:
    await _until(lambda: consumer.probes >= 2, "the consumer probed its idle connection twice")
    await store.apply_trades([make_trade(fresh_tids(1)[0], 0)], source="stream")
    await asyncio.wait_for(consumer.wait_for_position(await store.last_position()), WAIT)
