"""Interval arithmetic for the coverage ledger (docs/design.md#coverage-ledger). Pure: no I/O, no clock.

Intervals are half-open, `[start, end)`, over aware datetimes of `modified` time. Two intervals that
touch (`a.end == b.start`) leave nothing between them, so they merge.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True, order=True)
class Interval:
    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("interval bounds must be timezone-aware")
        if not self.start < self.end:
            raise ValueError(f"empty interval: {self.start.isoformat()} .. {self.end.isoformat()}")

    @property
    def length(self) -> timedelta:
        return self.end - self.start

    def contains(self, moment: datetime) -> bool:
        return self.start <= moment < self.end

    def overlaps_or_touches(self, other: Interval) -> bool:
        return self.start <= other.end and other.start <= self.end

    def clip(self, lo: datetime, hi: datetime) -> Interval | None:
        """The part of this interval within `[lo, hi)`, or None when nothing is left."""
        start, end = max(self.start, lo), min(self.end, hi)
        return Interval(start, end) if start < end else None


def normalize(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, with overlapping and touching intervals merged: the canonical form of a set of times."""
    merged: list[Interval] = []
    for current in sorted(intervals):
        if merged and current.start <= merged[-1].end:
            last = merged[-1]
            if current.end > last.end:
                merged[-1] = Interval(last.start, current.end)
        else:
            merged.append(current)
    return merged


def gaps(covered: Iterable[Interval], lo: datetime, hi: datetime) -> list[Interval]:
    """The parts of `[lo, hi)` that no interval of `covered` contains, in order."""
    if not lo < hi:
        return []
    found: list[Interval] = []
    cursor = lo
    for interval in normalize(covered):
        if interval.end <= cursor:
            continue
        if interval.start >= hi:
            break
        if interval.start > cursor:
            found.append(Interval(cursor, interval.start))
        cursor = max(cursor, interval.end)
        if cursor >= hi:
            break
    if cursor < hi:
        found.append(Interval(cursor, hi))
    return found


def clip_all(intervals: Iterable[Interval], lo: datetime, hi: datetime) -> list[Interval]:
    """`intervals` cut to `[lo, hi)`, normalized."""
    return normalize(part for i in intervals if (part := i.clip(lo, hi)) is not None)


def covers(covered: Iterable[Interval], moment: datetime) -> bool:
    """Whether `moment` lies in one of `covered`."""
    return any(interval.contains(moment) for interval in covered)


def total(intervals: Iterable[Interval]) -> timedelta:
    """The length of the union of `intervals`."""
    return sum((i.length for i in normalize(intervals)), timedelta())


def covered_end(covered: Iterable[Interval]) -> datetime | None:
    """Where the last covered interval ends (None when nothing is covered)."""
    merged = normalize(covered)
    return merged[-1].end if merged else None
