"""The reconciler's proof rules, pure: no I/O, no clock (docs/design.md#coverage-ledger). What the stream
proves is `reconciler.stream_watch`; how a stretch is cut into windows is `reconciler.plan`.

* Which windows of a gap report to read now (`pass_windows`): from where its proof stands (trimmed by
  what the ledger already proves, for outages), proof windows up to the lag horizon, fresh ones above
  it when asked for; nothing while a report read ahead waits for the horizon (`waits_for_horizon`).
  A fresh pass over a report the horizon has not reached yet (the gate after a short outage) reads
  from the outage's start, less the safety lag, not an overlap before it (`read_ahead`), and passes
  over a report already read that far (`left_to_read`).
* When a report is done (`conclusion`): recovered once proven to its end and no unresolved trade
  belongs to its window (docs/design.md#unresolved-trades-block-proof); partial or failed when a window
  failed, by whether retrying can help.
* What a sweep may cover (`sweep_span`): from where the last sweep ended (the first starts where this
  process's stream did) to the lag horizon, no further than the stream's own proof and never into a
  window an open report owns.
* Where a sweep may apply the versions fullinfo answers with (`sweep_applies`): inside its windows
  (never into an open report's) or where the stream claimed the time.
* The gaps a restart and a disconnect leave (`restart_gap`, `disconnect_gap`), and whether an outage
  report is still unread for the gate (`outage_unread`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from common.intervals import Interval, gaps, normalize
from reconciler.fetching import Failure
from reconciler.plan import SECOND, Window, floor_second, lag_horizon, plan_windows
from store.gap_reports import Cause, GapReport, Outcome, StreamConnection

# The outages: reports the gate waits for when another replica leads their shop.
OUTAGE_CAUSES = frozenset({Cause.RESTART.value, Cause.DISCONNECT.value, Cause.INITIAL_LOAD.value})
# Reports whose windows may already be proven by someone else (another replica's stream proved this
# one's outage; a duplicate report of one restart was read already): what is proven is not read again.
TRIMMED_CAUSES = frozenset({Cause.RESTART.value, Cause.DISCONNECT.value})


def history_loading(report: GapReport) -> bool:
    """An initial load's report before its history is in: the increment starts where the load ends."""
    return report.cause == Cause.INITIAL_LOAD.value and report.progress_until is None


def proven_until(start: datetime, proven: Iterable[Interval]) -> datetime:
    """How far `proven` (normalized, by start) reaches from `start` on without a hole."""
    for interval in proven:
        if interval.start <= start < interval.end:
            start = interval.end
    return start


def pass_windows(
    report: GapReport,
    proven_from: datetime,
    *,
    now: datetime,
    safety_lag: timedelta,
    overlap: timedelta,
    max_span: timedelta,
    fresh: bool,
) -> list[Window]:
    """The windows one pass over `report` reads now, its proof standing at `proven_from` (empty: nothing
    to read yet). A fresh pass before the horizon has reached `proven_from` (the reconnect gate after a
    short outage) reads only `read_ahead`: the overlap is the proof pass's to read."""
    if fresh and lag_horizon(now, safety_lag=safety_lag, overlap=overlap) <= proven_from:
        return read_ahead(
            report, proven_from, now=now, safety_lag=safety_lag, overlap=overlap, max_span=max_span
        )
    windows = plan_windows(
        Interval(proven_from, report.window_end),
        now=now,
        safety_lag=safety_lag,
        overlap=overlap,
        max_span=max_span,
        fresh=fresh,
        fresh_from=report.fresh_until,
    )
    if not windows or waits_for_horizon(report, proven_from, windows, fresh=fresh, max_span=max_span):
        return []
    return windows


def read_ahead(
    report: GapReport,
    proven_from: datetime,
    *,
    now: datetime,
    safety_lag: timedelta,
    overlap: timedelta,
    max_span: timedelta,
) -> list[Window]:
    """The fresh windows of a report the lag horizon has not reached: from a safety lag before where its
    proof stands (the outage's start: the stream proved the time before it) or where an earlier fresh
    read ended, up to `now - safety_lag`. Nothing in them can be proven yet, so they start at the
    outage, not an overlap before it: once the horizon has passed the report's end, its proof pass
    reads it again from an overlap before `proven_from` (docs/sync-rules.md#overlap), and only that
    proves it. A proof window now would prove only the overlap before the report, which that pass
    reads again anyway."""
    start = floor_second(proven_from - safety_lag)
    if report.fresh_until is not None:
        start = max(start, floor_second(report.fresh_until))
    windows = plan_windows(
        Interval(proven_from, report.window_end),
        now=now,
        safety_lag=safety_lag,
        overlap=overlap,
        max_span=max_span,
        fresh_from=start,
    )
    return [w for w in windows if not w.proof]


def waits_for_horizon(
    report: GapReport, proven_from: datetime, windows: Sequence[Window], *, fresh: bool, max_span: timedelta
) -> bool:
    """Leave a report that was read ahead alone until the lag horizon passes its end (or a full window
    is provable): proving it a few seconds per round as the horizon creeps forward costs a list call per
    round and fetches nothing new."""
    if fresh or not all(w.proof for w in windows):
        return False
    end = windows[-1].end
    if end <= proven_from:
        return True  # the horizon has not passed what is proven: the window would prove nothing new
    return (
        report.fresh_until is not None
        and end < report.window_end
        and end <= report.fresh_until
        and end - windows[0].start < max_span
    )


def is_recovered(report: GapReport, *, unresolved: int = 0) -> bool:
    """Proven to the end of its window, and none of the shop's unresolved trades belongs to it."""
    return report.proven_from >= report.window_end and unresolved == 0


def conclusion(report: GapReport, failure: Failure | None, *, unresolved: int = 0) -> Outcome | None:
    """The outcome after a pass (`report` as the pass left it; `unresolved`: the shop's unresolved
    trades that belong to its window): None while it stays open, waiting for the horizon to pass the
    rest of its window, or for its unresolved trades to be stored."""
    if failure is not None:
        return failed(failure)
    return Outcome.RECOVERED if is_recovered(report, unresolved=unresolved) else None


def failed(failure: Failure) -> Outcome:
    """Partial (open, tried again) when retrying can help; failed for good when it cannot."""
    return Outcome.PARTIAL if failure.retryable else Outcome.FAILED


def sweep_span(
    *,
    last_sweep_end: datetime | None,
    stream_started: datetime | None,
    sync_from: datetime,
    stream_end: datetime | None,
    open_starts: Iterable[datetime],
    horizon: datetime,
) -> Interval | None:
    """What a sweep of one shop may read now (None: nothing). From where the last sweep ended; the
    first sweep starts where this process's stream started (the time before belongs to the initial-load
    and restart reports), never before the ledger does (`sync_from`). Up to the lag horizon, no further
    than the stream's proof (the sweep checks what the stream claimed; stretches it did not claim are
    the gap reports'), and not into the window of an open report (it owns its window: the sweep waits
    behind it rather than racing it)."""
    since = last_sweep_end or stream_started
    if since is None or stream_end is None:
        return None
    since = max(since, sync_from)
    upper = floor_second(min([horizon, stream_end, *open_starts]))
    return Interval(since, upper) if since < upper else None


def sweep_applies(
    windows: Sequence[Window], stream_cover: Iterable[Interval], open_windows: Iterable[Interval] = ()
) -> list[Interval]:
    """Where a sweep that read `windows` may apply a version fullinfo answered with. That is a trade's
    newest version, often modified after the windows (a lag probe, a trade changed again since it was
    listed): its change is push loss where the stream claimed its time (`stream_cover`, which reaches to
    where the stream's proof ends). A version outside the windows and that cover is left alone: its
    push may still be on its way, or it falls in an outage whose report must bring it in.

    Nothing is applied in an open report's window (`open_windows`), from the whole second it starts
    in: `modified` has one-second resolution, so a change just after a cut can carry a `modified` before
    the disconnect report's start, and the sweep, which lists its last window's end second too, would
    store a trade the outage withheld; the report would then find it stored and never count it."""
    read_upto = windows[-1].end + SECOND  # a window's end second is listed too
    owned = normalize([Interval(windows[0].start, read_upto), *stream_cover])
    owners = normalize(Interval(floor_second(w.start), w.end) for w in open_windows)
    return [part for interval in owned for part in gaps(owners, interval.start, interval.end)]


def restart_gap(ledger_end: datetime, open_ends: Iterable[datetime], now: datetime) -> Interval | None:
    """What a process that starts at `now` has missed: from where the ledger (or an open report, already
    reading it) ends."""
    end = max([ledger_end, *open_ends])
    return Interval(end, now) if end < now else None


def disconnect_gap(proven_end: datetime | None, segment_start: datetime, at: datetime) -> Interval | None:
    """What a disconnect at `at` leaves unproven: from where the stream's recorded proof of the segment
    ends (its start when nothing was recorded)."""
    start = min(proven_end or segment_start, at)
    return Interval(start, at) if start < at else None


def left_to_read(report: GapReport, now: datetime, *, safety_lag: timedelta) -> bool:
    """Is part of `report`'s window up to `now - safety_lag` read neither as proof nor ahead (less a
    second)? The gate reads those before the stream resumes; a report read that far waits for its proof
    pass, which the rounds make once the lag horizon has passed it."""
    target = floor_second(min(report.window_end, now - safety_lag)) - SECOND
    return max(report.proven_from, report.fresh_until or report.window_start) < target


def stream_up_between(connections: Iterable[StreamConnection], start: datetime, end: datetime) -> bool:
    """Was some replica's TMC connection up between `start` and `end`? Then an outage report that ends
    at `start` was ended by that connection, and a later reconnect at `end` does not extend it:
    extended at every reconnect, a report kept open by the lag horizon would never be passed by it,
    and every gate would read its newest seconds again. Only connections with a recorded end count:
    one without is the one just made, or one of a process that died, up for no known time (extending
    is the safe side)."""
    return any(
        c.disconnected_at is not None and c.connected_at < end and c.disconnected_at > start
        for c in connections
    )


def outage_unread(report: GapReport, since: datetime, *, safety_lag: timedelta) -> bool:
    """An outage report opened by `since` that its leader has not read up to `since` (less the safety
    lag, as a fresh read does) nor given up on."""
    if report.cause not in OUTAGE_CAUSES or report.outcome is not None or report.detected_at > since:
        return False
    target = floor_second(min(report.window_end, since - safety_lag)) - SECOND
    return max(report.proven_from, report.fresh_until or report.window_start) < target
