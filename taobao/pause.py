"""The app-wide pause (docs/design.md#app-wide-pause): after an app-wide TOP failure no call goes out
but one probe at a time, on a capped, jittered backoff (`common.backoff`), until a probe is answered.

An app-wide failure (`taobao.taxonomy.Scope.APP`: permissions, signature, clock, an unknown code, a
proxy's answer) means no call of the app can succeed, whichever trade or shop it is for. So the first
one trips the pause; every later call waits in `admit` instead of failing in turn (and being taken for
its trade's fault). When the next probe is due, one waiting call goes out as the probe: an answer that
is not app-wide (a trade, an empty page, even `isv.trade-not-exist` or an expired session) clears the
pause and lets everyone through; another app-wide answer keeps it and the next probe waits longer; a
transient error (network, `isp.*`, a ban) says nothing and waits for the next probe too. The state
changes (paused, cleared) are logged once each, never once per call.

Only the calls the service cannot sync without trip it (`PAUSING_METHODS`: fullinfo and the two list
calls); an app-wide answer to another call (a TOPATS export the app has no permission for) goes back
to its caller, which has another way. Pure asyncio, no I/O: the transport calls `admit` and `settle`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from common.backoff import Backoff, BackoffPolicy
from taobao.errors import TopError
from taobao.fields import TRADE_FULLINFO_GET, TRADES_SOLD_GET, TRADES_SOLD_INCREMENT_GET
from taobao.taxonomy import Scope

logger = logging.getLogger(__name__)

PAUSING_METHODS: Final = frozenset({TRADE_FULLINFO_GET, TRADES_SOLD_GET, TRADES_SOLD_INCREMENT_GET})
# First probe after 5 s, doubling to 5 minutes, jittered; the schedule starts again from 5 s only once
# the app has worked for `reset_after` seconds, so a failure that comes and goes is probed slowly.
PROBE_POLICY: Final = BackoffPolicy(base=5.0, cap=300.0, reset_after=300.0)


@dataclass(frozen=True, slots=True)
class PauseState:
    """What readiness, metrics and `order-sync check` show of the pause."""

    paused: bool
    reason: str | None  # the app-wide failure that tripped it (or that the last probe got)
    since: datetime | None  # wall time it tripped
    pauses: int  # times it tripped since start
    probes: int  # probes sent during the current pause
    next_probe_in: float  # seconds until the next probe may go out (0 when not paused)


class AppPause:
    """All fetching of the app held behind one probe while an app-wide failure lasts."""

    def __init__(
        self,
        policy: BackoffPolicy = PROBE_POLICY,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self._delays = Backoff(policy, rng)
        self._clock = clock
        self._reason: str | None = None
        self._since: datetime | None = None
        self._next_probe = 0.0
        self._probing = False
        self._probes = 0
        self._pauses = 0
        self._cleared_at = -math.inf
        self._changed: asyncio.Event | None = None

    @property
    def paused(self) -> bool:
        return self._reason is not None

    def state(self) -> PauseState:
        wait = max(0.0, self._next_probe - self._clock()) if self.paused else 0.0
        return PauseState(self.paused, self._reason, self._since, self._pauses, self._probes, wait)

    async def admit(self) -> bool:
        """Wait until a call may go out. True: this call is the probe, and must be `settle`d."""
        while self.paused:
            delay = self._next_probe - self._clock()
            if not self._probing and delay <= 0:
                self._probing = True
                self._probes += 1
                return True
            changed = self._event()
            try:
                # The probe's end (or the clear) wakes us; so does the time the next probe is due.
                async with asyncio.timeout(None if self._probing else max(delay, 0.0)):
                    await changed.wait()
            except TimeoutError:
                pass
        return False

    def settle(self, method: str, error: BaseException | None, *, probe: bool) -> None:
        """How a call admitted by `admit` ended: None for an answer, else what it raised."""
        scope = error.scope if isinstance(error, TopError) else None
        if scope is Scope.APP and (method in PAUSING_METHODS or probe):
            self._trip(method, str(error), probe=probe)
        elif not probe:
            return
        elif error is None or scope in (Scope.TRADE, Scope.SHOP):
            self._clear(method)
        else:
            # Network, isp.*, a ban, a defect or a cancel: no word on the app-wide failure.
            self._probing = False
            self._next_probe = self._clock() + self._delays.next_delay()
            self._wake()

    def _trip(self, method: str, reason: str, *, probe: bool) -> None:
        now = self._clock()
        if not self.paused:
            if now - self._cleared_at >= self.policy.reset_after:
                self._delays.reset()
            self._reason, self._since, self._probes = reason, datetime.now(UTC), 0
            self._pauses += 1
            self._next_probe = now + self._delays.next_delay()
            logger.error(
                "TOP calls paused for the whole app: %s",
                reason,
                extra={"action": "top_app_paused", "method": method},
            )
        elif probe:
            self._reason = reason
            self._next_probe = now + self._delays.next_delay()
        if probe:
            self._probing = False
        self._wake()

    def _clear(self, method: str) -> None:
        now = self._clock()
        if self.paused:
            since = self._since or datetime.now(UTC)
            seconds = (datetime.now(UTC) - since).total_seconds()
            logger.warning(
                "TOP calls resumed after %.0f s and %d probe(s)",
                seconds,
                self._probes,
                extra={"action": "top_app_resumed", "method": method, "seconds": seconds},
            )
        self._reason, self._since, self._probing = None, None, False
        self._cleared_at = now
        self._wake()

    def _event(self) -> asyncio.Event:
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    def _wake(self) -> None:
        # A fresh event per change: waiters of the old one wake, later waiters wait for the next.
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def __repr__(self) -> str:
        return f"AppPause(paused={self.paused}, pauses={self._pauses}, probes={self._probes})"
