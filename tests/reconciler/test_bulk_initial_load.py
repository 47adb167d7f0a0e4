"""The initial load's bulk path (store/pg_lines.py, migration 070) as `HistoryReader.load_file` drives
it over PostgreSQL: result lines copied and merged in PostgreSQL with the guarded upsert's rules, and
every line it cannot take handled as the per-trade path handles it."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from reconciler.backfill import BackfillConfig, WindowReader
from reconciler.history import HistoryReader, HistorySource
from reconciler.load_plan import InitialLoadConfig
from reconciler.progress import Progress
from store.feed import read_changes
from store.gap_reports import PassCounts
from store.pg import PgStore
from store.pg_reconciler import pg_reconciler_store
from store.ports import LineLoader
from store.upsert import apply_batch
from store.validation import canonical_json, content_hash
from tests.store.factory import fresh_tids, make_trade, trade_json

SHOP = "shop-a"
WAIT = 5.0


def line(trade: dict[str, Any]) -> str:
    """A result line as TOPATS writes it."""
    return json.dumps({"trade_fullinfo_get_response": {"trade": trade}}, ensure_ascii=False)


def result_zip(path: Path, lines: list[str]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("trades.txt", "\n".join(lines) + "\n")
    return path


class Loading:
    """One HistoryReader over PostgreSQL, with the bulk path as the reconciler wires it."""

    def __init__(self, pg: PgStore, *, batch: int = 2000) -> None:
        storage = pg_reconciler_store(pg, replica="test")
        assert isinstance(storage.trades, LineLoader)
        self.pg = pg
        self.trades = storage.trades
        now = lambda: datetime.now(UTC)  # noqa: E731
        client = cast(HistorySource, object())  # a loaded file needs no TOP call
        self.reader = HistoryReader(
            client,
            storage.loads,
            lambda: WindowReader(client, storage.trades, BackfillConfig(), now=now),
            InitialLoadConfig(batch=batch),
            lines=storage.trades,
        )
        self.counts = PassCounts(keep_trades=False)

    async def load(self, path: Path) -> int:
        return await self.reader.load_file(SHOP, path, self.counts, Progress("test", log_every=3600))

    async def stored(self, tid: int) -> asyncpg.Record:
        row = await self.pg.pool.fetchrow("SELECT * FROM trades WHERE tid = $1", tid)
        assert row is not None
        return row


@pytest.fixture
def loading(pg: PgStore) -> Loading:
    return Loading(pg)


async def test_plain_lines_are_stored_as_received_with_their_orders(loading: Loading, tmp_path: Path) -> None:
    [tid] = fresh_tids(1)
    trade = trade_json(tid, 5, orders=2) | {"extra_field": {"kept": [1, 2]}}
    assert await loading.load(result_zip(tmp_path / "r.zip", [line(trade)])) == 1
    row = await loading.stored(tid)
    assert json.loads(row["raw"]) == trade
    assert row["modified"] == make_trade(tid, 5).modified
    assert (row["seller_nick"], row["status"], str(row["payment"]), row["fetched_at"]) == (
        SHOP, "WAIT_BUYER_PAY", "10.00", None,
    )  # fmt: skip
    orders = await loading.pg.pool.fetch("SELECT oid, title, num FROM trade_orders WHERE tid = $1", tid)
    assert sorted((o["oid"], o["title"], o["num"]) for o in orders) == [
        (1000, "item 0", 1),
        (1001, "item 1", 1),
    ]
    assert (loading.counts.found, loading.counts.new, loading.counts.changed) == (1, 1, 0)


async def test_a_stored_newer_trade_is_not_overwritten(loading: Loading, tmp_path: Path) -> None:
    [tid] = fresh_tids(1)
    async with loading.pg.pool.acquire() as conn:
        await apply_batch(conn, [make_trade(tid, 50, status="TRADE_FINISHED")], source="stream", channel="c")
    await loading.load(result_zip(tmp_path / "r.zip", [line(trade_json(tid, 10, status="WAIT_BUYER_PAY"))]))
    row = await loading.stored(tid)
    assert (row["status"], row["source"]) == ("TRADE_FINISHED", "stream")
    assert (loading.counts.unchanged, loading.counts.changed) == (1, 0)
    changes = await loading.pg.pool.fetchval("SELECT count(*) FROM trade_changes WHERE tid = $1", tid)
    assert changes == 1  # the stream's only


async def test_an_older_stored_trade_is_updated_and_its_orders_replaced(
    loading: Loading, tmp_path: Path
) -> None:
    [tid] = fresh_tids(1)
    async with loading.pg.pool.acquire() as conn:
        await apply_batch(conn, [make_trade(tid, 1, orders=3)], source="stream", channel="c")
    await loading.load(result_zip(tmp_path / "r.zip", [line(trade_json(tid, 9, orders=1, title="new"))]))
    orders = await loading.pg.pool.fetch("SELECT oid, title FROM trade_orders WHERE tid = $1", tid)
    assert [(o["oid"], o["title"]) for o in orders] == [(1000, "new 0")]
    kinds = await loading.pg.pool.fetch(
        "SELECT kind FROM trade_changes WHERE tid = $1 ORDER BY position", tid
    )
    assert [k["kind"] for k in kinds] == ["created", "updated"]
    assert loading.counts.changed == 1


async def test_duplicates_within_one_chunk_keep_the_newest(loading: Loading, tmp_path: Path) -> None:
    [tid, other] = fresh_tids(2)
    lines = [
        line(trade_json(tid, 7, status="SECOND")),
        line(trade_json(other, 1)),
        line(trade_json(tid, 3, status="FIRST")),
        line(trade_json(tid, 7, status="SAME_SECOND_LATER_LINE")),
    ]
    assert await loading.load(result_zip(tmp_path / "r.zip", lines)) == 4
    assert (await loading.stored(tid))["status"] == "SAME_SECOND_LATER_LINE"
    changes = await loading.pg.pool.fetchval("SELECT count(*) FROM trade_changes WHERE tid = $1", tid)
    assert changes == 1
    assert loading.counts.new == 2


async def test_the_same_file_loaded_again_changes_nothing(loading: Loading, tmp_path: Path) -> None:
    tids = fresh_tids(3)
    path = result_zip(tmp_path / "r.zip", [line(trade_json(t, 4)) for t in tids])
    await loading.load(path)
    before = await loading.pg.pool.fetchval("SELECT count(*) FROM trade_changes")
    await loading.load(path)
    assert await loading.pg.pool.fetchval("SELECT count(*) FROM trade_changes") == before
    assert loading.counts.unchanged == 3


async def test_a_bad_line_is_a_dead_letter_and_the_rest_of_its_chunk_is_stored(
    loading: Loading, tmp_path: Path
) -> None:
    tids = fresh_tids(3)
    lines = [
        line(trade_json(tids[0], 1)),
        '{"trade_fullinfo_get_response": {"trade": {"tid": 1',
        line(trade_json(tids[1], 1)),
    ]
    odd = trade_json(tids[2], 1) | {"payment": "N/A"}  # valid JSON, not a valid trade
    lines.append(line(odd))
    assert await loading.load(result_zip(tmp_path / "r.zip", lines)) == 2
    stored = await loading.pg.pool.fetch("SELECT tid FROM trades WHERE tid = ANY($1)", tids)
    assert {r["tid"] for r in stored} == set(tids[:2])
    letters = await loading.pg.pool.fetch("SELECT reason, payload FROM dead_letters ORDER BY id")
    reasons = [r["reason"] for r in letters]
    assert any("trades.txt:2: not JSON" in r for r in reasons)
    assert any("trades.txt:4:" in r and "validation error" in r for r in reasons)
    assert loading.counts.dead_letters == 2


async def test_an_odd_line_in_a_chunk_of_plain_ones_goes_the_per_trade_way(
    loading: Loading, tmp_path: Path
) -> None:
    """A line PostgreSQL reads but whose fields have another shape (a number as a string, money as a
    number) is validated in Python; its neighbours stay on the bulk path."""
    tids = fresh_tids(3)
    odd = trade_json(tids[1], 2) | {"post_fee": 5, "payment": " 10.00"}
    lines = [line(trade_json(tids[0], 2)), line(odd), line(trade_json(tids[2], 2))]
    assert await loading.load(result_zip(tmp_path / "r.zip", lines)) == 3
    row = await loading.stored(tids[1])
    assert (str(row["post_fee"]), str(row["payment"])) == ("5.00", "10.00")
    # The per-trade path hashed its canonical JSON; the bulk path hashes the line's trade text.
    assert row["content_hash"] == content_hash(canonical_json(odd))
    plain = (await loading.stored(tids[0]))["content_hash"]
    assert plain == hashlib.sha256(lines[0].encode()).digest()


async def test_nul_and_lone_surrogates_are_replaced_and_the_original_kept(
    loading: Loading, tmp_path: Path
) -> None:
    tids = fresh_tids(3)
    nul = trade_json(tids[0], 1) | {"buyer_nick": "a\u0000b"}
    lone = trade_json(tids[1], 1) | {"buyer_message": "x\ud800y"}
    lines = [line(nul), json.dumps({"trade": lone}), line(trade_json(tids[2], 1))]
    assert await loading.load(result_zip(tmp_path / "r.zip", lines)) == 3
    nul_row, lone_row = await loading.stored(tids[0]), await loading.stored(tids[1])
    assert nul_row["buyer_nick"] == "a\ufffdb"
    assert json.loads(lone_row["raw"])["buyer_message"] == "x\ufffdy"
    letters = await loading.pg.pool.fetch(
        "SELECT tid, payload FROM dead_letters WHERE tid = ANY($1) ORDER BY tid", tids
    )
    assert [r["tid"] for r in letters] == sorted(tids[:2])
    originals = {r["tid"]: r["payload"] for r in letters}
    assert "\\u0000" in originals[tids[0]].decode("utf-8")
    assert "\\ud800" in originals[tids[1]].decode("utf-8")
    assert (await loading.stored(tids[2]))["status"] == "WAIT_BUYER_PAY"


async def test_loaded_trades_get_feed_rows_and_a_notify_each(
    loading: Loading, tmp_path: Path, dsn: str
) -> None:
    tids = sorted(fresh_tids(4))
    listener = await asyncpg.connect(dsn)
    heard: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener(loading.pg.notify_channel, lambda *args: heard.put_nowait(str(args[-1])))
    try:
        start = await loading.pg.pool.fetchval("SELECT last FROM feed_counter")
        await loading.load(result_zip(tmp_path / "r.zip", [line(trade_json(t, 3)) for t in tids]))
        changes = await read_changes(loading.pg.pool, after=start, limit=100)
        assert [c.tid for c in changes] == tids
        assert [c.position for c in changes] == list(range(start + 1, start + 5))
        assert {(c.kind, c.source, c.seller_nick) for c in changes} == {("created", "initial_load", SHOP)}
        bells = [json.loads(await asyncio.wait_for(heard.get(), WAIT)) for _ in tids]
        assert [(b["position"], b["tid"]) for b in bells] == [(c.position, c.tid) for c in changes]
    finally:
        await listener.close()


async def test_chunks_split_a_file_and_each_line_is_counted_once(pg: PgStore, tmp_path: Path) -> None:
    loading = Loading(pg, batch=3)
    tids = fresh_tids(8)
    lines = [line(trade_json(t, 1)) for t in tids]
    lines.insert(4, "")  # a blank line is skipped
    assert await loading.load(result_zip(tmp_path / "r.zip", lines)) == 8
    assert await pg.pool.fetchval("SELECT count(*) FROM trades WHERE tid = ANY($1)", tids) == 8
    assert loading.counts.found == 8


async def test_a_loaded_trade_read_again_at_its_modified_changes_only_when_its_content_does(
    loading: Loading, tmp_path: Path
) -> None:
    """The bulk path hashes the line, the per-trade path the canonical JSON: equal content at an equal
    `modified` still leaves the stored trade as it is (migration 071), different content replaces it."""
    [same, edited] = fresh_tids(2)
    await loading.load(result_zip(tmp_path / "r.zip", [line(trade_json(t, 6)) for t in (same, edited)]))
    read = datetime.now(UTC)
    again = [
        make_trade(same, 6).model_copy(update={"fetched_at": read}),
        make_trade(edited, 6, note="memo").model_copy(update={"fetched_at": read}),
    ]
    async with loading.pg.pool.acquire() as conn:
        result = await apply_batch(conn, again, source="stream", channel="c")
    assert (result.changed, result.unchanged) == ((edited,), (same,))
    assert (await loading.stored(same))["source"] == "initial_load"
    assert json.loads((await loading.stored(edited))["raw"])["seller_memo"] == "memo"


async def test_an_id_written_as_a_float_is_refused_as_the_per_trade_path_refuses_it(
    loading: Loading, tmp_path: Path
) -> None:
    """jsonb keeps a number's value only: `2.9e18` would pass as an integer, a tid with its digits lost."""
    [tid] = fresh_tids(1)
    as_float = line(trade_json(tid, 1)).replace(f'"tid": {tid}', '"tid": 2.9e18')
    order_float = line(trade_json(tid, 1)).replace('"oid": 1000', '"oid": 1e3')
    assert '"tid": 2.9e18' in as_float
    assert '"oid": 1e3' in order_float
    assert await loading.load(result_zip(tmp_path / "r.zip", [as_float, order_float])) == 0
    assert await loading.pg.pool.fetchval("SELECT count(*) FROM trades") == 0
    assert loading.counts.dead_letters == 2


async def test_ids_beyond_int64_or_not_digits_go_the_per_trade_way(loading: Loading, tmp_path: Path) -> None:
    [tid] = fresh_tids(1)
    lines = [
        line(trade_json(tid, 1) | {"tid": "9223372036854775808"}),
        line(trade_json(tid, 1) | {"tid": "abc"}),
        line(trade_json(tid, 1) | {"modified": "2024-02-30 00:00:00"}),
        line(trade_json(tid, 2)),
    ]
    assert await loading.load(result_zip(tmp_path / "r.zip", lines)) == 1
    assert (await loading.stored(tid))["modified"] == make_trade(tid, 2).modified
    assert loading.counts.dead_letters == 3


async def test_a_role_that_may_not_create_temporary_tables_loads_one_trade_at_a_time(
    dsn: str, tmp_path: Path
) -> None:
    role = f"no_temp_{uuid.uuid4().hex[:12]}"
    database = urlsplit(dsn).path.lstrip("/")
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN")
        await admin.execute(f'REVOKE TEMPORARY ON DATABASE "{database}" FROM PUBLIC')
        await admin.execute(f"GRANT ALL ON SCHEMA order_sync TO {role}")
        await admin.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA order_sync TO {role}")
        await admin.execute(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA order_sync TO {role}")
        parts = urlsplit(dsn)
        role_dsn = urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port}"))
        pg = await PgStore.connect(role_dsn, max_size=4)
        try:
            tids = fresh_tids(3)
            loading = Loading(pg)
            path = result_zip(tmp_path / "r.zip", [line(trade_json(t, 1)) for t in tids])
            assert await loading.load(path) == 3
            rows = await admin.fetch("SELECT tid, content_hash FROM trades ORDER BY tid")
            assert [r["tid"] for r in rows] == sorted(tids)
            # Each stored through the per-trade path, which hashes the canonical JSON.
            hashes = {content_hash(canonical_json(trade_json(t, 1))) for t in tids}
            assert {r["content_hash"] for r in rows} == hashes
        finally:
            await pg.close()
    finally:
        await admin.execute(f"DROP OWNED BY {role}")
        await admin.execute(f"DROP ROLE {role}")
        await admin.close()
