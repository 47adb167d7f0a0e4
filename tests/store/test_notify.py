"""NOTIFY is a doorbell rung at commit: never before, never after a rollback, always small."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import asyncpg
import pytest

from store.constants import NOTIFY_PAYLOAD_LIMIT, PAYLOAD_TEXT_LIMIT
from store.feed import parse_doorbell, read_changes
from store.pg import PgStore
from store.upsert import apply_batch
from taobao.models import Trade
from tests.store.factory import fresh_tids, make_trade, trade_json

CHANNEL = "trade_changed"
FENCE = "fence"
WAIT = 5.0


class Bell:
    """A LISTEN connection that queues every payload on CHANNEL."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.payloads: asyncio.Queue[str] = asyncio.Queue()

    def _on(self, conn: Any, pid: int, channel: str, payload: object) -> None:
        self.payloads.put_nowait(str(payload))

    async def next(self) -> str:
        return await asyncio.wait_for(self.payloads.get(), WAIT)

    async def fence(self, other: asyncpg.Pool) -> None:
        """Ring a committed marker. Notifications arrive in commit order, so anything committed before
        it would be received before it."""
        await other.execute("SELECT pg_notify($1, $2)", CHANNEL, FENCE)


@pytest.fixture
async def bell(migrated_database: str) -> AsyncIterator[Bell]:
    conn = await asyncpg.connect(migrated_database)
    listener = Bell(conn)
    await conn.add_listener(CHANNEL, listener._on)
    try:
        yield listener
    finally:
        await conn.close()


@pytest.fixture
async def writer(migrated_database: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(migrated_database, server_settings={"timezone": "UTC"})
    try:
        yield conn
    finally:
        await conn.close()


async def test_notify_arrives_only_after_commit(
    bell: Bell, writer: asyncpg.Connection, store: PgStore
) -> None:
    [tid] = fresh_tids(1)
    tx = writer.transaction()
    await tx.start()
    result = await apply_batch(writer, [make_trade(tid, 0)], source="stream", channel=CHANNEL)
    assert result.changed == (tid,)
    await bell.fence(store.pool)
    assert await bell.next() == FENCE  # the uncommitted change rang nothing
    await tx.commit()
    doorbell = parse_doorbell(await bell.next())
    assert doorbell.tid == tid
    [change] = await read_changes(store.pool, doorbell.position - 1, 1)
    assert (change.position, change.tid) == (doorbell.position, tid)


async def test_no_notify_and_no_position_after_rollback(
    bell: Bell, writer: asyncpg.Connection, store: PgStore
) -> None:
    rolled_back, committed = fresh_tids(2)
    before = await store.last_position()
    tx = writer.transaction()
    await tx.start()
    await apply_batch(writer, [make_trade(rolled_back, 0)], source="stream", channel=CHANNEL)
    await tx.rollback()
    await store.apply_trades([make_trade(committed, 0)], source="stream")
    # The first doorbell after the rollback is the committed trade's, at the very next position:
    # the rolled-back one neither rang nor left a hole in the feed.
    doorbell = parse_doorbell(await bell.next())
    assert (doorbell.tid, doorbell.position) == (committed, before + 1)
    assert await store.pool.fetchval("SELECT count(*) FROM trades WHERE tid = $1", rolled_back) == 0


async def test_one_doorbell_per_change_in_position_order(bell: Bell, store: PgStore) -> None:
    tids = fresh_tids(5)
    unchanged_tid = tids[0]
    await store.apply_trades([make_trade(unchanged_tid, 0)], source="stream")
    first = parse_doorbell(await bell.next())
    result = await store.apply_trades([make_trade(t, 0) for t in reversed(tids)], source="backfill")
    assert result.unchanged == (unchanged_tid,)
    doorbells = [parse_doorbell(await bell.next()) for _ in range(4)]
    assert [d.position for d in doorbells] == [first.position + i for i in range(1, 5)]
    assert [d.tid for d in doorbells] == sorted(tids[1:])
    await bell.fence(store.pool)
    assert await bell.next() == FENCE


async def test_payload_of_the_largest_trade_stays_small_and_has_no_raw(bell: Bell, store: PgStore) -> None:
    [tid] = fresh_tids(1)
    huge = "爆" * 5000  # 15 kB of UTF-8 per field
    data = trade_json(tid, 0, orders=50, title=huge, shop=huge, status="S" + huge, note=huge)
    trade = Trade.model_validate(data)
    assert len(json.dumps(trade.raw, ensure_ascii=False).encode()) > 500_000
    result = await store.apply_trades([trade], source="stream" * 100)
    assert result.changed == (tid,)
    payload = await bell.next()
    assert len(payload.encode("utf-8")) < NOTIFY_PAYLOAD_LIMIT
    body = json.loads(payload)
    assert set(body) == {"position", "tid", "seller_nick", "status", "modified", "source"}
    assert body["tid"] == tid  # an exact JSON integer, even with 19 digits
    assert body["seller_nick"] == huge[:PAYLOAD_TEXT_LIMIT]
    assert datetime.fromisoformat(body["modified"]) == trade.modified
    assert body["modified"].endswith("+00:00")  # the store's connections speak UTC
    # The feed row itself keeps the full values.
    [change] = await read_changes(store.pool, body["position"] - 1, 1)
    assert change.seller_nick == huge
