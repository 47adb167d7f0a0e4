"""How far Taobao's clock is from ours (docs/design.md#clock-skew), estimated from what Taobao sends.
Pure: samples in, an offset out.

Every TOP answer carries the gateway's time in its HTTP `Date` header (whole seconds). The server read
its clock somewhere between our send and our receipt, and within the second it names, so one answer
says: Taobao minus us ≈ (Date + 0.5 s) − (midpoint of send and receipt), give or take half the round
trip plus half a second. The estimate is the median of the recent samples, which a slow answer or one
odd header cannot move. A TMC message's `time` is when Taobao published it, before we received it, so
it bounds the offset from below: a message stamped later than our clock, corrected by the estimate,
says Taobao is ahead by at least that much (`observe_event`).

`offset` is what the service uses: the estimate rounded to whole seconds, and zero within `dead_band`
(TOP times have one-second resolution; correcting by noise would only make our clock jitter).
"""

from __future__ import annotations

import statistics
from collections import deque
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Final

HALF_SECOND: Final = timedelta(milliseconds=500)
# Code 31: TOP refuses a request whose timestamp is more than 10 minutes off its clock.
TOP_TOLERANCE: Final = timedelta(minutes=10)


def parse_http_date(value: str | None) -> datetime | None:
    """An HTTP `Date` header (RFC 9110 IMF-fixdate) as an aware datetime, or None when unusable."""
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed if parsed.tzinfo is not None else None


class ClockSkew:
    """Taobao's clock minus ours, from the last `window` samples."""

    def __init__(self, *, window: int = 31, dead_band: timedelta = timedelta(seconds=2)) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self._samples: deque[float] = deque(maxlen=window)
        self._floors: deque[float] = deque(maxlen=window)  # the least offsets TMC messages imply
        self.dead_band = dead_band

    @property
    def samples(self) -> int:
        return len(self._samples)

    def observe_answer(self, server_date: datetime, sent: datetime, received: datetime) -> None:
        """One TOP answer stamped `server_date` (whole seconds), sent and received at our times."""
        if received < sent:
            sent, received = received, sent
        midpoint = sent + (received - sent) / 2
        self._samples.append((server_date + HALF_SECOND - midpoint).total_seconds())

    def observe_event(self, published: datetime, received: datetime) -> None:
        """A TMC message Taobao stamped `published`, which reached us at `received` (our clock)."""
        self._floors.append((published - received).total_seconds())

    def estimate(self) -> timedelta | None:
        """The best guess of Taobao minus us, None before any sample."""
        floor = max(self._floors) if self._floors else None
        if not self._samples:
            return None if floor is None else timedelta(seconds=max(floor, 0.0))
        seconds = statistics.median(self._samples)
        if floor is not None and floor > seconds:
            seconds = floor
        return timedelta(seconds=seconds)

    def offset(self) -> timedelta:
        """What to add to our clock to read Taobao's: whole seconds, zero within the dead band."""
        estimate = self.estimate()
        if estimate is None or abs(estimate) < self.dead_band:
            return timedelta(0)
        return timedelta(seconds=round(estimate.total_seconds()))

    def taobao_now(self, now: datetime) -> datetime:
        """`now` (our clock) on Taobao's clock."""
        return now + self.offset()
