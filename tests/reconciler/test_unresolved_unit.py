"""Unresolved trades in the reconciler, over the in-memory storage and the fake TOP
(docs/design.md#unresolved-trades-block-proof): a trade a backfill could not fetch or store keeps its
window unproven and its report open, the redrive tries it again on its backoff, and once it is stored
the report is recovered and gap detection has the hole read and proven."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from common.backoff import BackoffPolicy
from common.intervals import Interval
from reconciler.proof import conclusion
from store.coverage import ProvenBy
from store.gap_reports import Outcome
from taobao.errors import TradeNotFound
from tests.reconciler.fakes import T0, Unit, unit_config, unit_reconciler
from tests.reconciler.test_proof import at, report

SHOP = "shop-a"
HOUR = timedelta(hours=1)
WINDOW = Interval(T0 - 3 * HOUR, T0 - HOUR)
REDRIVE = BackoffPolicy(base=10.0, cap=40.0)


def unit_with_trades(*tids: int) -> Unit:
    unit = unit_reconciler(config=dataclasses.replace(unit_config(), redrive=REDRIVE))
    for n, tid in enumerate(tids):
        unit.top.change(SHOP, tid, T0 - 2 * HOUR + timedelta(minutes=n))
    return unit


def not_found(tid: int) -> TradeNotFound:
    return TradeNotFound("trade not found", sub_code="isv.trade-not-exist", tid=tid)


async def test_a_trade_the_backfill_could_not_fetch_keeps_its_window_unproven_until_it_is_stored() -> None:
    unit = unit_with_trades(1, 2, 3)
    unit.top.fullinfo_errors[2] = not_found(2)
    report = await unit.reconciler.backfill(SHOP, WINDOW)
    assert set(unit.db.trades.rows) == {1, 3}
    [row] = await unit.reconciler.unresolved.rows(SHOP)
    assert (row.tid, row.source, row.kind, row.attempts) == (2, "backfill", "TradeNotFound", 1)
    # Its window (the one that listed it) is not proven, and the report stays open.
    assert row.belongs.start <= WINDOW.start
    assert row.belongs.end >= WINDOW.end
    assert await unit.reconciler.ledger.intervals(SHOP) == []
    assert report.outcome is None
    assert (await unit.reconciler.process(report, fresh=False)).outcome is None  # still owed

    # Not due yet: the redrive leaves it alone.
    assert (await unit.reconciler.redrive_due()).tried == 0
    # Due, and still not there: tried, recorded again, the next attempt further out.
    unit.clock.advance(10)
    counts = await unit.reconciler.redrive_due()
    assert (counts.tried, counts.failed, counts.stored) == (1, 1, 0)
    [again] = await unit.reconciler.unresolved.rows(SHOP)
    assert again.attempts == 2
    assert timedelta(seconds=10) <= again.next_attempt - unit.clock() <= timedelta(seconds=20)
    assert len(unit.db.trades.dead_letters) == 1  # a redrive's failure is no new dead letter

    # Now it is there: the redrive stores it, which resolves it, and the report is recovered.
    del unit.top.fullinfo_errors[2]
    unit.clock.advance(20)
    assert (await unit.reconciler.redrive_due()).stored == 1
    assert 2 in unit.db.trades.rows
    assert await unit.reconciler.unresolved.rows(SHOP) == []
    # The report that listed it counts it among its finds, though the redrive stored it: its next pass
    # sees the trade unchanged and would not.
    assert sorted(t.tid for t in await unit.reconciler.reports.trades(report.id)) == [1, 2, 3]
    recovered = await unit.reconciler.process(report, fresh=False)
    assert recovered.outcome == Outcome.RECOVERED.value
    assert recovered.trades_new == 3

    # The hole it left is a gap with no report over it now: gap detection opens one, whose read proves it.
    await unit.reconciler.ledger.prove(SHOP, Interval(WINDOW.end, T0), ProvenBy.STREAM)
    await unit.reconciler.detector.scan_ledger(SHOP)
    [hole] = await unit.reconciler.reports.open_reports(SHOP)
    # (The ledger of this shop begins where the backfill's window does.)
    assert (hole.window_start, hole.window_end) == (WINDOW.start, WINDOW.end)
    assert (await unit.reconciler.process(hole, fresh=False)).outcome == Outcome.RECOVERED.value
    proven = await unit.reconciler.ledger.intervals(SHOP)
    assert len(proven) == 1
    assert proven[0].start <= WINDOW.start
    assert proven[0].end == T0


async def test_a_trade_the_database_refuses_is_owed_the_rest_stored_and_the_redrive_stores_it_later() -> None:
    unit = unit_with_trades(1, 2, 3)
    unit.db.trades.refuse = lambda trade: "violates check constraint" if trade.tid == 3 else None
    report = await unit.reconciler.backfill(SHOP, WINDOW)
    assert set(unit.db.trades.rows) == {1, 2}
    [row] = await unit.reconciler.unresolved.rows(SHOP)
    assert (row.tid, row.kind, row.stored) == (3, "refused_by_database", False)
    assert row.modified == unit.top.trades[3].modified  # the version owed
    assert report.outcome is None
    assert await unit.reconciler.ledger.intervals(SHOP) == []
    unit.db.trades.refuse = None  # the DBA dropped the constraint
    await unit.reconciler.unresolved.retry_now(unit.clock(), SHOP)  # `order-sync dead-letters --retry`
    assert (await unit.reconciler.redrive_due()).stored == 1
    assert 3 in unit.db.trades.rows
    assert (await unit.reconciler.process(report, fresh=False)).outcome == Outcome.RECOVERED.value


async def test_the_redrive_backs_off_to_its_cap_with_jitter() -> None:
    unit = unit_with_trades(1)
    unit.top.fullinfo_errors[1] = not_found(1)
    await unit.reconciler.backfill(SHOP, WINDOW)
    waits = []
    for _ in range(6):
        [row] = await unit.reconciler.unresolved.rows(SHOP)
        unit.clock.advance((row.next_attempt - unit.clock()).total_seconds())
        await unit.reconciler.redrive_due()
        [row] = await unit.reconciler.unresolved.rows(SHOP)
        waits.append((row.next_attempt - unit.clock()).total_seconds())
    assert row.attempts == 7
    # After the n-th failure: between half and all of min(10·2ⁿ⁻¹, 40).
    for n, wait in enumerate(waits, start=2):
        ceiling = min(10 * 2 ** (n - 1), 40)
        assert ceiling / 2 <= wait <= ceiling
    assert len(set(waits)) > 1  # jittered


def test_a_report_with_an_unresolved_trade_in_its_window_is_not_recovered() -> None:
    done = report(0, 100, progress_until=at(100))
    assert conclusion(done, None) is Outcome.RECOVERED
    assert conclusion(done, None, unresolved=1) is None
