"""How a stretch of `modified` time is read through `taobao.trades.sold.increment.get`. Pure: no I/O,
no clock. The rules: docs/sync-rules.md#backward-paging, #overlap and #count-then-walk-back;
docs/top-api.md#trades-sold-increment-get and #data-delay.

* TOP times have one-second resolution, so every window boundary is a whole second; a window
  `[start, end]` is inclusive on both ends on the wire and proves the half-open `[start, end)`.
* The first window of a stretch starts `overlap` before it (docs/sync-rules.md#overlap: Taobao can write
  changes late).
* No window spans more than `max_span` (the API allows one day; the client refuses more than 23:59:59).
* Windows never straddle the lag horizon `now - max(safety lag, overlap)`. Below it a window is a
  *proof* window: every change in it is visible in the lists and none can enter while the pages are
  walked, so reading it completely proves it (docs/design.md#coverage-ledger). Above it a window is only a
  *fresh* read: it brings changes in early but proves nothing, and is read again once the horizon has passed
  it.
* Pages are walked from the last to the first (docs/sync-rules.md#backward-paging): a trade modified again
  during the walk leaves the window and shifts older rows towards page 1, which backward paging sees twice
  instead of never.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from common.intervals import Interval
from taobao.fields import MAX_INCREMENT_SPAN

SECOND = timedelta(seconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def floor_second(moment: datetime) -> datetime:
    """`moment` truncated to a whole second (TOP's resolution)."""
    return moment - timedelta(microseconds=moment.microsecond)


def ceil_second(moment: datetime) -> datetime:
    floored = floor_second(moment)
    return floored if floored == moment else floored + SECOND


@dataclass(frozen=True, slots=True)
class Window:
    """One increment query: `start_modified`..`end_modified`, whole seconds, both ends inclusive.
    `proof` windows lie below the lag horizon: reading one completely proves `[start, end)`."""

    start: datetime
    end: datetime
    proof: bool

    def __post_init__(self) -> None:
        if not self.start < self.end:
            raise ValueError("a window must end after it starts")
        if floor_second(self.start) != self.start or floor_second(self.end) != self.end:
            raise ValueError("window bounds must be whole seconds")
        if self.end - self.start > MAX_INCREMENT_SPAN:
            raise ValueError("a window may span at most 23:59:59")

    @property
    def proves(self) -> Interval:
        return Interval(self.start, self.end)

    @property
    def span(self) -> timedelta:
        return self.end - self.start

    def halves(self, min_span: timedelta) -> tuple[Window, Window] | None:
        """This window split at its middle second (after `isv.trade-service-rejection`), or None when
        the halves would be shorter than `min_span`."""
        seconds = int(self.span.total_seconds())
        half = seconds // 2
        if half < max(1, int(min_span.total_seconds())):
            return None
        middle = self.start + timedelta(seconds=half)
        return Window(self.start, middle, self.proof), Window(middle, self.end, self.proof)


def lag_horizon(now: datetime, *, safety_lag: timedelta, overlap: timedelta) -> datetime:
    """The newest `modified` time a list read can prove now: changes older than this are visible in
    the lists (given a list lag of at most `overlap`) and none can enter a window that ends here."""
    return floor_second(now - max(safety_lag, overlap))


def plan_windows(
    stretch: Interval,
    *,
    now: datetime,
    safety_lag: timedelta,
    overlap: timedelta,
    max_span: timedelta,
    floor: datetime | None = None,
    fresh: bool = True,
    fresh_from: datetime | None = None,
) -> list[Window]:
    """The windows that read `stretch`: the first starts `overlap` earlier (never before `floor`),
    proof windows up to the lag horizon, then (when `fresh`) fresh windows up to `now - safety_lag`,
    starting no earlier than `fresh_from` (what an earlier fresh read already brought in)."""
    if max_span > MAX_INCREMENT_SPAN:
        raise ValueError("max_span may be at most 23:59:59")
    if max_span < SECOND:
        raise ValueError("max_span must be at least one second")
    start = floor_second(stretch.start - overlap)
    if floor is not None:
        start = max(start, floor_second(floor))
    end = ceil_second(stretch.end)
    horizon = lag_horizon(now, safety_lag=safety_lag, overlap=overlap)
    newest = floor_second(now - safety_lag)
    windows = _split(start, min(end, horizon), max_span, proof=True)
    if fresh:
        fresh_start = max(start, horizon)
        if fresh_from is not None:
            fresh_start = max(fresh_start, floor_second(fresh_from))
        windows += _split(fresh_start, min(end, newest), max_span, proof=False)
    return windows


def _split(start: datetime, end: datetime, max_span: timedelta, *, proof: bool) -> list[Window]:
    """Touching windows of at most `max_span` from `start` to `end` (each boundary second is read by
    both neighbours: windows must touch, never leave a second out)."""
    windows: list[Window] = []
    step = timedelta(seconds=int(max_span.total_seconds()))
    cursor = start
    while cursor < end:
        stop = min(cursor + step, end)
        windows.append(Window(cursor, stop, proof))
        cursor = stop
    return windows


def page_count(total: int, page_size: int) -> int:
    if page_size < 1:
        raise ValueError("page_size must be positive")
    return max(0, math.ceil(total / page_size))


def backward_pages(total: int, page_size: int) -> list[int]:
    """Page numbers from the last to the first (docs/sync-rules.md#backward-paging)."""
    return list(range(page_count(total, page_size), 0, -1))


def day_windows(first_day_start: datetime, days: int) -> list[tuple[datetime, datetime]]:
    """`days` consecutive calendar days from `first_day_start` (a midnight), each as
    `(00:00:00, 23:59:59)`: the slices of a created-time load (docs/sync-rules.md#one-day-slices)."""
    return [
        (first_day_start + timedelta(days=i), first_day_start + timedelta(days=i + 1) - SECOND)
        for i in range(days)
    ]


def epoch_seconds(moment: datetime) -> int:
    return int((moment - _EPOCH).total_seconds())
