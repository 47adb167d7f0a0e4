"""Processing gap reports (reconciler/processing.py through the Reconciler's operations) over the in-memory
storage and the fake TOP: what a pass proves and records, when a report is finished, left open or
retried, and what is never read again."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest

from common.backoff import BackoffPolicy
from common.intervals import Interval
from reconciler.backfill import BackfillConfig
from reconciler.coordination import Alone
from reconciler.retries import RetrySchedule
from store.coverage import ProvenBy
from store.errors import StoreError
from store.gap_reports import Cause, Outcome
from taobao.errors import PermanentTopError, RetryableTopError
from tests.reconciler.fakes import T0, Unit, session_expired, unit_config, unit_reconciler

SHOP = "shop-a"
HOUR = timedelta(hours=1)
OVERLAP = timedelta(seconds=2)


def fill(unit: Unit, n: int, start: timedelta, end: timedelta, *, first_tid: int = 1) -> list[int]:
    """`n` trades of SHOP modified between T0 - start and T0 - end."""
    step = (start - end) / (n + 1)
    return [
        unit.top.change(SHOP, first_tid + i, (T0 - start + step * (i + 1)).replace(microsecond=0)).tid
        for i in range(n)
    ]


class ManualRetries:
    """The retry schedule on a clock the test moves."""

    def __init__(self, unit: Unit) -> None:
        self.now = 0.0
        schedule = RetrySchedule(
            BackoffPolicy(base=1.0, cap=4.0), clock=lambda: self.now, rng=random.Random(1)
        )
        unit.reconciler.processor.retries = schedule


async def test_a_manual_backfill_proves_its_window_and_lists_what_it_brought_in() -> None:
    unit = unit_reconciler()
    tids = fill(unit, 30, 5 * HOUR, 1 * HOUR)
    window = Interval(T0 - 5 * HOUR, T0 - HOUR)
    report = await unit.reconciler.backfill(SHOP, window)
    assert report.outcome == Outcome.RECOVERED.value
    assert (report.trades_found, report.trades_new, report.windows_read) == (30, 30, 1)
    assert report.progress_until == window.end
    assert {t.tid for t in await unit.reconciler.reports.trades(report.id)} == set(tids)
    assert await unit.reconciler.ledger.intervals(SHOP, kinds=[ProvenBy.BACKFILL]) == [
        Interval(window.start - OVERLAP, window.end)
    ]
    assert await unit.reconciler.ledger.sync_from(SHOP) == window.start  # a new shop's ledger starts there
    assert unit.reconciler.metrics.recovered.value(shop=SHOP, cause="manual") == 30


async def test_what_is_not_provable_yet_is_read_ahead_and_proven_once_the_horizon_passes() -> None:
    unit = unit_reconciler()
    fill(unit, 5, timedelta(minutes=10), timedelta(seconds=0))
    window = Interval(T0 - timedelta(minutes=10), T0)
    report = await unit.reconciler.backfill(SHOP, window)
    assert report.outcome is None  # open: its newest seconds are above the lag horizon
    assert report.fresh_until is not None
    assert report.trades_new == 5  # brought in early all the same
    lists = len(unit.top.calls_of("increment"))
    await unit.reconciler.tick()
    assert len(unit.top.calls_of("increment")) == lists  # left alone while the horizon has not passed
    unit.clock.advance(5)
    await unit.reconciler.tick()
    done = await unit.reconciler.reports.get(report.id)
    assert done.outcome == Outcome.RECOVERED.value
    assert done.trades_new == 5  # nothing new: the re-read found the same trades unchanged
    assert await unit.reconciler.ledger.gaps(SHOP, window.start, window.end) == []


async def test_a_window_that_fails_for_good_is_never_read_again_by_the_rounds() -> None:
    unit = unit_reconciler()
    fill(unit, 3, 3 * HOUR, HOUR)
    unit.top.list_errors.append(
        PermanentTopError("invalid type", code=41, sub_code="isv.invalid-parameter:type")
    )
    report = await unit.reconciler.backfill(SHOP, Interval(T0 - 3 * HOUR, T0 - HOUR))
    assert report.outcome == Outcome.FAILED.value
    assert report.reason is not None
    assert "isv.invalid-parameter:type" in report.reason
    assert await unit.reconciler.ledger.intervals(SHOP) == []  # nothing proven
    await unit.reconciler.recover(fresh=True)
    assert len(unit.top.calls_of("increment")) == 1


async def test_a_partial_report_is_tried_again_only_when_its_retry_is_due() -> None:
    unit = unit_reconciler()
    retries = ManualRetries(unit)
    fill(unit, 3, 3 * HOUR, HOUR)
    unit.top.list_errors.extend([RetryableTopError("HTTP 502"), RetryableTopError("HTTP 502")])
    report = await unit.reconciler.backfill(SHOP, Interval(T0 - 3 * HOUR, T0 - HOUR))
    assert report.outcome == Outcome.PARTIAL.value
    assert report.finished_at is None  # still open
    await unit.reconciler.recover(fresh=False)
    assert len(unit.top.calls_of("increment")) == 1  # not due yet
    retries.now += 1.0
    await unit.reconciler.recover(fresh=False)  # due: fails again, waits longer
    assert len(unit.top.calls_of("increment")) == 2
    retries.now += 1.0
    await unit.reconciler.recover(fresh=False)
    assert len(unit.top.calls_of("increment")) == 2  # the second delay is longer than a second
    retries.now += 2.0
    await unit.reconciler.recover(fresh=False)
    assert (await unit.reconciler.reports.get(report.id)).outcome == Outcome.RECOVERED.value


async def test_a_rejected_session_leaves_the_report_open_until_the_session_works_again() -> None:
    unit = unit_reconciler()
    retries = ManualRetries(unit)
    fill(unit, 2, 3 * HOUR, HOUR)
    unit.top.session_errors["session-of-shop-a"] = session_expired()
    report = await unit.reconciler.backfill(SHOP, Interval(T0 - 3 * HOUR, T0 - HOUR))
    assert report.outcome == Outcome.PARTIAL.value
    assert report.finished_at is None  # still open: a renewal makes it readable
    assert report.reason is not None
    assert report.reason.startswith("session rejected")
    del unit.top.session_errors["session-of-shop-a"]  # renewed
    retries.now += 1.0
    await unit.reconciler.recover(fresh=False)
    done = await unit.reconciler.reports.get(report.id)
    assert (done.outcome, done.trades_new) == (Outcome.RECOVERED.value, 2)


async def test_an_outage_already_proven_by_the_stream_is_closed_without_a_call() -> None:
    unit = unit_reconciler()
    ledger = unit.reconciler.ledger
    await ledger.register_shop(SHOP, T0 - 5 * HOUR)
    await ledger.prove(SHOP, Interval(T0 - 4 * HOUR, T0 - HOUR), ProvenBy.STREAM)
    report = await unit.reconciler.reports.create(
        SHOP, Cause.DISCONNECT, Interval(T0 - 3 * HOUR, T0 - 2 * HOUR), detected_at=T0
    )
    done = await unit.reconciler.process(report, fresh=True)
    assert done.outcome == Outcome.RECOVERED.value
    assert unit.top.calls == []
    # A manual backfill of the same stretch is read all the same: only outages are trimmed.
    manual = await unit.reconciler.backfill(SHOP, Interval(T0 - 3 * HOUR, T0 - 2 * HOUR))
    assert manual.list_calls == 1


async def test_an_outage_partly_proven_is_read_only_from_where_the_proof_stops() -> None:
    unit = unit_reconciler()
    ledger = unit.reconciler.ledger
    await ledger.register_shop(SHOP, T0 - 5 * HOUR)
    await ledger.prove(SHOP, Interval(T0 - 4 * HOUR, T0 - 2 * HOUR), ProvenBy.STREAM)
    report = await unit.reconciler.reports.create(
        SHOP, Cause.RESTART, Interval(T0 - 3 * HOUR, T0 - HOUR), detected_at=T0
    )
    await unit.reconciler.process(report, fresh=True)
    [first, *_] = unit.top.calls_of("increment")
    assert first["start"] == T0 - 2 * HOUR - OVERLAP


async def test_what_a_pass_applied_before_the_database_failed_stays_in_the_report(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    unit = unit_reconciler(
        config=unit_config(backfill=BackfillConfig(concurrency=1, apply_batch=5, lag_probes=0))
    )
    tids = fill(unit, 40, 3 * HOUR, HOUR)
    apply = unit.db.trades.apply_trades
    calls = 0

    async def failing_once(trades: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise StoreError("apply_trades failed: connection was closed in the middle of operation")
        return await apply(trades, **kwargs)

    monkeypatch.setattr(unit.db.trades, "apply_trades", failing_once)
    with pytest.raises(StoreError):
        await unit.reconciler.backfill(SHOP, Interval(T0 - 3 * HOUR, T0 - HOUR))
    [report] = await unit.reconciler.reports.recent(1)
    assert 0 < report.trades_new < 40  # the batch applied before the failure is the report's
    done = await unit.reconciler.process(report, fresh=True)
    assert done.outcome == Outcome.RECOVERED.value
    assert {t.tid for t in await unit.reconciler.reports.trades(done.id)} == set(tids)
    assert done.trades_new == 40


async def test_a_shop_handed_over_mid_pass_keeps_what_was_recorded() -> None:
    class HandedOver(Alone):
        def __init__(self) -> None:
            self.leading = True

        def leads(self, shop: str) -> bool:
            return self.leading

    coordination = HandedOver()
    unit = unit_reconciler(coordination=coordination)
    fill(unit, 6, 30 * HOUR, HOUR)
    report = await unit.reconciler.reports.create(
        SHOP, Cause.DISCONNECT, Interval(T0 - 30 * HOUR, T0 - HOUR), detected_at=T0
    )

    def hand_over() -> None:
        coordination.leading = False

    unit.top.after_list = hand_over  # after the first window's list call
    await unit.reconciler.recover(fresh=False)  # logged, not raised
    kept = await unit.reconciler.reports.get(report.id)
    assert kept.outcome is None
    assert kept.windows_read == 1  # the first of its two windows, recorded before the handover
    assert kept.progress_until == T0 - 30 * HOUR - OVERLAP + timedelta(hours=12)
