"""When each led shop is swept next, by how recently it changed (docs/operations.md#idle-shops).

A seller with no change for a day needs no sweep every few minutes: a shop with no change seen (no
push, nothing found by its lists) for SYNC_SWEEP_IDLE_AFTER_SECONDS is swept every
SYNC_SWEEP_IDLE_SECONDS instead of every SYNC_SWEEP_SECONDS. Its proof still advances: the next sweep
reads from where the last one ended (a longer stretch, a window of up to `max_span` each), and a push
for an idle shop makes it active again at once: its next sweep is due one active period after its
last. The whole schedule still keeps within SYNC_RECONCILE_SHARE of the quota (`sweep_interval`), an
idle shop counting for the share of the sweeps it makes.

Pure but for what it is told: the reconciler reports pushes (`StreamWatch.last_push`), what a sweep
found, and asks which shops are due.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime

from reconciler.config import ReconcilerConfig, sweep_interval


class SweepSchedule:
    def __init__(self, config: ReconcilerConfig, started: datetime) -> None:
        self._config = config
        self._started = started  # nothing seen before: every shop counts as changed at start
        self._swept: dict[str, datetime] = {}  # when each shop's last sweep ran
        self._found: dict[str, datetime] = {}  # when a sweep last found a trade changed

    def changed_at(self, shop: str, pushes: Mapping[str, datetime]) -> datetime:
        """The last change seen of `shop`: a push, a sweep that found one, or the start."""
        return max(self._started, pushes.get(shop, self._started), self._found.get(shop, self._started))

    def idle(self, shop: str, now: datetime, pushes: Mapping[str, datetime]) -> bool:
        idle_after = self._config.idle_after
        return idle_after is not None and now - self.changed_at(shop, pushes) >= idle_after

    def intervals(
        self, shops: Iterable[str], now: datetime, pushes: Mapping[str, datetime]
    ) -> dict[str, float]:
        """Seconds between two sweeps of each of `shops` (the led ones) as things stand."""
        led = list(shops)
        idle = {shop for shop in led if self.idle(shop, now, pushes)}
        every = self._config.sweep_every.total_seconds()
        idle_every = max(self._config.idle_sweep_every.total_seconds(), every)
        # An idle shop sweeps every/idle_every as often as an active one: it weighs that much.
        weight = len(led) - len(idle) + math.ceil(len(idle) * every / idle_every)
        active = sweep_interval(self._config, weight)
        slow = max(idle_every, active)
        return {shop: slow if shop in idle else active for shop in led}

    def due(self, shops: Iterable[str], now: datetime, pushes: Mapping[str, datetime]) -> list[str]:
        """The shops of `shops` whose next sweep has come."""
        out = []
        for shop, seconds in self.intervals(shops, now, pushes).items():
            last = self._swept.get(shop, self._started)
            if (now - last).total_seconds() >= seconds:
                out.append(shop)
        return out

    def swept(self, shop: str, now: datetime, *, found: int) -> None:
        """`shop` was swept at `now`; `found`: trades its windows held (changes the lists saw)."""
        self._swept[shop] = now
        if found:
            self._found[shop] = now

    def forget(self, shop: str) -> None:
        self._swept.pop(shop, None)
        self._found.pop(shop, None)
