"""List lag, measured: how late Taobao's list indexes show a change (docs/top-api.md#data-delay: about ten
minutes at sale peaks). The overlap every window is shifted back by widens when the measured lag grows.

A sample is taken when a trade stored here with `modified` m inside a window is not in that window's
listing although fullinfo says it has not changed since: the list could not yet see a change that
happened `queried_at - m` ago. Samples are kept for `memory`; the overlap used is the larger of the
configured one and `factor` times the largest recent sample.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from datetime import datetime, timedelta

from taobao.fields import MAX_INCREMENT_SPAN

logger = logging.getLogger(__name__)


class LagMeter:
    def __init__(
        self,
        configured_overlap: timedelta,
        *,
        memory: timedelta = timedelta(hours=1),
        factor: float = 1.5,
    ) -> None:
        if factor < 1:
            raise ValueError("factor must be at least 1")
        self.configured_overlap = configured_overlap
        self.memory = memory
        self.factor = factor
        self._samples: deque[tuple[datetime, float]] = deque()
        self._last_overlap = configured_overlap

    def observe(self, seconds: float, at: datetime, shop: str | None = None) -> None:
        """One lag sample (seconds a change stayed invisible to the lists), seen at `at`."""
        if seconds <= 0:
            return
        self._samples.append((at, seconds))
        logger.info(
            "list lag sample: a change %.0f s old was not listed yet",
            seconds,
            extra={"action": "list_lag_sample", "shop": shop},
        )

    def measured(self, now: datetime) -> float | None:
        """The largest sample within `memory` of `now`, in seconds (None: no recent sample)."""
        horizon = now - self.memory
        while self._samples and self._samples[0][0] < horizon:
            self._samples.popleft()
        return max((s for _, s in self._samples), default=None)

    def overlap(self, now: datetime) -> timedelta:
        """The overlap to use now: never less than configured, widened to cover the measured lag."""
        overlap = self.configured_overlap
        lag = self.measured(now)
        if lag is not None:
            widened = timedelta(seconds=math.ceil(lag * self.factor))
            overlap = min(max(overlap, widened), MAX_INCREMENT_SPAN)
        if overlap != self._last_overlap:
            logger.warning(
                "increment overlap now %.0f s (configured %.0f s, measured list lag %s s)",
                overlap.total_seconds(),
                self.configured_overlap.total_seconds(),
                "none" if lag is None else f"{lag:.0f}",
                extra={"action": "overlap_changed"},
            )
            self._last_overlap = overlap
        return overlap
