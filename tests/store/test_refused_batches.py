"""A batch PostgreSQL refuses for one trade's data (a CHECK constraint or a trigger the ERP's DBA added on
`trades`, a value out of range) is bisected: everything else commits, the refused trade is recorded as
unresolved and its stretch stays unproven; once the cause is gone, storing it resolves it
(docs/design.md#bad-input-never-crashes, docs/design.md#unresolved-trades-block-proof). Real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import pytest

from common.intervals import Interval
from common.metrics import Registry
from store.coverage import ProvenBy
from store.fetch_apply import TradeFailures, apply_fetched, dead_letter_counter
from store.pg import PgStore
from store.pg_reconciler import pg_reconciler_store
from taobao.models import Trade
from tests.store.factory import fresh_tids, trade_json


@pytest.fixture
async def refusing(store: PgStore) -> AsyncIterator[tuple[PgStore, list[int], Callable[[], Awaitable[None]]]]:
    """A CHECK that refuses one tid and a trigger that raises for another, and what drops both."""
    checked, raised = fresh_tids(2)
    name = f"t_{uuid.uuid4().hex[:8]}"
    await store.pool.execute(f"ALTER TABLE trades ADD CONSTRAINT {name} CHECK (tid <> {checked}) NOT VALID")
    await store.pool.execute(
        f"""CREATE FUNCTION {name}_f() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.tid = {raised} THEN RAISE EXCEPTION 'the ERP refuses trade %', NEW.tid; END IF;
        RETURN NEW; END $$"""
    )
    await store.pool.execute(
        f"CREATE TRIGGER {name}_t BEFORE INSERT OR UPDATE ON trades FOR EACH ROW EXECUTE FUNCTION {name}_f()"
    )

    async def drop() -> None:
        await store.pool.execute(f"ALTER TABLE trades DROP CONSTRAINT IF EXISTS {name}")
        await store.pool.execute(f"DROP TRIGGER IF EXISTS {name}_t ON trades")
        await store.pool.execute(f"DROP FUNCTION IF EXISTS {name}_f()")

    yield store, [checked, raised], drop
    await drop()


async def test_a_refused_trade_is_bisected_out_owed_and_stored_once_the_constraint_is_gone(
    refusing: tuple[PgStore, list[int], Callable[[], Awaitable[None]]],
) -> None:
    store, [checked, raised], drop = refusing
    storage = pg_reconciler_store(store, replica="r1")
    shop = f"shop-{uuid.uuid4().hex[:8]}"
    others = fresh_tids(30)
    batch = [
        Trade.model_validate(trade_json(tid, n, shop=shop))
        for n, tid in enumerate([*others, checked, raised])
    ]
    first, last = batch[0].modified, batch[-1].modified
    assert first is not None
    assert last is not None
    window = Interval(first - timedelta(minutes=1), last + timedelta(minutes=1))
    registry = Registry()
    failures = TradeFailures(storage.trades, dead_letter_counter(registry))
    before = int(await store.pool.fetchval("SELECT last FROM feed_counter"))

    result = await apply_fetched(storage.trades, batch, source="backfill", failures=failures, belongs=window)

    assert sorted(result.changed) == sorted(others)
    assert sorted(result.rejected) == sorted((checked, raised))
    assert await storage.trades.existing_tids([*others, checked, raised]) == set(others)
    # Every commit of the bisect appended its own feed rows: dense and complete for what was stored.
    positions = [r["position"] for r in await store.pool.fetch(
        "SELECT position FROM trade_changes WHERE position > $1 ORDER BY position", before
    )]  # fmt: skip
    assert positions == list(range(before + 1, before + 1 + len(others)))
    rows = {row.tid: row for row in await storage.unresolved.rows(shop)}
    assert sorted(rows) == sorted((checked, raised))
    assert {row.kind for row in rows.values()} == {"refused_by_database"}
    assert "check" in rows[checked].reason.lower()
    assert "refuses trade" in rows[raised].reason
    assert dead_letter_counter(registry).value(reason="refused_by_database") == 2
    # The window is not proven while they are owed.
    await storage.coverage.prove(shop, window, ProvenBy.BACKFILL)
    assert [c.interval for c in await storage.coverage.coverage(shop)] == []

    # The DBA drops the constraint and the trigger: the next store resolves both.
    await drop()
    again = [t for t in batch if t.tid in (checked, raised)]
    result = await apply_fetched(storage.trades, again, source="redrive", failures=failures)
    assert sorted(result.changed) == sorted((checked, raised))
    assert await storage.unresolved.rows(shop) == []
    await storage.coverage.prove(shop, window, ProvenBy.BACKFILL)
    assert [c.interval for c in await storage.coverage.coverage(shop)] == [window]
