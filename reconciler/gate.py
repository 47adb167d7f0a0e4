"""Backfill before resume: the TMC session awaits the gate before every (re)connect.

The gate extends the outages going on up to now and, by default, reads every open report not read yet
before it returns (`reconciler.proof.left_to_read`), all shops at once with the shared limiter setting
the pace: proof windows up to the lag horizon, fresh windows up to `now - SYNC_SAFETY_LAG_SECONDS`, so
when the stream resumes the database already holds what was missed. A short outage, which the
horizon has not reached, is read ahead from where the stream's proof ended less the safety lag, not
an overlap before it (`reconciler.proof.read_ahead`); a report already read ahead is proven by the
rounds once the horizon passes it, not at a reconnect. How long the stream waited is
`reconciler_gate_seconds` here and, with the reconnect delay, `tmc_reconnect_stall_seconds`
(`listener.session`). With SYNC_STREAM_DURING_BACKFILL=true it returns at once and asks the side task
for a fresh round instead.

Several replicas: after backfilling the shops it leads, a replica waits for the other leaders' first
pass over the outages they know of (restart, disconnect, initial load) before it connects, so the
group's stream resumes after the backfill as with one replica. The wait ends early when another
replica is already connected (the group's queue is being consumed anyway: holding back would only
remove capacity), and after SYNC_GATE_PEER_WAIT_SECONDS at the latest, so a slow or stuck leader never
keeps the stream down. A shop taken over meanwhile (its leader died) is backfilled inside the wait.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

from reconciler.config import Shared
from reconciler.detection import GapDetector
from reconciler.proof import outage_unread

logger = logging.getLogger(__name__)

# Read the led shops' open reports not read yet; `fresh`: read above the lag horizon too.
Recover = Callable[[bool], Awaitable[None]]


class Gate:
    def __init__(
        self,
        shared: Shared,
        detector: GapDetector,
        recover: Recover,
        ask_fresh_round: Callable[[], None],
        *,
        several: bool,
    ) -> None:
        self._shared = shared
        self._detector = detector
        self._recover = recover
        self._ask_fresh_round = ask_fresh_round
        self._several = several
        self.last_seconds: float | None = None

    async def open(self) -> None:
        """Detect what was missed and (by default) backfill it before the stream resumes."""
        shared = self._shared
        started = time.monotonic()
        now = shared.now()
        await self._detector.start()
        await self._detector.extend_outages(now)
        if shared.config.stream_during_backfill:
            self._ask_fresh_round()
            return
        read_for = self._led()
        await self._recover(True)
        if self._several:
            # From after start(): this replica's own restart reports are among those waited for.
            await self._await_other_leaders(shared.now(), read_for)
        elapsed = time.monotonic() - started
        self.last_seconds = elapsed
        shared.metrics.gate_seconds.observe(elapsed)
        logger.info("backfill before resume took %.1f s", elapsed, extra={"action": "reconciler_gate_done"})

    async def _await_other_leaders(self, since: datetime, read_for: set[str]) -> None:
        """Until the leaders of the shops this replica does not lead have read the outages they know of,
        another replica is connected, or SYNC_GATE_PEER_WAIT_SECONDS have passed. Shops taken over
        meanwhile (their leader died) are backfilled here, also when the takeover lands while a read is
        going on: `read_for` is what this replica led when its last read began."""
        shared = self._shared
        coordination = shared.coordination
        deadline = time.monotonic() + shared.config.peer_wait_seconds
        while not coordination.peer_connected():
            led = self._led()
            if not led <= read_for:
                read_for = led  # taken over since the last read began: read them before connecting
                await self._recover(True)
                continue
            behind = [s for s in shared.shops if not coordination.leads(s) and await self._behind(s, since)]
            if not behind:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                logger.warning(
                    "connecting although %d shop(s) led by other replicas are still backfilling: %s",
                    len(behind),
                    ", ".join(behind),
                    extra={"action": "reconciler_gate_peer_timeout"},
                )
                return
            await coordination.changed(min(left, shared.config.tick_seconds))
            read_for = self._led()
            await self._recover(True)

    def _led(self) -> set[str]:
        return {shop for shop in self._shared.shops if self._shared.coordination.leads(shop)}

    async def _behind(self, shop: str, since: datetime) -> bool:
        safety_lag = self._shared.config.safety_lag
        return any(
            outage_unread(r, since, safety_lag=safety_lag)
            for r in await self._shared.reports.open_reports(shop)
        )
