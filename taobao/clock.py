"""How far Taobao's clock is from ours (docs/design.md#clock-skew), estimated from what Taobao sends.
Pure: samples in, an offset out.

Every TOP answer carries the gateway's time in its HTTP `Date` header (whole seconds). The server read
its clock somewhere between our send and our receipt, and within the second it names, so one answer
says: Taobao minus us ≈ (Date + 0.5 s) − (midpoint of send and receipt), give or take half the round
trip plus half a second. The estimate is the median of the recent samples, which a slow answer or one
odd header cannot move. A TMC message's `time` is when Taobao published it, before we received it, so
it bounds the offset from below (`observe_event`, `floor`); it is shown, never used to correct
anything: one message with a wrong time must not move a horizon.

`offset` is what the service uses: the estimate rounded to whole seconds, and zero within `dead_band`
(TOP times have one-second resolution; correcting by noise would only make our clock jitter).
`horizon_offset` is the part of it that makes lag horizons earlier, never later: a host clock ahead of
Taobao's is subtracted; one behind it already errs on the safe side.
"""

from __future__ import annotations

import functools
import statistics
from collections import deque
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Final

HALF_SECOND: Final = timedelta(milliseconds=500)
# Code 31: TOP refuses a request whose timestamp is more than 10 minutes off its clock.
TOP_TOLERANCE: Final = timedelta(minutes=10)


@functools.lru_cache(maxsize=4)  # one value per second: answers within it repeat the same text
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
        self._estimate: timedelta | None = None
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
        self._estimate = None

    def observe_event(self, published: datetime, received: datetime) -> None:
        """A TMC message Taobao stamped `published`, which reached us at `received` (our clock)."""
        self._floors.append((published - received).total_seconds())

    def estimate(self) -> timedelta | None:
        """The best guess of Taobao minus us from TOP answers, None before any."""
        if not self._samples:
            return None
        if self._estimate is None:  # every request asks; only a new sample changes it
            self._estimate = timedelta(seconds=statistics.median(self._samples))
        return self._estimate

    def floor(self) -> timedelta | None:
        """The least Taobao minus us that recent TMC messages imply, None before any."""
        return timedelta(seconds=max(self._floors)) if self._floors else None

    def offset(self) -> timedelta:
        """What to add to our clock to read Taobao's: whole seconds, zero within the dead band."""
        estimate = self.estimate()
        if estimate is None or abs(estimate) < self.dead_band:
            return timedelta(0)
        return timedelta(seconds=round(estimate.total_seconds()))

    def horizon_offset(self) -> timedelta:
        """The offset where it makes a horizon earlier (our clock ahead of Taobao's), else zero."""
        return min(self.offset(), timedelta(0))

    def taobao_now(self, now: datetime) -> datetime:
        """`now` (our clock) on Taobao's clock."""
        return now + self.offset()
