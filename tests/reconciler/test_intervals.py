"""Ledger arithmetic and the window plan, checked against brute force over whole seconds."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.intervals import Interval, clip_all, covered_end, covers, gaps, normalize, total
from reconciler.plan import (
    Window,
    backward_pages,
    ceil_second,
    floor_second,
    lag_horizon,
    plan_windows,
)
from taobao.fields import MAX_INCREMENT_SPAN

T0 = datetime(2026, 11, 11, tzinfo=UTC)


def at(second: int) -> datetime:
    return T0 + timedelta(seconds=second)


spans = st.tuples(st.integers(0, 200), st.integers(1, 40)).map(lambda p: Interval(at(p[0]), at(p[0] + p[1])))
interval_sets = st.lists(spans, max_size=12)


def seconds_of(intervals: list[Interval]) -> set[int]:
    """Whole seconds s with [s, s+1) inside the union (bounds here are whole seconds)."""
    out: set[int] = set()
    for i in intervals:
        out |= set(range(int((i.start - T0).total_seconds()), int((i.end - T0).total_seconds())))
    return out


@given(interval_sets)
def test_normalize_is_sorted_disjoint_and_keeps_every_moment(intervals: list[Interval]) -> None:
    merged = normalize(intervals)
    assert seconds_of(merged) == seconds_of(intervals)
    for left, right in itertools.pairwise(merged):
        assert left.end < right.start  # neither overlapping nor touching
    assert normalize(merged) == merged


@given(interval_sets, st.integers(0, 250), st.integers(0, 250))
def test_gaps_are_exactly_the_uncovered_part_of_the_range(intervals: list[Interval], a: int, b: int) -> None:
    lo, hi = min(a, b), max(a, b)
    found = gaps(intervals, at(lo), at(hi))
    expected = set(range(lo, hi)) - seconds_of(intervals)
    assert seconds_of(found) == expected
    assert normalize(found) == found  # already canonical: no two gaps touch
    assert not seconds_of(found) & seconds_of(intervals)
    assert total(found) + total(clip_all(intervals, at(lo), at(hi))) == at(hi) - at(lo)


@given(interval_sets, st.integers(0, 250))
def test_covers_agrees_with_the_gaps(intervals: list[Interval], second: int) -> None:
    moment = at(second) + timedelta(milliseconds=500)
    uncovered = gaps(intervals, at(0), at(300))
    assert covers(intervals, moment) != covers(uncovered, moment)


def test_covered_end_and_empty_intervals() -> None:
    assert covered_end([]) is None
    assert covered_end([Interval(at(5), at(9)), Interval(at(1), at(3))]) == at(9)
    with pytest.raises(ValueError, match="empty"):
        Interval(at(3), at(3))
    with pytest.raises(ValueError, match="aware"):
        Interval(datetime(2026, 1, 1), datetime(2026, 1, 2))


def test_touching_intervals_merge() -> None:
    assert normalize([Interval(at(0), at(5)), Interval(at(5), at(7))]) == [Interval(at(0), at(7))]


@given(
    st.integers(0, 3 * 86400),
    st.integers(1, 3 * 86400),
    st.integers(0, 3600),
    st.integers(0, 120),
    st.integers(60, 86399),
    st.integers(0, 4 * 86400),
    st.integers(0, 999_999),
)
def test_plan_covers_the_stretch_with_touching_windows_that_never_straddle_the_horizon(
    start: int, length: int, overlap: int, safety: int, max_span: int, now_after: int, micro: int
) -> None:
    stretch = Interval(at(start) + timedelta(microseconds=micro), at(start + length))
    now = at(start) + timedelta(seconds=now_after, microseconds=micro)
    windows = plan_windows(
        stretch,
        now=now,
        safety_lag=timedelta(seconds=safety),
        overlap=timedelta(seconds=overlap),
        max_span=timedelta(seconds=max_span),
    )
    horizon = lag_horizon(now, safety_lag=timedelta(seconds=safety), overlap=timedelta(seconds=overlap))
    newest = floor_second(now - timedelta(seconds=safety))
    for w in windows:
        assert w.span <= timedelta(seconds=max_span) <= MAX_INCREMENT_SPAN
        assert floor_second(w.start) == w.start
        assert floor_second(w.end) == w.end
        assert w.end <= horizon if w.proof else (w.start >= horizon and w.end <= newest)
    for left, right in itertools.pairwise(windows):
        assert left.end == right.start  # touching: no second left out between two windows
        assert left.proof or not right.proof  # proof windows come first
    proofs = [w for w in windows if w.proof]
    if proofs:
        # docs/sync-rules.md#overlap
        assert proofs[0].start == floor_second(stretch.start - timedelta(seconds=overlap))
    # Everything of the stretch up to the newest readable moment is read; up to the horizon, proven.
    readable_end = min(ceil_second(stretch.end), newest)
    first = floor_second(stretch.start - timedelta(seconds=overlap))
    if first < readable_end:
        assert windows
        assert windows[0].start == first
        assert windows[-1].end == readable_end
    provable_end = min(ceil_second(stretch.end), horizon)
    if first < provable_end:
        assert proofs[-1].end == provable_end
    else:
        assert not proofs


def test_fresh_windows_can_be_left_out_and_can_start_later() -> None:
    stretch = Interval(at(0), at(1000))
    kwargs = {"now": at(1000), "safety_lag": timedelta(seconds=10), "overlap": timedelta(seconds=100)}
    only_proof = plan_windows(stretch, max_span=timedelta(hours=1), fresh=False, **kwargs)  # type: ignore[arg-type]
    assert [(w.start, w.end, w.proof) for w in only_proof] == [(at(-100), at(900), True)]
    later = plan_windows(stretch, max_span=timedelta(hours=1), fresh_from=at(950), **kwargs)  # type: ignore[arg-type]
    assert [(w.start, w.end, w.proof) for w in later] == [
        (at(-100), at(900), True),
        (at(950), at(990), False),
    ]


def test_window_halves_and_limits() -> None:
    window = Window(at(0), at(601), proof=True)
    halves = window.halves(timedelta(seconds=60))
    assert halves is not None
    assert (halves[0].start, halves[0].end, halves[1].start, halves[1].end) == (
        at(0),
        at(300),
        at(300),
        at(601),
    )
    assert Window(at(0), at(100), proof=True).halves(timedelta(seconds=60)) is None
    with pytest.raises(ValueError, match="23:59:59"):
        Window(at(0), at(86400), proof=True)
    Window(at(0), at(86399), proof=True)


@pytest.mark.parametrize(
    ("total_results", "pages"), [(0, []), (1, [1]), (100, [1]), (101, [2, 1]), (250, [3, 2, 1])]
)
def test_pages_go_from_the_last_to_the_first(total_results: int, pages: list[int]) -> None:
    assert backward_pages(total_results, 100) == pages
