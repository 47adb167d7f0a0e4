"""The guarded upsert (docs/design.md#modified-never-goes-backwards) and the feed rows it writes, on a real
PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from listener.ports import TradeStore
from store.errors import StoreError
from store.pg import PgStore
from taobao.models import Trade
from tests.store.factory import fresh_tids, make_trade, trade_json


def _is_a_trade_store(store: PgStore) -> TradeStore:
    return store  # mypy checks that PgStore satisfies the listener's port


async def _feed(store: PgStore, tid: int) -> list[dict[str, Any]]:
    rows = await store.pool.fetch(
        "SELECT position, status, modified, source, kind FROM trade_changes WHERE tid = $1 ORDER BY position",
        tid,
    )
    return [dict(row) for row in rows]


async def _row(store: PgStore, tid: int) -> dict[str, Any]:
    row = await store.pool.fetchrow("SELECT * FROM trades WHERE tid = $1", tid)
    assert row is not None
    return dict(row)


async def _orders(store: PgStore, tid: int) -> list[tuple[int, str | None]]:
    rows = await store.pool.fetch("SELECT oid, title FROM trade_orders WHERE tid = $1 ORDER BY oid", tid)
    return [(row["oid"], row["title"]) for row in rows]


async def test_a_new_trade_is_stored_with_its_orders_and_one_feed_row(store: PgStore) -> None:
    [tid] = fresh_tids(1)
    result = await store.apply_trades([make_trade(tid, 0, orders=2)], source="stream")
    assert (result.changed, result.unchanged, result.rejected) == ((tid,), (), ())
    row = await _row(store, tid)
    assert row["seller_nick"] == "shop-a"
    assert row["payment"] == Decimal("10.00")
    assert row["source"] == "stream"
    assert json.loads(row["raw"])["tid"] == tid  # 19 digits survive: jsonb keeps the exact integer
    assert await _orders(store, tid) == [(1000, "item 0"), (1001, "item 1")]
    assert [(f["kind"], f["source"]) for f in await _feed(store, tid)] == [("created", "stream")]


async def test_an_older_result_never_overwrites_a_newer_one(store: PgStore) -> None:
    [tid] = fresh_tids(1)
    await store.apply_trades([make_trade(tid, 10, status="WAIT_SELLER_SEND_GOODS")], source="stream")
    result = await store.apply_trades([make_trade(tid, 5, status="WAIT_BUYER_PAY")], source="backfill")
    assert (result.changed, result.unchanged) == ((), (tid,))
    assert (await _row(store, tid))["status"] == "WAIT_SELLER_SEND_GOODS"
    assert len(await _feed(store, tid)) == 1


async def test_a_newer_result_replaces_trade_and_orders_together(store: PgStore) -> None:
    [tid] = fresh_tids(1)
    await store.apply_trades([make_trade(tid, 0, orders=3, title="old")], source="stream")
    result = await store.apply_trades([make_trade(tid, 1, orders=1, title="new")], source="sweep")
    assert result.changed == (tid,)
    assert await _orders(store, tid) == [(1000, "new 0")]
    assert [(f["kind"], f["source"]) for f in await _feed(store, tid)] == [
        ("created", "stream"),
        ("updated", "sweep"),
    ]


async def test_equal_modified_same_content_writes_nothing(store: PgStore) -> None:
    [tid] = fresh_tids(1)
    await store.apply_trades([make_trade(tid, 0)], source="stream")
    before = await _row(store, tid)
    result = await store.apply_trades([make_trade(tid, 0)], source="backfill")
    assert (result.changed, result.unchanged) == ((), (tid,))
    assert await _row(store, tid) == before
    assert len(await _feed(store, tid)) == 1


async def test_equal_modified_different_content_is_a_change(store: PgStore) -> None:
    # TOP's `modified` has one-second resolution: two edits within a second share it.
    [tid] = fresh_tids(1)
    await store.apply_trades([make_trade(tid, 0)], source="stream")
    result = await store.apply_trades([make_trade(tid, 0, note="seller memo")], source="stream")
    assert result.changed == (tid,)
    assert json.loads((await _row(store, tid))["raw"])["seller_memo"] == "seller memo"
    assert len(await _feed(store, tid)) == 2


async def test_at_an_equal_modified_an_earlier_read_committed_later_does_not_win(store: PgStore) -> None:
    # Two readers (replicas, or the stream and a backfill) fetch one trade around an edit made within
    # the same second: the later read commits first, the earlier one last. The later read must stay.
    [tid] = fresh_tids(1)
    read_before_edit = make_trade(tid, 0).model_copy(
        update={"fetched_at": datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)}
    )
    read_after_edit = make_trade(tid, 0, note="seller memo").model_copy(
        update={"fetched_at": datetime(2026, 1, 1, 0, 0, 2, tzinfo=UTC)}
    )
    await store.apply_trades([read_after_edit], source="stream")
    result = await store.apply_trades([read_before_edit], source="backfill")
    assert result.changed == ()
    assert json.loads((await _row(store, tid))["raw"])["seller_memo"] == "seller memo"
    # In one batch the later read wins too, whatever the order.
    [other] = fresh_tids(1)
    early, late = (
        make_trade(other, 0, note=n).model_copy(
            update={"fetched_at": datetime(2026, 1, 1, 0, 0, s, tzinfo=UTC)}
        )
        for n, s in (("early", 1), ("late", 2))
    )
    await store.apply_trades([late, early], source="stream")
    assert json.loads((await _row(store, other))["raw"])["seller_memo"] == "late"


async def test_duplicates_in_one_batch_keep_the_newest(store: PgStore) -> None:
    [tid] = fresh_tids(1)
    batch = [make_trade(tid, 3, status="B"), make_trade(tid, 7, status="C"), make_trade(tid, 1, status="A")]
    result = await store.apply_trades(batch, source="backfill")
    assert result.changed == (tid,)
    assert (await _row(store, tid))["status"] == "C"
    assert [f["status"] for f in await _feed(store, tid)] == ["C"]


async def test_a_trade_without_modified_is_refused_and_the_rest_applied(store: PgStore) -> None:
    good, bad = fresh_tids(2)
    broken = Trade.model_validate({"tid": bad, "seller_nick": "shop-b", "status": "TRADE_FINISHED"})
    result = await store.apply_trades([broken, make_trade(good, 0)], source="stream")
    assert (result.changed, result.rejected) == ((good,), (bad,))
    [refused] = result.refused
    assert (refused.shop, refused.kind, refused.modified) == ("shop-b", "invalid_trade", None)
    assert "modified" in refused.reason
    assert json.loads(refused.payload) == {"tid": bad, "seller_nick": "shop-b", "status": "TRADE_FINISHED"}
    # The store writes nothing about it: its caller records it (store.fetch_apply).
    assert await store.pool.fetchval("SELECT count(*) FROM dead_letters WHERE tid = $1", bad) == 0
    assert await store.pool.fetchval("SELECT count(*) FROM trades WHERE tid = $1", bad) == 0


async def test_text_postgres_cannot_hold_is_stored_as_u_fffd_and_the_original_kept(store: PgStore) -> None:
    good, nul, surrogate = fresh_tids(3)
    batch = [
        Trade.model_validate({**trade_json(nul, 0), "buyer_message": "请尽快发货\x00谢谢\ud800"}),
        make_trade(good, 0),
        Trade.model_validate({**trade_json(surrogate, 0, shop="shop\ud800")}),
    ]
    result = await store.apply_trades(batch, source="stream")
    assert result.changed == tuple(sorted((good, nul, surrogate)))
    assert (result.refused, sorted(result.replaced)) == ((), sorted((nul, surrogate)))
    stored = await _row(store, nul)
    assert json.loads(stored["raw"])["buyer_message"] == "请尽快发货\ufffd谢谢\ufffd"
    assert (await _row(store, surrogate))["seller_nick"] == "shop\ufffd"
    letters = await store.pool.fetch(
        "SELECT tid, payload FROM dead_letters WHERE tid = ANY($1::bigint[])", [nul, surrogate]
    )
    originals = {row["tid"]: json.loads(row["payload"]) for row in letters}
    assert originals[nul]["buyer_message"] == "请尽快发货\x00谢谢\ud800"
    assert originals[surrogate]["seller_nick"] == "shop\ud800"


async def test_out_of_range_optional_fields_are_stored_empty_and_reported_flawed(store: PgStore) -> None:
    [tid] = fresh_tids(1)
    odd = {**trade_json(tid, 0), "end_time": "0001-01-01 00:00:00", "post_fee": "1E-20000"}
    result = await store.apply_trades([Trade.model_validate(odd)], source="stream")
    assert result.changed == (tid,)
    [flawed] = result.flawed
    assert (flawed.tid, flawed.kind) == (tid, "out_of_range_field")
    row = await _row(store, tid)
    assert (row["end_time"], row["post_fee"]) == (None, None)
    assert json.loads(row["raw"])["end_time"] == "0001-01-01 00:00:00"


async def test_dead_letter_keeps_the_bytes(store: PgStore) -> None:
    payload = b"\x00\xff not json \x1f"
    await store.dead_letter(source="tmc", reason="bad frame", payload=payload, shop="shop-a")
    await store.dead_letter(source="tmc", reason="bad\x00reason", payload="文本", tid=42)
    rows = await store.pool.fetch(
        "SELECT reason, payload, tid, shop FROM dead_letters WHERE source = 'tmc' ORDER BY id"
    )
    assert [tuple(row) for row in rows] == [
        ("bad frame", payload, None, "shop-a"),
        ("bad\\x00reason", "文本".encode(), 42, None),
    ]


async def test_reapplying_after_an_unknown_commit_outcome_is_harmless(store: PgStore) -> None:
    # A caller whose connection dropped during COMMIT cannot know if it landed; applying again is safe.
    [tid] = fresh_tids(1)
    first = await store.apply_trades([make_trade(tid, 0)], source="stream")
    again = await store.apply_trades([make_trade(tid, 0)], source="stream")
    assert (first.changed, again.unchanged) == ((tid,), (tid,))
    assert len(await _feed(store, tid)) == 1


async def test_an_empty_batch_touches_nothing(store: PgStore) -> None:
    before = await store.last_position()
    result = await store.apply_trades([], source="stream")
    assert (result.changed, result.unchanged, result.rejected) == ((), (), ())
    assert await store.last_position() == before


async def test_driver_errors_become_store_errors(migrated_database: str) -> None:
    other = await PgStore.connect(migrated_database, max_size=1)
    await other.close()
    with pytest.raises(StoreError) as info:
        await other.apply_trades([make_trade(fresh_tids(1)[0], 0)], source="stream")
    assert info.value.__cause__ is not None


# -- the property: any order, any batching, the newest version wins --------------------------------

# Each trade has versions 0..k-1 with strictly increasing `modified`; the input holds every version at
# least once (re-fetches repeat some), shuffled, cut into batches at random points.
_versions = st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=4)


def _version_trade(tid: int, version: int) -> Trade:
    return make_trade(tid, version * 2, status=f"S{version}", orders=version % 3 + 1, title=f"v{version}")


def _expected_feed(tids: Sequence[int], batches: Sequence[Sequence[tuple[int, int]]]) -> dict[int, list[int]]:
    """The versions that must appear in the feed: those newer than everything applied before."""
    current: dict[int, int] = {}
    feed: dict[int, list[int]] = {tid: [] for tid in tids}
    for batch in batches:
        newest: dict[int, int] = {}
        for tid, version in batch:
            newest[tid] = max(version, newest.get(tid, -1))
        for tid, version in newest.items():
            if version > current.get(tid, -1):
                current[tid] = version
                feed[tid].append(version)
    return feed


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(counts=_versions, repeats=st.integers(0, 4), seed=st.randoms(use_true_random=False), data=st.data())
async def test_any_order_and_batching_ends_at_the_newest_version(
    store: PgStore, counts: list[int], repeats: int, seed: random.Random, data: st.DataObject
) -> None:
    tids = fresh_tids(len(counts))
    items = [(tid, v) for tid, count in zip(tids, counts, strict=True) for v in range(count)]
    items += [seed.choice(items) for _ in range(repeats)]
    seed.shuffle(items)
    cuts = sorted(set(data.draw(st.lists(st.integers(1, max(1, len(items) - 1)), max_size=len(items)))))
    batches = [items[a:b] for a, b in zip([0, *cuts], [*cuts, len(items)], strict=True) if items[a:b]]

    for batch in batches:
        await store.apply_trades([_version_trade(tid, v) for tid, v in batch], source="stream")

    expected = _expected_feed(tids, batches)
    for tid, count in zip(tids, counts, strict=True):
        newest = _version_trade(tid, count - 1)
        row = await _row(store, tid)
        assert (row["status"], row["modified"]) == (newest.status, newest.modified)
        assert json.loads(row["raw"]) == newest.raw
        assert [title for _, title in await _orders(store, tid)] == [o.title for o in newest.orders]
        assert [f["status"] for f in await _feed(store, tid)] == [f"S{v}" for v in expected[tid]]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(counts=_versions, seed=st.randoms(use_true_random=False))
async def test_concurrent_batches_also_end_at_the_newest_version(
    store: PgStore, counts: list[int], seed: random.Random
) -> None:
    tids = fresh_tids(len(counts))
    items = [(tid, v) for tid, count in zip(tids, counts, strict=True) for v in range(count)]
    seed.shuffle(items)
    batches = [items[i : i + 2] for i in range(0, len(items), 2)]
    await asyncio.gather(
        *(store.apply_trades([_version_trade(t, v) for t, v in b], source="stream") for b in batches)
    )
    for tid, count in zip(tids, counts, strict=True):
        assert (await _row(store, tid))["status"] == f"S{count - 1}"
        feed = await _feed(store, tid)
        # The feed for one trade only ever moves forward, and ends at the newest version.
        assert [f["modified"] for f in feed] == sorted({f["modified"] for f in feed})
        assert feed[-1]["status"] == f"S{count - 1}"
