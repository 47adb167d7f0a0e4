"""The reconciler's storage interfaces (store.ports), the same assertions against the in-memory fake
(store.memory) and PostgreSQL (store.pg_reconciler): the fake cannot drift from the real thing. The
memory variant needs no database."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from common.intervals import Interval
from store.coverage import Coverage, ProvenBy
from store.errors import NotLeader, StoreError
from store.gap_reports import Cause, Outcome, PassCounts, RecoveredTrade
from store.memory import MemoryDatabase, memory_reconciler_store
from store.pg import PgStore
from store.pg_reconciler import pg_reconciler_store
from store.ports import ReconcilerStore
from store.unresolved import TradeDebt
from taobao.models import Trade
from tests.store.factory import BASE_TIME, fresh_tids, trade_json

T0 = datetime(2026, 11, 11, tzinfo=UTC)
Open = Callable[[str], ReconcilerStore]  # replica → the storage as that replica sees it


@pytest.fixture(params=["memory", "postgres"])
def open_store(request: pytest.FixtureRequest) -> Open:
    """One database, seen by any number of replicas."""
    if request.param == "memory":
        db = MemoryDatabase()
        return lambda replica: memory_reconciler_store(db, replica=replica)
    pg: PgStore = request.getfixturevalue("store")
    return lambda replica: pg_reconciler_store(pg, replica=replica)


def new_shop() -> str:
    """Tests share a PostgreSQL database per module: each works on shops of its own."""
    return f"shop-{uuid.uuid4().hex[:8]}"


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def span(start: float, end: float) -> Interval:
    return Interval(at(start), at(end))


def trade(tid: int, second: int, *, fetched: datetime | None = None, **changes: Any) -> Trade:
    shaped = Trade.model_validate(trade_json(tid, second, **changes))
    return shaped if fetched is None else shaped.model_copy(update={"fetched_at": fetched})


# ---- trades --------------------------------------------------------------------------------------


async def test_the_guarded_upsert_never_lets_modified_go_backwards(open_store: Open) -> None:
    trades = open_store("r1").trades
    a, b, c = fresh_tids(3)
    first = await trades.apply_trades([trade(a, 10), trade(b, 10)], source="backfill")
    assert (first.changed, first.unchanged) == (tuple(sorted((a, b))), ())
    again = await trades.apply_trades([trade(a, 5, status="TRADE_CLOSED"), trade(b, 10)], source="stream")
    assert again.changed == ()  # older state, and the same state: nothing changes
    assert sorted(again.unchanged) == sorted((a, b))
    newer = await trades.apply_trades([trade(a, 20, status="TRADE_FINISHED"), trade(c, 1)], source="stream")
    assert newer.changed == tuple(sorted((a, c)))
    assert await trades.existing_tids([a, b, c, fresh_tids(1)[0]]) == {a, b, c}


async def test_at_an_equal_modified_only_a_later_read_with_other_content_wins(open_store: Open) -> None:
    trades = open_store("r1").trades
    (tid,) = fresh_tids(1)
    read = datetime(2026, 1, 1, tzinfo=UTC)
    await trades.apply_trades([trade(tid, 10, fetched=read)], source="stream")
    earlier = await trades.apply_trades(
        [trade(tid, 10, note="older read", fetched=read - timedelta(seconds=1))], source="backfill"
    )
    assert earlier.changed == ()
    later = await trades.apply_trades(
        [trade(tid, 10, note="newer read", fetched=read + timedelta(seconds=1))], source="backfill"
    )
    assert later.changed == (tid,)
    unread = await trades.apply_trades([trade(tid, 10, note="no read time")], source="backfill")
    assert unread.changed == ()  # a state without a read time never displaces one with it


async def test_a_trade_that_cannot_be_stored_is_rejected_and_the_rest_applied(open_store: Open) -> None:
    trades = open_store("r1").trades
    good, bad = fresh_tids(2)
    no_modified = Trade.model_validate({**trade_json(bad, 1), "modified": None})
    result = await trades.apply_trades([trade(good, 1), no_modified], source="backfill")
    assert result.changed == (good,)
    assert result.rejected == (bad,)
    assert await trades.existing_tids([good, bad]) == {good}


async def test_stored_in_window_filters_orders_and_limits(open_store: Open) -> None:
    trades = open_store("r1").trades
    shop, other = new_shop(), new_shop()
    tids = fresh_tids(5)
    await trades.apply_trades(
        [
            trade(tids[0], 10, shop=shop),
            trade(tids[1], 20, shop=shop),
            trade(tids[2], 30, shop=shop),
            trade(tids[3], 20, shop=other),
            trade(tids[4], 90, shop=shop),
        ],
        source="backfill",
    )
    lo, hi = BASE_TIME + timedelta(seconds=10), BASE_TIME + timedelta(seconds=30)
    found = await trades.stored_in_window(shop, lo, hi, created_from=BASE_TIME, types=None, limit=10)
    assert [tid for tid, _ in found] == [tids[2], tids[1], tids[0]]  # newest first, both ends inclusive
    assert found[0][1] == BASE_TIME + timedelta(seconds=30)
    limited = await trades.stored_in_window(shop, lo, hi, created_from=BASE_TIME, types=None, limit=1)
    assert [tid for tid, _ in limited] == [tids[2]]
    later = BASE_TIME + timedelta(days=1)
    assert await trades.stored_in_window(shop, lo, hi, created_from=later, types=None, limit=10) == []
    assert await trades.stored_in_window(shop, lo, hi, created_from=BASE_TIME, types=["step"], limit=10) == []


# ---- the coverage ledger ------------------------------------------------------------------------


async def test_the_ledger_merges_touching_stretches_of_one_kind_only(open_store: Open) -> None:
    ledger = open_store("r1").coverage
    shop = new_shop()
    await ledger.prove(shop, span(0, 10), ProvenBy.STREAM)
    await ledger.prove(shop, span(10, 20), ProvenBy.STREAM)  # touches: merged
    await ledger.prove(shop, span(30, 40), ProvenBy.STREAM)
    await ledger.prove(shop, span(5, 35), ProvenBy.BACKFILL)  # another kind: kept apart
    assert await ledger.coverage(shop) == [
        Coverage(span(0, 20), ProvenBy.STREAM),
        Coverage(span(5, 35), ProvenBy.BACKFILL),
        Coverage(span(30, 40), ProvenBy.STREAM),
    ]
    await ledger.prove(shop, span(15, 32), ProvenBy.STREAM)  # bridges two stream stretches
    assert await ledger.coverage(shop) == [
        Coverage(span(0, 40), ProvenBy.STREAM),
        Coverage(span(5, 35), ProvenBy.BACKFILL),
    ]
    assert await ledger.coverage(shop, at(36), at(50)) == [Coverage(span(0, 40), ProvenBy.STREAM)]
    assert await ledger.coverage(shop, at(40), at(50)) == []  # half-open: ends at 40
    assert await ledger.covered_end(shop) == at(40)
    assert await ledger.covered_end(shop, ProvenBy.BACKFILL) == at(35)
    assert await ledger.covered_end(shop, ProvenBy.SWEEP) is None
    assert await ledger.covered_end(new_shop()) is None


async def test_a_withdrawn_stretch_leaves_the_proofs_of_other_kinds_and_shops(open_store: Open) -> None:
    ledger = open_store("r1").coverage
    shop, other = new_shop(), new_shop()
    await ledger.prove(shop, span(0, 30), ProvenBy.BACKFILL)
    await ledger.prove(shop, span(20, 40), ProvenBy.SWEEP)
    await ledger.prove(shop, span(0, 40), ProvenBy.STREAM)
    await ledger.prove(other, span(0, 40), ProvenBy.BACKFILL)
    assert await ledger.withdraw(shop, span(10, 25), [ProvenBy.BACKFILL, ProvenBy.SWEEP])
    assert set(await ledger.coverage(shop)) == {
        Coverage(span(0, 10), ProvenBy.BACKFILL),
        Coverage(span(0, 40), ProvenBy.STREAM),
        Coverage(span(25, 30), ProvenBy.BACKFILL),
        Coverage(span(25, 40), ProvenBy.SWEEP),
    }
    assert await ledger.coverage(other) == [Coverage(span(0, 40), ProvenBy.BACKFILL)]
    assert not await ledger.withdraw(shop, span(10, 25), [ProvenBy.BACKFILL, ProvenBy.SWEEP])


async def test_a_shops_ledger_begins_once(open_store: Open) -> None:
    ledger = open_store("r1").coverage
    shop = new_shop()
    assert await ledger.sync_from(shop) is None
    assert await ledger.register_shop(shop, at(5)) == at(5)
    assert await ledger.register_shop(shop, at(1)) == at(5)  # the first start stays
    assert await ledger.sync_from(shop) == at(5)


async def test_a_fence_that_refuses_leaves_the_ledger_as_it_was(open_store: Open) -> None:
    ledger = open_store("r1").coverage
    shop = new_shop()
    fenced: list[str] = []

    async def allow(conn: Any, fenced_shop: str) -> None:
        fenced.append(fenced_shop)

    async def refuse(conn: Any, fenced_shop: str) -> None:
        raise NotLeader(fenced_shop)

    await ledger.prove(shop, span(0, 10), ProvenBy.BACKFILL, fence=allow)
    with pytest.raises(NotLeader):
        await ledger.prove(shop, span(10, 20), ProvenBy.BACKFILL, fence=refuse)
    assert fenced == [shop]
    assert await ledger.coverage(shop) == [Coverage(span(0, 10), ProvenBy.BACKFILL)]


# ---- gap reports --------------------------------------------------------------------------------


def found(*tids: int, kind: str = "new", modified: datetime | None = None) -> list[RecoveredTrade]:
    return [RecoveredTrade(tid, modified or at(1), kind, False) for tid in tids]


async def test_passes_add_up_and_a_trade_is_counted_once_per_report(open_store: Open) -> None:
    reports = open_store("r1").reports
    shop = new_shop()
    report = await reports.create(shop, Cause.DISCONNECT, span(0, 10), detected_at=at(10))
    assert (report.outcome, report.replica, report.detected_by, report.replicas) == (None, "r1", "r1", ())
    assert report.progress_until is None
    a, b, c = fresh_tids(3)
    first = PassCounts(list_calls=2, fullinfo_calls=3, found=3, new=2, changed=1, push_loss=1, windows_read=1)
    first.recovered = [*found(a, b), *found(c, kind="changed")]
    first.note_lag(4.0)
    await reports.add_pass(
        report.id, first, started_at=at(11), progress_until=at(4), fresh_until=at(9), overlap_seconds=60
    )
    second = PassCounts(list_calls=1, fullinfo_calls=2, found=2, new=1, changed=1)
    second.recovered = [*found(b, modified=at(3)), *found(c, kind="changed", modified=at(5))]
    await reports.add_pass(
        report.id, second, started_at=at(12), progress_until=at(2), fresh_until=None, overlap_seconds=None
    )
    done = await reports.get(report.id)
    assert (done.trades_new, done.trades_changed) == (2, 1)  # b and c came again: counted once
    assert (done.list_calls, done.fullinfo_calls, done.trades_found, done.push_loss) == (3, 5, 5, 1)
    assert done.started_at == at(11)  # the first pass's start
    assert done.progress_until == at(4)  # never moves back
    assert done.fresh_until == at(9)
    assert done.overlap_seconds == 60  # kept when a pass does not say
    assert done.list_lag_seconds == 4.0
    assert done.replicas == ("r1",)
    assert await reports.trades(report.id) == sorted(
        [
            RecoveredTrade(a, at(1), "new", False),
            RecoveredTrade(b, at(3), "new", False),  # the newest time, the first kind
            RecoveredTrade(c, at(5), "changed", False),
        ],
        key=lambda t: t.tid,
    )


async def test_a_trade_brought_in_twice_in_one_pass_is_listed_once(open_store: Open) -> None:
    reports = open_store("r1").reports
    report = await reports.create(new_shop(), Cause.SWEEP, span(0, 10), detected_at=at(10))
    (tid,) = fresh_tids(1)
    counts = PassCounts(changed=2)
    counts.recovered = [
        *found(tid, kind="changed", modified=at(1)),
        *found(tid, kind="changed", modified=at(2)),
    ]
    await reports.add_pass(
        report.id, counts, started_at=at(10), progress_until=None, fresh_until=None, overlap_seconds=None
    )
    assert await reports.trades(report.id) == [RecoveredTrade(tid, at(2), "changed", False)]


async def test_outcomes_decide_what_stays_open(open_store: Open) -> None:
    reports = open_store("r1").reports
    shop = new_shop()
    recovered, partial, failed, untouched = [
        await reports.create(shop, Cause.RESTART, span(n * 10, n * 10 + 5), detected_at=at(60))
        for n in range(4)
    ]
    await reports.finish(recovered.id, Outcome.RECOVERED, None, at(61))
    await reports.finish(partial.id, Outcome.PARTIAL, "list call: isp.timeout", at(61))
    await reports.finish(failed.id, Outcome.FAILED, "isv.invalid-parameter", at(61))
    assert [r.id for r in await reports.open_reports(shop)] == [partial.id, untouched.id]
    assert (await reports.get(partial.id)).finished_at is None  # partial is still open
    assert (await reports.get(failed.id)).finished_at == at(61)
    assert (await reports.get(recovered.id)).reason is None
    assert sorted(await reports.unrecovered_windows(shop)) == [
        span(10, 15),
        span(20, 25),
        span(30, 35),
    ]
    assert [r.id for r in await reports.recent(2, shop)] == [untouched.id, failed.id]
    with pytest.raises(LookupError):
        await reports.get(untouched.id + 10_000)


async def test_a_window_is_only_ever_extended_and_work_moving_is_recorded(open_store: Open) -> None:
    first, second = open_store("r1").reports, open_store("r2").reports
    report = await first.create(new_shop(), Cause.DISCONNECT, span(0, 10), detected_at=at(10))
    await first.extend(report.id, at(20))
    await first.extend(report.id, at(15))
    assert (await first.get(report.id)).window_end == at(20)
    for reports in (first, first, second, first):
        await reports.add_pass(
            report.id,
            PassCounts(),
            started_at=at(21),
            progress_until=None,
            fresh_until=None,
            overlap_seconds=None,
        )
    await second.finish(report.id, Outcome.RECOVERED, None, at(22))
    done = await second.get(report.id)
    assert (done.detected_by, done.replica) == ("r1", "r2")
    assert done.replicas == ("r1", "r2", "r1", "r2")


async def test_stream_connections_are_kept_for_the_timeline(open_store: Open) -> None:
    reports = open_store(f"replica-{uuid.uuid4().hex[:6]}").reports
    mine = reports.replica
    earlier = await reports.connection_opened(at(0))
    await reports.connection_closed(earlier, at(5), "x" * 600)
    later = await reports.connection_opened(at(10))
    shown = [c for c in await reports.connections(at(3)) if c.replica == mine]
    assert [(c.connected_at, c.disconnected_at) for c in shown] == [(at(0), at(5)), (at(10), None)]
    assert shown[0].reason == "x" * 500
    assert [c.connected_at for c in await reports.connections(at(6)) if c.replica == mine] == [at(10)]
    assert later != earlier


# ---- initial loads ------------------------------------------------------------------------------


async def test_an_initial_load_is_planned_once_with_its_report_and_ledger_start(open_store: Open) -> None:
    storage = open_store("r1")
    loads, shop = storage.loads, new_shop()
    since, until = at(0), at(3 * 60)
    parts = [span(0, 60), span(60, 120), span(120, 180)]
    assert await loads.state(shop) is None
    await loads.plan(shop, since=since, until=until, method="topats", parts=parts, at=at(200))
    state = await loads.state(shop)
    assert state is not None
    assert (state.since, state.until, state.method, state.state, state.trades) == (
        since,
        until,
        "topats",
        "running",
        0,
    )
    assert state.report_id is not None
    report = await storage.reports.get(state.report_id)
    assert (report.cause, report.window_start, report.window_end) == (
        Cause.INITIAL_LOAD.value,
        since,
        at(200),
    )
    assert (report.detected_at, report.replica) == (at(200), "r1")
    assert await storage.coverage.sync_from(shop) == since
    assert [(p.start, p.end, p.method, p.state) for p in await loads.parts(shop)] == [
        (p.start, p.end, "topats", "pending") for p in parts
    ]
    with pytest.raises(StoreError):
        await loads.plan(shop, since=since, until=until, method="topats", parts=parts, at=at(201))


async def test_a_load_resumes_from_its_parts_and_can_change_method(open_store: Open) -> None:
    loads, shop = open_store("r1").loads, new_shop()
    await loads.plan(
        shop, since=at(0), until=at(180), method="topats", parts=[span(0, 90), span(90, 180)], at=at(181)
    )
    await loads.start_part(shop, at(0), 4711)
    await loads.finish_part(shop, at(0), 120)
    await loads.start_part(shop, at(90), 4712)
    started = await loads.parts(shop)
    assert [(p.state, p.task_id, p.trades) for p in started] == [("done", 4711, 120), ("started", 4712, 0)]
    await loads.replan(shop, "sold_get", [span(90, 135), span(135, 180)])
    parts = await loads.parts(shop)
    assert [(p.start, p.method, p.state) for p in parts] == [
        (at(0), "topats", "done"),  # a finished part is kept
        (at(90), "sold_get", "pending"),
        (at(135), "sold_get", "pending"),
    ]
    for part, trades in zip(parts[1:], (30, 12), strict=True):
        await loads.finish_part(shop, part.start, trades)
    await loads.finish(shop)
    state = await loads.state(shop)
    assert state is not None
    assert (state.state, state.method, state.trades, state.done) == ("done", "sold_get", 162, True)


# ---- unresolved trades (docs/design.md#unresolved-trades-block-proof) ------------------------------


def debt(shop: str, tid: int, belongs: Interval, **changes: Any) -> TradeDebt:
    fields: dict[str, Any] = {
        "source": "stream",
        "kind": "TradeNotFound",
        "reason": "not there",
        "payload": b"{}",
    }
    return TradeDebt(shop=shop, tid=tid, belongs=belongs, **(fields | changes))


def ten_seconds(attempts: int) -> float:
    return 10.0 * attempts


async def test_an_unresolved_trade_is_cut_out_of_every_proof_and_left_out_of_new_ones(
    open_store: Open,
) -> None:
    storage = open_store("r1")
    shop, other = new_shop(), new_shop()
    await storage.coverage.prove(shop, span(0, 10), ProvenBy.STREAM)
    await storage.coverage.prove(shop, span(0, 20), ProvenBy.BACKFILL)
    await storage.coverage.prove(other, span(0, 10), ProvenBy.STREAM)
    (tid,) = fresh_tids(1)
    attempts = await storage.trades.record_unresolved(
        debt(shop, tid, span(5, 6)), at=at(30), delay=ten_seconds, history=True
    )
    assert attempts == 1
    kept = [(c.interval, c.proven_by) for c in await storage.coverage.coverage(shop)]
    assert sorted(kept) == sorted(
        [
            (span(0, 5), ProvenBy.STREAM),
            (span(6, 10), ProvenBy.STREAM),
            (span(0, 5), ProvenBy.BACKFILL),
            (span(6, 20), ProvenBy.BACKFILL),
        ]
    )
    assert [c.interval for c in await storage.coverage.coverage(other)] == [span(0, 10)]  # another shop
    # A new proof over it leaves the stretch out, whatever proves it.
    await storage.coverage.prove(shop, span(0, 30), ProvenBy.SWEEP)
    sweep = [c.interval for c in await storage.coverage.coverage(shop) if c.proven_by is ProvenBy.SWEEP]
    assert sweep == [span(0, 5), span(6, 30)]


async def test_unresolved_rows_are_listed_due_by_their_backoff_and_made_due_now(open_store: Open) -> None:
    storage = open_store("r1")
    unresolved, trades = storage.unresolved, storage.trades
    shop, other = new_shop(), new_shop()
    a, b, c = fresh_tids(3)
    await trades.record_unresolved(debt(shop, a, span(1, 2)), at=at(0), delay=ten_seconds, history=True)
    await trades.record_unresolved(debt(shop, b, span(3, 4)), at=at(1), delay=ten_seconds, history=True)
    await trades.record_unresolved(debt(other, c, span(1, 2)), at=at(1), delay=ten_seconds, history=True)
    # b fails again, from a window that reaches further: attempts and stretch grow, the first source stays.
    again = debt(shop, b, span(2, 5), source="backfill", kind="refused_by_database", modified=at(4))
    assert await trades.record_unresolved(again, at=at(2), delay=ten_seconds, history=False) == 2
    rows = {row.tid: row for row in await unresolved.rows(shop)}
    assert sorted(rows) == sorted((a, b))
    row = rows[b]
    assert (row.source, row.kind, row.attempts, row.belongs, row.modified) == (
        "stream",
        "refused_by_database",
        2,
        span(2, 5),
        at(4),
    )
    assert (row.first_failure, row.last_failure, row.next_attempt) == (
        at(1),
        at(2),
        at(2) + timedelta(seconds=20),
    )
    assert [r.tid for r in await unresolved.due([shop], at(0) + timedelta(seconds=10), 10)] == [a]
    assert [r.tid for r in await unresolved.due([shop, other], at(5), 10)] == [a, c, b]
    assert [r.tid for r in await unresolved.within(shop, at(4), at(10))] == [b]
    counts = await unresolved.counts()
    assert (counts[shop], counts[other]) == (2, 1)
    assert await unresolved.retry_now(at(0), shop) == 2
    assert sorted(r.tid for r in await unresolved.due([shop], at(0), 10)) == sorted((a, b))


async def test_a_store_of_the_trade_resolves_it_unless_older_or_left_incomplete(open_store: Open) -> None:
    storage = open_store("r1")
    trades, unresolved = storage.trades, storage.unresolved
    shop = new_shop()
    known, unknown, odd = fresh_tids(3)
    newest = trade(known, 20, shop=shop)
    assert newest.modified is not None
    failed_at = datetime(2026, 1, 1, tzinfo=UTC)
    await trades.record_unresolved(
        debt(shop, known, span(0, 1), modified=newest.modified), at=failed_at, delay=ten_seconds, history=True
    )
    await trades.record_unresolved(
        debt(shop, unknown, span(0, 1)), at=failed_at, delay=ten_seconds, history=True
    )
    await trades.apply_trades([trade(known, 10, shop=shop)], source="stream")  # older than the one owed
    before = failed_at - timedelta(seconds=1)
    await trades.apply_trades([trade(unknown, 1, shop=shop, fetched=before)], source="stream")  # read before
    assert sorted(r.tid for r in await unresolved.rows(shop)) == sorted((known, unknown))
    await trades.apply_trades(
        [newest, trade(unknown, 1, shop=shop, fetched=failed_at + timedelta(seconds=1), note="read later")],
        source="redrive",
    )
    assert await unresolved.rows(shop) == []
    # Stored with a field left empty: the store reports it, and resolves nothing for it.
    flawed = Trade.model_validate({**trade_json(odd, 5, shop=shop), "end_time": "0001-01-01 00:00:00"})
    await trades.record_unresolved(debt(shop, odd, span(0, 1)), at=failed_at, delay=ten_seconds, history=True)
    result = await trades.apply_trades([flawed.model_copy(update={"fetched_at": at(60)})], source="redrive")
    assert [f.tid for f in result.flawed] == [odd]
    assert [r.tid for r in await unresolved.rows(shop)] == [odd]
