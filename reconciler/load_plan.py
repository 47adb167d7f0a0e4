"""Planning a new shop's initial load (docs/sync-rules.md#plan-2, docs/sync-rules.md#plan-3). Pure: no
I/O, no clock.

The history is read by *created* time up to yesterday 23:59:59 (GMT+8), `days` days of it, then the
increment takes over by *modified* time from today 00:00:00 on. It is cut into parts that each resume
on their own: one TOPATS export task per `days_per_task` days (the doc asks big sellers to split three
months), or one day per part when read through sold.get (docs/sync-rules.md#one-day-slices).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from common.errors import OrderSyncError
from common.intervals import Interval, gaps
from store.initial_loads import TOPATS
from taobao.timefmt import GMT8

DAY = timedelta(days=1)
MAX_DAYS = 90  # the online window is three months (docs/top-api.md#three-month-window)


class InitialLoadFailed(OrderSyncError):
    """A part of the initial load could not be completed now; the load resumes from that part later."""


@dataclass(frozen=True, slots=True)
class InitialLoadConfig:
    days_per_task: int = 30
    poll_seconds: float = 30.0  # the longest wait between taobao.topats.result.get calls
    first_poll_seconds: float = 1.0  # the first wait; it doubles up to poll_seconds
    max_wait_seconds: float = 6 * 3600.0  # tasks "usually finish in 30-60 minutes"
    batch: int = 2000  # trades per store transaction
    writers: int = 2  # store transactions in flight at once
    download_attempts: int = 3  # each with a fresh single-use URL
    # Where downloads go (SYNC_TEMP_DIR). None: the system's temporary directory, or memory without one.
    workdir: Path | None = None


def local_midnight(moment: datetime) -> datetime:
    """The GMT+8 midnight that starts `moment`'s day on Taobao's calendar."""
    local = moment.astimezone(GMT8)
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def history_span(now: datetime, days: int) -> Interval:
    """The created-time range an initial load reads: the `days` whole GMT+8 days before today."""
    if not 1 <= days <= MAX_DAYS:
        raise ValueError("an initial load covers 1 to 90 days (the online window is three months)")
    until = local_midnight(now)
    return Interval(until - days * DAY, until)


def split(span: Interval, method: str, *, days_per_task: int) -> list[Interval]:
    """`span` cut into the parts of `method`: `days_per_task` days per TOPATS task, a day per sold.get
    part; touching, in order, the last one shorter when the span does not divide evenly."""
    step = days_per_task * DAY if method == TOPATS else DAY
    parts: list[Interval] = []
    cursor = span.start
    while cursor < span.end:
        end = min(cursor + step, span.end)
        parts.append(Interval(cursor, end))
        cursor = end
    return parts


def remaining(span: Interval, done: Iterable[Interval], method: str, *, days_per_task: int) -> list[Interval]:
    """The parts that read what no finished part of `span` read (after a switch of method)."""
    return [
        part
        for hole in gaps(done, span.start, span.end)
        for part in split(hole, method, days_per_task=days_per_task)
    ]
