"""Planning an initial load (reconciler/load_plan.py), pure: the GMT+8 days it reads, its parts, and what
is left to read after a switch from TOPATS to sold.get."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.intervals import Interval, gaps, normalize, total
from reconciler.load_plan import DAY, history_span, local_midnight, remaining, split
from store.initial_loads import SOLD_GET, TOPATS
from taobao.timefmt import GMT8


def test_the_history_ends_at_todays_midnight_on_taobaos_calendar() -> None:
    # 17:30 UTC on the 10th is 01:30 GMT+8 on the 11th: today began at 16:00 UTC on the 10th.
    now = datetime(2026, 11, 10, 17, 30, tzinfo=UTC)
    assert local_midnight(now) == datetime(2026, 11, 11, tzinfo=GMT8)
    span = history_span(now, 90)
    assert span.end == datetime(2026, 11, 11, tzinfo=GMT8)
    assert span.end - span.start == 90 * DAY
    with pytest.raises(ValueError, match="1 to 90 days"):
        history_span(now, 91)
    with pytest.raises(ValueError, match="1 to 90 days"):
        history_span(now, 0)


def test_topats_parts_span_days_per_task_and_sold_get_parts_one_day() -> None:
    span = history_span(datetime(2026, 11, 11, 5, tzinfo=UTC), 90)
    topats = split(span, TOPATS, days_per_task=30)
    assert [p.end - p.start for p in topats] == [30 * DAY] * 3
    seven = history_span(datetime(2026, 11, 11, 5, tzinfo=UTC), 7)
    assert [p.end - p.start for p in split(seven, TOPATS, days_per_task=3)] == [3 * DAY, 3 * DAY, DAY]
    assert [p.end - p.start for p in split(seven, SOLD_GET, days_per_task=3)] == [DAY] * 7


days = st.integers(1, 90)


@given(days=days, per_task=st.integers(1, 40), method=st.sampled_from([TOPATS, SOLD_GET]))
def test_parts_touch_and_cover_the_span_exactly(days: int, per_task: int, method: str) -> None:
    span = history_span(datetime(2026, 11, 11, 5, tzinfo=UTC), days)
    parts = split(span, method, days_per_task=per_task)
    assert parts[0].start == span.start
    assert parts[-1].end == span.end
    assert all(left.end == right.start for left, right in itertools.pairwise(parts))
    assert all(p.end - p.start <= (per_task * DAY if method == TOPATS else DAY) for p in parts)


@given(days=days, done=st.lists(st.integers(0, 89), max_size=10))
def test_after_a_switch_the_days_left_are_exactly_those_no_finished_part_read(
    days: int, done: list[int]
) -> None:
    span = history_span(datetime(2026, 11, 11, 5, tzinfo=UTC), days)
    finished = [
        Interval(span.start + d * DAY, min(span.start + (d + 2) * DAY, span.end)) for d in done if d < days
    ]
    left = remaining(span, finished, SOLD_GET, days_per_task=30)
    assert normalize(left) == gaps(finished, span.start, span.end)
    assert total(left) + total(finished) == span.end - span.start
    assert all(p.end - p.start <= DAY for p in left)
    assert all(p.start >= span.start and p.end <= span.end for p in left)
    assert not any(p.start < f.end and f.start < p.end for p in left for f in finished)
    assert all((p.start - span.start) % DAY == timedelta(0) for p in left)  # whole days
