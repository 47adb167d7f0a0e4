"""One TOP quota for every replica of the app (docs/design.md#one-quota across processes).

* **Share.** Each replica's limiter runs at SYNC_API_RATE ÷ live replicas, re-evaluated on every
  heartbeat round, so the app's calls per second stay within SYNC_API_RATE however many replicas run.
  A replica that joins takes its share at once; the others lower theirs within one round (a rate change
  never lets a burst through, see `TopRateLimiter.set_rate`). A replica that cannot heartbeat is
  counted out by the others, so it stops calling TOP until it can again.
* **Bans.** A code-7 ban one replica is answered pauses its own limiter (the TOP client does that) and
  is written to `api_bans` with a NOTIFY; every replica holds its calls until `ban_until` as soon as
  the notification arrives, and reads the row on each round in case one was missed. Times are the
  database's, so the replicas' clocks need not agree.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from store import replica_sql
from taobao.limiter import TopRateLimiter

logger = logging.getLogger(__name__)


class QuotaLink(Protocol):
    async def fetch(self, query: str, *args: Any) -> list[Any]: ...

    async def fetchrow(self, query: str, *args: Any) -> Any: ...


class SharedQuota:
    def __init__(self, limiter: TopRateLimiter, *, app_key: str, replica: str, rate: float) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.limiter = limiter
        self.app_key = app_key
        self.replica = replica
        self.rate = rate
        self.live = 1
        self.announced = 0  # bans this replica passed on
        self.followed = 0  # bans of other replicas this one held its calls for
        self._unannounced: float | None = None  # the longest local ban not yet written
        self._wake: list[Callable[[], None]] = []
        limiter.on_pause(self._local_ban)

    @property
    def share(self) -> float:
        return self.rate / max(1, self.live)

    def on_local_ban(self, wake: Callable[[], None]) -> None:
        """`wake()` is called when a local ban wants announcing (the heartbeat loop runs a round)."""
        self._wake.append(wake)

    def _local_ban(self, seconds: float) -> None:
        self._unannounced = max(seconds, self._unannounced or 0.0)
        for wake in self._wake:
            wake()

    async def apply_share(self, live: int) -> None:
        """Take this replica's share of the rate with `live` replicas running (itself included)."""
        live = max(1, live)
        if live != self.live:
            logger.info(
                "%d replica(s) share the TOP quota: %.2f calls/s here",
                live,
                self.rate / live,
                extra={"action": "quota_share_changed"},
            )
        self.live = live
        await self.limiter.set_rate(self.share)

    async def announce(self, link: QuotaLink) -> None:
        """Write a local ban for the other replicas (kept for the next round when this fails)."""
        seconds = self._unannounced
        if seconds is None:
            return
        await link.fetch(replica_sql.ANNOUNCE_BAN, self.app_key, seconds, self.replica)
        if self._unannounced == seconds:
            self._unannounced = None
        self.announced += 1
        logger.warning(
            "code-7 ban of %.0f s passed on to every replica",
            seconds,
            extra={"action": "quota_ban_announced", "seconds": seconds},
        )

    async def follow(self, link: QuotaLink) -> None:
        """Hold this replica's calls for what is left of the app's current ban, if any."""
        row = await link.fetchrow(replica_sql.BAN_LEFT, self.app_key)
        if row is None:
            return
        seconds = float(row["seconds"])
        if seconds > self.limiter.pause_remaining() + 0.05:
            self.followed += 1
            logger.warning(
                "holding TOP calls for %.1f s: replica %s was answered a code-7 ban",
                seconds,
                row["banned_by"],
                extra={"action": "quota_ban_followed", "seconds": seconds},
            )
        self.limiter.pause(seconds, announce=False)

    def stop_calls(self, seconds: float) -> None:
        """Out of the others' count (no heartbeat): hold every call, it would be beyond the quota."""
        self.limiter.pause(seconds, announce=False)
