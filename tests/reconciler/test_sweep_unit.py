"""The sweep (reconciler/sweep.py) over the in-memory storage: it re-reads what the stream claimed, finds
the changes the stream never delivered (push loss), proves what it read, and keeps out of the windows
open reports own."""

from __future__ import annotations

from datetime import timedelta

from common.intervals import Interval
from store.coverage import ProvenBy
from store.gap_reports import Cause, Outcome
from taobao.tmc.events import Connected
from tests.reconciler.fakes import T0, Unit, unit_reconciler

SHOP = "shop-a"
OVERLAP = timedelta(seconds=2)


async def streaming(unit: Unit, seconds: float) -> None:
    """The shop followed by a stream connected at T0, `seconds` ago, with nothing held back."""
    await unit.reconciler.ledger.register_shop(SHOP, T0 - timedelta(hours=1))
    await unit.reconciler.ledger.prove(SHOP, Interval(T0 - timedelta(hours=1), T0), ProvenBy.BACKFILL)
    await unit.reconciler.start()
    await unit.reconciler.on_state(Connected(at=T0, token="t"))
    unit.clock.advance(seconds)
    await unit.reconciler.tick()  # records what the stream proved


async def test_a_change_the_stream_never_delivered_is_found_and_counted_as_push_loss() -> None:
    unit = unit_reconciler()
    await streaming(unit, 600)
    lost = unit.top.change(SHOP, 42, T0 + timedelta(seconds=100))
    counts = await unit.reconciler.sweep(SHOP)
    assert (counts.new, counts.push_loss) == (1, 1)
    [first] = unit.top.calls_of("increment")
    assert first["start"] == T0 - OVERLAP  # the first sweep starts where this process's stream did
    assert lost.tid in unit.db.trades.rows
    [report] = [r for r in await unit.reconciler.reports.recent(10) if r.cause == Cause.SWEEP.value]
    assert report.outcome == Outcome.RECOVERED.value
    assert [(t.tid, t.push_loss) for t in await unit.reconciler.reports.trades(report.id)] == [(42, True)]
    swept = await unit.reconciler.ledger.intervals(SHOP, kinds=[ProvenBy.SWEEP])
    stream_end = await unit.reconciler.ledger.covered_end(SHOP, ProvenBy.STREAM)
    assert swept == [Interval(T0 - OVERLAP, swept[0].end)]
    assert stream_end is not None
    assert swept[0].end <= stream_end
    assert unit.reconciler.metrics.coverage.push_lost.value(shop=SHOP) == 1


async def test_the_next_sweep_goes_on_from_where_the_last_one_ended_and_a_quiet_one_leaves_no_report() -> (
    None
):
    unit = unit_reconciler()
    await streaming(unit, 600)
    await unit.reconciler.sweep(SHOP)
    ended = await unit.reconciler.ledger.covered_end(SHOP, ProvenBy.SWEEP)
    unit.clock.advance(300)
    await unit.reconciler.tick()
    await unit.reconciler.sweep(SHOP)
    second = unit.top.calls_of("increment")[-1]
    assert ended is not None
    assert second["start"] == ended - OVERLAP
    assert await unit.reconciler.reports.recent(10) == []  # nothing found, nothing failed


async def test_a_sweep_waits_behind_an_open_report_and_does_nothing_while_disconnected() -> None:
    unit = unit_reconciler()
    await streaming(unit, 600)
    await unit.reconciler.reports.create(
        SHOP, Cause.MANUAL, Interval(T0 + timedelta(seconds=200), T0 + timedelta(seconds=300)), detected_at=T0
    )
    await unit.reconciler.sweep(SHOP)
    [call] = unit.top.calls_of("increment")
    assert call["end"] == T0 + timedelta(seconds=200)

    idle = unit_reconciler()
    await idle.reconciler.ledger.register_shop(SHOP, T0 - timedelta(hours=1))
    counts = await idle.reconciler.sweep(SHOP)
    assert counts.list_calls == 0
    assert idle.top.calls == []
