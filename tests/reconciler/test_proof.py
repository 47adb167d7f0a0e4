"""The proof rules (reconciler/proof.py), pure: which windows of a report are read now, when a report is
done, what a sweep may cover, the gaps a restart or a disconnect leaves, and what the gate waits for.
Checked case by case and, where a rule has bounds, against random inputs."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from common.intervals import Interval, covers, normalize
from reconciler.config import Shared
from reconciler.fetching import Failure
from reconciler.plan import SECOND, Window, floor_second, lag_horizon
from reconciler.proof import (
    conclusion,
    disconnect_gap,
    history_loading,
    left_to_read,
    outage_unread,
    pass_windows,
    proven_until,
    restart_gap,
    sweep_applies,
    sweep_span,
    waits_for_horizon,
)
from store.gap_reports import Cause, GapReport, Outcome
from store.memory import MemoryDatabase
from taobao.clock import HALF_SECOND as HALF
from taobao.clock import ClockSkew
from tests.reconciler.conftest import small_config

T0 = datetime(2026, 11, 11, tzinfo=UTC)
OVERLAP, SAFETY = timedelta(seconds=60), timedelta(seconds=5)
MAX_SPAN = timedelta(hours=1)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def report(start: float, end: float, *, cause: Cause = Cause.DISCONNECT, **changes: Any) -> GapReport:
    made = MemoryDatabase().new_report(
        "shop-a", cause, Interval(at(start), at(end)), detected_at=at(end), replica="r1", progress_until=None
    )
    return dataclasses.replace(made, **changes)


def windows_now(r: GapReport, now: float, *, fresh: bool, proven_from: datetime | None = None) -> list[Any]:
    return pass_windows(
        r,
        proven_from or r.proven_from,
        now=at(now),
        safety_lag=SAFETY,
        overlap=OVERLAP,
        max_span=MAX_SPAN,
        fresh=fresh,
    )


# ---- which windows are read now ------------------------------------------------------------------


def test_a_report_below_the_horizon_is_read_as_proof_from_an_overlap_before_it() -> None:
    gap = report(1000, 1100)
    [window] = windows_now(gap, 2000, fresh=False)
    assert (window.start, window.end, window.proof) == (at(1000) - OVERLAP, at(1100), True)


def test_above_the_horizon_only_a_fresh_read_brings_changes_in() -> None:
    gap = report(1000, 1100)
    assert windows_now(gap, 1120, fresh=False) == [
        w for w in windows_now(gap, 1120, fresh=True) if w.proof
    ]  # proof up to the horizon only
    fresh = [w for w in windows_now(gap, 1120, fresh=True) if not w.proof]
    assert fresh[0].start == lag_horizon(at(1120), safety_lag=SAFETY, overlap=OVERLAP)
    assert fresh[-1].end == at(1100)  # the report's end is older than now - safety lag


def test_a_report_read_ahead_waits_for_the_horizon_instead_of_creeping_after_it() -> None:
    # Read fresh to its end, proven to 1040: the horizon at 1130 is at 1070, short of the end.
    ahead = report(1000, 1100, progress_until=at(1040), fresh_until=at(1100))
    assert windows_now(ahead, 1130, fresh=False) == []
    # Once the horizon has passed its end, the rest is read as proof.
    [window] = windows_now(ahead, 1200, fresh=False)
    assert (window.start, window.end, window.proof) == (at(1040) - OVERLAP, at(1100), True)
    # A fresh round (the gate) reads it anyway.
    assert windows_now(ahead, 1130, fresh=True)


def test_nothing_is_read_while_the_horizon_is_behind_what_is_proven() -> None:
    proven = report(1000, 1100, progress_until=at(1050))
    horizon_before_proof = 1050 + 60 - 10  # now - overlap < 1050
    assert windows_now(proven, horizon_before_proof, fresh=False) == []
    assert (
        waits_for_horizon(
            proven, at(1050), windows_now(proven, 1200, fresh=False), fresh=True, max_span=MAX_SPAN
        )
        is False
    )


@given(
    start=st.integers(0, 5000),
    length=st.integers(1, 8000),
    now=st.integers(0, 20000),
    fresh=st.booleans(),
)
def test_proof_windows_never_reach_past_the_horizon_and_leave_no_second_out(
    start: int, length: int, now: int, fresh: bool
) -> None:
    gap = report(start, start + length)
    windows = windows_now(gap, now, fresh=fresh)
    horizon = lag_horizon(at(now), safety_lag=SAFETY, overlap=OVERLAP)
    proof = [w for w in windows if w.proof]
    assert all(w.end <= horizon for w in proof)
    assert all(not w.proof for w in windows[len(proof) :])  # proof first, then fresh
    assert all(w.end - w.start <= MAX_SPAN for w in windows)
    for left, right in itertools.pairwise(windows):
        assert left.end == right.start  # touching: no second left out
    if proof:
        assert proof[0].start == floor_second(at(start) - OVERLAP)
        assert proof[-1].end == min(at(start + length), horizon)


# ---- when a report is done -----------------------------------------------------------------------


def test_a_report_is_recovered_only_when_proven_to_its_end() -> None:
    assert conclusion(report(0, 100, progress_until=at(100)), None) is Outcome.RECOVERED
    assert conclusion(report(0, 100, progress_until=at(99)), None) is None  # open, waits for the horizon
    assert conclusion(report(0, 100), Failure("list call: isp.timeout", retryable=True)) is Outcome.PARTIAL
    assert (
        conclusion(report(0, 100, progress_until=at(100)), Failure("isv.x", retryable=False))
        is Outcome.FAILED
    )


def test_an_initial_loads_report_waits_for_its_history() -> None:
    assert history_loading(report(0, 100, cause=Cause.INITIAL_LOAD))
    assert not history_loading(report(0, 100, cause=Cause.INITIAL_LOAD, progress_until=at(50)))
    assert not history_loading(report(0, 100, cause=Cause.RESTART))


# ---- what is already proven ----------------------------------------------------------------------


spans = st.tuples(st.integers(0, 300), st.integers(1, 60)).map(lambda p: Interval(at(p[0]), at(p[0] + p[1])))


@given(proven=st.lists(spans, max_size=8), start=st.integers(0, 360))
def test_proven_until_reaches_exactly_as_far_as_the_ledger_holds_without_a_hole(
    proven: list[Interval], start: int
) -> None:
    merged = normalize(proven)
    reached = proven_until(at(start), merged)
    assert reached >= at(start)
    if reached > at(start):
        assert any(i.start <= at(start) and reached <= i.end for i in merged)  # one proven stretch
    assert not covers(merged, reached)  # and it stops where the proof stops


# ---- what a sweep may cover ----------------------------------------------------------------------


def sweep(**overrides: Any) -> Interval | None:
    values: dict[str, Any] = {
        "last_sweep_end": None,
        "stream_started": at(100),
        "sync_from": at(0),
        "stream_end": at(1000),
        "open_starts": [],
        "horizon": at(900),
    }
    values.update(overrides)
    return sweep_span(**values)


def test_the_first_sweep_starts_where_the_stream_did_and_later_ones_where_the_last_ended() -> None:
    assert sweep() == Interval(at(100), at(900))
    assert sweep(last_sweep_end=at(500)) == Interval(at(500), at(900))
    assert sweep(stream_started=None) is None  # nothing to check before the stream ran
    assert sweep(sync_from=at(300)) == Interval(at(300), at(900))  # never before the ledger begins


def test_a_sweep_stays_behind_the_horizon_the_streams_proof_and_open_reports() -> None:
    assert sweep(stream_end=at(600)) == Interval(at(100), at(600))
    assert sweep(stream_end=None) is None
    assert sweep(open_starts=[at(700), at(400)]) == Interval(at(100), at(400))
    assert sweep(open_starts=[at(50)]) is None
    assert sweep(horizon=at(300.5)) == Interval(at(100), at(300))  # whole seconds


@given(
    last=st.none() | st.integers(0, 2000),
    started=st.none() | st.integers(0, 2000),
    sync_from=st.integers(0, 2000),
    stream_end=st.none() | st.integers(0, 2000),
    opens=st.lists(st.integers(0, 2000), max_size=3),
    horizon=st.integers(0, 2000),
)
def test_a_sweep_never_covers_what_it_may_not(
    last: int | None,
    started: int | None,
    sync_from: int,
    stream_end: int | None,
    opens: list[int],
    horizon: int,
) -> None:
    span = sweep_span(
        last_sweep_end=None if last is None else at(last),
        stream_started=None if started is None else at(started),
        sync_from=at(sync_from),
        stream_end=None if stream_end is None else at(stream_end),
        open_starts=[at(s) for s in opens],
        horizon=at(horizon),
    )
    if span is None:
        return
    assert stream_end is not None
    assert span.start >= at(sync_from)
    assert span.end <= min([at(horizon), at(stream_end), *(at(s) for s in opens)])


def test_a_sweep_applies_a_version_only_in_its_windows_or_where_the_stream_claimed_its_time() -> None:
    windows = [Window(at(100), at(200), True), Window(at(200), at(300), True)]
    owned = sweep_applies(windows, [Interval(at(50), at(150)), Interval(at(400), at(500))])
    assert owned == [Interval(at(50), at(301)), Interval(at(400), at(500))]
    assert covers(owned, at(300.5))  # a window's end second is listed too
    assert not covers(owned, at(350))  # past the windows, not claimed: its push may be on its way
    assert covers(owned, at(450))  # claimed by the stream: push loss
    assert not covers(owned, at(500))  # past the stream's proof
    assert sweep_applies(windows, []) == [Interval(at(100), at(301))]


def test_a_sweep_never_applies_a_version_in_an_open_reports_window() -> None:
    # A disconnect report starting inside the sweep's last listed second owns that whole second (a change
    # just after the cut carries its `modified`), and its window even where the stream claimed the time.
    windows = [Window(at(100), at(200), True)]
    stream = [Interval(at(50), at(200.4)), Interval(at(400), at(500))]
    owned = sweep_applies(
        windows, stream, open_windows=[Interval(at(200.4), at(300)), Interval(at(450), at(460))]
    )
    assert owned == [Interval(at(50), at(200)), Interval(at(400), at(450)), Interval(at(460), at(500))]
    assert not covers(owned, at(200))  # the report's second: its find
    assert covers(owned, at(199))
    assert sweep_applies(windows, [], open_windows=[Interval(at(700), at(800))]) == [
        Interval(at(100), at(201))
    ]


# ---- the gaps a restart and a disconnect leave -----------------------------------------------------


def test_a_restart_misses_from_the_ledgers_end_or_an_open_reports() -> None:
    assert restart_gap(at(100), [], at(500)) == Interval(at(100), at(500))
    assert restart_gap(at(100), [at(300), at(200)], at(500)) == Interval(at(300), at(500))
    assert restart_gap(at(500), [], at(500)) is None
    assert restart_gap(at(100), [at(600)], at(500)) is None


def test_a_disconnect_leaves_what_the_stream_had_not_recorded_yet() -> None:
    assert disconnect_gap(at(80), at(10), at(100)) == Interval(at(80), at(100))
    assert disconnect_gap(None, at(10), at(100)) == Interval(at(10), at(100))
    assert disconnect_gap(at(100), at(10), at(100)) is None
    assert disconnect_gap(at(120), at(10), at(100)) is None


# ---- what the gate waits for ---------------------------------------------------------------------


def test_the_gate_waits_for_an_outage_not_read_up_to_when_it_connects() -> None:
    since = at(1000)
    unread = report(500, 990, cause=Cause.RESTART)
    assert outage_unread(unread, since, safety_lag=SAFETY)
    read_fresh = dataclasses.replace(unread, fresh_until=at(989))  # to the window's end, less a second
    assert not outage_unread(read_fresh, since, safety_lag=SAFETY)
    proven = dataclasses.replace(unread, progress_until=at(990))
    assert not outage_unread(proven, since, safety_lag=SAFETY)
    given_up = dataclasses.replace(unread, outcome=Outcome.FAILED.value)
    assert not outage_unread(given_up, since, safety_lag=SAFETY)
    later = dataclasses.replace(unread, detected_at=since + SECOND)  # opened after the gate began
    assert not outage_unread(later, since, safety_lag=SAFETY)
    assert not outage_unread(report(500, 990, cause=Cause.SWEEP), since, safety_lag=SAFETY)
    # Only up to now - safety lag: the newest seconds cannot be read yet by anyone.
    recent = report(500, 1000, cause=Cause.DISCONNECT, fresh_until=at(1000 - 5 - 1))
    assert not outage_unread(recent, since, safety_lag=SAFETY)


def test_the_gate_reads_a_report_until_it_is_read_ahead_then_leaves_its_proof_to_the_rounds() -> None:
    now = at(1000)
    unread = report(980, 995)
    assert left_to_read(unread, now, safety_lag=SAFETY)
    ahead = dataclasses.replace(unread, fresh_until=at(995))
    assert not left_to_read(ahead, now, safety_lag=SAFETY)  # open, waiting for the horizon
    tail = dataclasses.replace(unread, fresh_until=at(990))  # read up to the last gate's now - safety lag
    assert left_to_read(tail, now, safety_lag=SAFETY)
    assert not left_to_read(tail, at(994), safety_lag=SAFETY)  # nothing newer is readable yet
    partial = dataclasses.replace(unread, progress_until=at(985), outcome=Outcome.PARTIAL.value)
    assert left_to_read(partial, now, safety_lag=SAFETY)  # a failed window is tried again
    # A gate pass reads what left_to_read asks for: afterwards nothing is left.
    windows = windows_now(unread, 1000, fresh=True)
    assert not left_to_read(dataclasses.replace(unread, fresh_until=windows[-1].end), now, safety_lag=SAFETY)


def test_lag_horizons_subtract_a_host_clock_ahead_of_taobaos_and_ignore_one_behind() -> None:
    now = datetime(2026, 11, 11, 12, 0, tzinfo=UTC)
    overlap = timedelta(seconds=600)
    nothing: Any = None
    for taobao_minus_ours, shift in ((-300, -300), (300, 0), (1, 0)):
        skew = ClockSkew()
        skew.observe_answer(now + timedelta(seconds=taobao_minus_ours) - HALF, now, now)
        shared = Shared(
            small_config(), nothing, nothing, nothing, nothing, nothing, {}, lambda: now,
            skew=skew.horizon_offset,
        )  # fmt: skip
        horizon = lag_horizon(shared.horizon_now(), safety_lag=timedelta(seconds=1), overlap=overlap)
        assert horizon == now - overlap + timedelta(seconds=shift), taobao_minus_ours
