"""Invariant 3: a reader that follows `position > cursor` never skips a committed change."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import asyncpg

from store.feed import read_changes
from store.pg import PgStore
from store.types import ApplyResult, Change
from store.upsert import apply_batch
from taobao.models import Trade
from tests.store.factory import fresh_tids, make_trade

WAIT = 10.0


async def _until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.01)


async def test_a_plain_sequence_lets_a_reader_skip_a_committed_row(migrated_database: str) -> None:
    """Why the feed does not use a sequence: the number is taken at insert, not at commit."""
    a = await asyncpg.connect(migrated_database)
    b = await asyncpg.connect(migrated_database)
    try:
        await a.execute("CREATE TABLE sequence_feed (position bigserial PRIMARY KEY, note text)")
        slow = a.transaction()
        await slow.start()
        await a.execute("INSERT INTO sequence_feed (note) VALUES ('slow')")  # takes position 1
        await b.execute("INSERT INTO sequence_feed (note) VALUES ('fast')")  # takes 2, commits first
        seen = await b.fetch("SELECT position FROM sequence_feed WHERE position > 0 ORDER BY position")
        cursor = seen[-1]["position"]
        assert cursor == 2
        await slow.commit()
        later = await b.fetch("SELECT position FROM sequence_feed WHERE position > $1", cursor)
        assert later == []  # position 1 is committed, and this reader will never see it
    finally:
        await a.close()
        await b.close()


async def test_a_later_writer_takes_its_positions_only_after_the_earlier_commit(
    store: PgStore, migrated_database: str
) -> None:
    first, second = fresh_tids(2)
    start = await store.last_position()
    conn = await asyncpg.connect(migrated_database)
    try:
        slow = conn.transaction()
        await slow.start()
        await apply_batch(conn, [make_trade(first, 0)], source="stream", channel="trade_changed")
        fast = asyncio.create_task(store.apply_trades([make_trade(second, 0)], source="stream"))

        async def fast_is_waiting_for_the_counter() -> bool:
            waiting = await store.pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND query LIKE '%apply_trade_batch%'"
            )
            return bool(waiting)

        await _until(fast_is_waiting_for_the_counter, "the second writer waits for the counter row")
        assert not fast.done()
        assert await read_changes(store.pool, start, 10) == []
        await slow.commit()
        await asyncio.wait_for(fast, WAIT)
    finally:
        await conn.close()
    changes = await read_changes(store.pool, start, 10)
    assert [(c.position, c.tid) for c in changes] == [(start + 1, first), (start + 2, second)]


WRITERS = 8
OWN_TIDS = 250  # per writer
SHARED_TIDS = 16  # every writer also sends these now and then: row-lock waits and unchanged results
SHARED_EVERY = 5  # rounds; more often would serialise the writers on those rows and hide the counter
ROUNDS = 25
BATCHES_PER_ROUND = 2


async def test_a_reader_following_many_writers_sees_every_change_once_in_order(
    migrated_database: str,
) -> None:
    writers_store = await PgStore.connect(migrated_database, min_size=WRITERS, max_size=WRITERS)
    reader = await asyncpg.connect(migrated_database)
    start = await writers_store.last_position()
    shared = fresh_tids(SHARED_TIDS)
    written: set[tuple[int, datetime]] = set()
    writers_done = asyncio.Event()
    wake = asyncio.Event()

    async def writer(w: int) -> None:
        own = fresh_tids(OWN_TIDS)
        per_batch = OWN_TIDS // BATCHES_PER_ROUND
        for r in range(ROUNDS):
            for b in range(BATCHES_PER_ROUND):
                trades = [make_trade(t, r) for t in own[b * per_batch : (b + 1) * per_batch]]
                if r % SHARED_EVERY == 0:
                    trades += [make_trade(t, r * WRITERS + w, status=f"w{w}") for t in shared]
                result = await writers_store.apply_trades(trades, source=f"writer-{w}")
                _record(written, trades, result)

    def ring(*_: Any) -> None:
        wake.set()

    seen: list[Change] = []
    reads_while_writing = 0

    async def follow() -> None:
        nonlocal reads_while_writing
        cursor = start
        while True:
            wake.clear()
            done = writers_done.is_set()
            changes = await read_changes(reader, cursor, 5000)
            if changes:
                # Exactly the next positions, no gap, no repeat.
                assert [c.position for c in changes] == list(range(cursor + 1, cursor + 1 + len(changes)))
                seen.extend(changes)
                cursor = changes[-1].position
                reads_while_writing += not done
                continue
            if done:
                return
            await asyncio.wait_for(wake.wait(), WAIT)

    await reader.add_listener("trade_changed", ring)
    follower = asyncio.create_task(follow())
    try:
        await asyncio.gather(*(writer(w) for w in range(WRITERS)))
        writers_done.set()
        wake.set()
        await asyncio.wait_for(follower, WAIT)
    finally:
        follower.cancel()
        await reader.close()
        await writers_store.close()

    assert len(seen) >= WRITERS * OWN_TIDS * ROUNDS >= 50_000
    assert len(seen) == len(written)
    assert {(c.tid, c.modified) for c in seen} == written
    assert reads_while_writing >= 10  # the reader really followed the writers, not just read at the end


def _record(written: set[tuple[int, datetime]], trades: list[Trade], result: ApplyResult) -> None:
    newest: dict[int, datetime] = {}
    for trade in trades:
        assert trade.modified is not None
        newest[trade.tid] = max(trade.modified, newest.get(trade.tid, trade.modified))
    for tid in result.changed:
        written.add((tid, newest[tid]))
