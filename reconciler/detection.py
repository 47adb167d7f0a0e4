"""Gap detection: every way the service can miss changes opens a gap report (`store.gap_reports`).

* restart: at the first gate, the time from the ledger's end to now (the process was down); a new
  shop gets its initial load instead (`reconciler.new_shops`);
* disconnect: on every TMC disconnect, from where the stream's proof ends to the reconnect; the report
  of an outage still going on is extended up to the reconnect;
* silence: a connected shop that normally trades and sends nothing for SYNC_SILENCE_SECONDS;
* ledger holes: stretches between proven ones that no report covers (a safety net: there should be
  none).

What the connected stream proves is recorded here too (`flush_stream`): the ledger's stream stretches,
whose complement is the gaps.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import datetime

from common.intervals import Interval, gaps, normalize
from reconciler.config import Shared
from reconciler.new_shops import NewShops
from reconciler.proof import OUTAGE_CAUSES, disconnect_gap, restart_gap, stream_up_between
from reconciler.stream_watch import StreamWatch
from store.coverage import ProvenBy
from store.gap_reports import Cause, GapReport

logger = logging.getLogger(__name__)

# What `listener.session` gives as the reason when the connection ended because the session was stopped.
SESSION_STOPPED = "stopped"


async def open_gap(
    shared: Shared, shop: str, cause: Cause, window: Interval, *, detected_at: datetime | None = None
) -> GapReport:
    """Open a gap report (counted and logged)."""
    report = await shared.reports.create(shop, cause, window, detected_at=detected_at or shared.now())
    shared.metrics.gaps_opened.inc(cause=cause.value)
    logger.warning(
        "gap detected (%s): %s .. %s",
        cause.value,
        window.start.isoformat(),
        window.end.isoformat(),
        extra={"action": "gap_detected", "shop": shop},
    )
    return report


class GapDetector:
    def __init__(self, shared: Shared, watch: StreamWatch, new_shops: NewShops, *, several: bool) -> None:
        self._shared = shared
        self.watch = watch
        self.new_shops = new_shops
        self._several = several
        self.outage: dict[str, int] = {}  # shop → the report of the outage going on (or just over)
        self.first_connected_at: datetime | None = None
        self._connection_id: int | None = None
        self._started = False
        self._start_lock = asyncio.Lock()
        self._looked_at: set[str] = set()  # shops `_at_start` ran for since they were last served

    # ---- start

    async def start(self) -> None:
        """Once per process: new shops get an initial load planned (or start at the first connection);
        known shops get a restart report from where their ledger ends."""
        async with self._start_lock:
            if self._started:
                return
            await self._shared.coordination.ready()  # this replica's quota share and shops are known
            now = self._shared.now()
            for shop in self._shared.shops:
                report = await self._at_start(shop, now)
                self._looked_at.add(shop)
                if report is not None:
                    self.outage[shop] = report.id
            self._started = True

    @property
    def started(self) -> bool:
        return self._started

    async def add_shop(self, shop: str, now: datetime) -> None:
        """A shop served since start (added, resumed): what `start` does for it. A new one gets its
        initial load planned, or its ledger starts now when the stream is up; a known one gets a
        report from where its ledger ends (the time it was not served)."""
        if shop in self._looked_at:
            return
        await self._at_start(shop, now)
        self._looked_at.add(shop)
        if self.watch.connected:
            await self.new_shops.register(now)

    def forget(self, shop: str) -> None:
        """`shop` is no longer served: a later `add_shop` looks at it again."""
        self._looked_at.discard(shop)
        self.outage.pop(shop, None)
        self.new_shops.forget(shop)

    async def _at_start(self, shop: str, now: datetime) -> GapReport | None:
        shared = self._shared
        sync_from = await shared.ledger.sync_from(shop)
        if sync_from is None:
            return await self.new_shops.at_start(shop)
        load = await self.new_shops.loader.state(shop)
        if load is not None and not load.done and load.report_id is not None:
            return await shared.reports.get(load.report_id)  # the load's report is the outage to read
        ledger_end = await shared.ledger.covered_end(shop) or sync_from
        open_ends = [r.window_end for r in await shared.reports.open_reports(shop)]
        missed = restart_gap(ledger_end, open_ends, now)
        return (
            None if missed is None else await open_gap(shared, shop, Cause.RESTART, missed, detected_at=now)
        )

    async def extend_outages(self, until: datetime) -> None:
        """The outages going on (or just over) last until `until` at least."""
        for report_id in self.outage.values():
            await self._shared.reports.extend(report_id, until)

    # ---- the session's connects and disconnects

    async def connected(self, at: datetime) -> None:
        """Record the connection; the outages it ends last until now."""
        shared = self._shared
        await self.new_shops.register(at)
        if self._connection_id is None:
            self._connection_id = await shared.reports.connection_opened(at)
        await self.extend_outages(at)
        self.outage.clear()
        if self._several and not shared.coordination.peer_connected():
            # This connection resumes the group's stream: every outage still going on lasted until
            # now, whichever replica saw it begin (its leader may connect later, or never).
            for shop in shared.shops:
                reports = await shared.reports.open_reports(shop)
                ends = [r.window_end for r in reports if r.cause in OUTAGE_CAUSES and r.window_end < at]
                if not ends:
                    continue
                connections = await shared.reports.connections(min(ends))
                for report in reports:
                    if report.cause not in OUTAGE_CAUSES or report.window_end >= at:
                        continue
                    if not stream_up_between(connections, report.window_end, at):
                        await shared.reports.extend(report.id, at)

    async def disconnected(
        self,
        at: datetime,
        reason: str,
        segment_start: datetime,
        stream: Mapping[str, Interval],
        opened: set[str],
    ) -> None:
        """Record what the stream proved and open the outage reports; `opened` keeps the shops done, so
        a retry after a lost database connection opens no report twice."""
        shared = self._shared
        for shop, interval in stream.items():
            await self.prove_stream(shop, interval)
        if self._connection_id is not None:
            await shared.reports.connection_closed(self._connection_id, at, reason)
            self._connection_id = None
        if reason == SESSION_STOPPED:
            return  # the daemon is stopping: the next start opens a restart report from the ledger's end
        for shop in shared.shops:
            missed = disconnect_gap(self.watch.proven_end(shop), segment_start, at)
            if missed is None or shop in opened:
                continue
            report = await open_gap(shared, shop, Cause.DISCONNECT, missed)
            self.outage[shop] = report.id
            opened.add(shop)

    # ---- the stream's coverage

    async def flush_stream(self, now: datetime) -> None:
        """Record in the ledger what the connected stream has proven so far."""
        for shop, interval in self.watch.provable(now).items():
            await self.prove_stream(shop, interval)

    async def prove_stream(self, shop: str, interval: Interval) -> None:
        await self._shared.ledger.prove(shop, interval, ProvenBy.STREAM)
        self.watch.recorded(shop, interval.end)
        self._shared.metrics.coverage.set_proven_until(shop, interval.end)

    # ---- silence and holes

    async def check_silence(self, now: datetime) -> None:
        """Open a report for each led shop that normally trades and has been silent too long."""
        shared, watch = self._shared, self.watch
        if not watch.connected:
            return
        for shop in shared.shops:
            if not shared.coordination.leads(shop):
                continue  # its leader watches it (every replica sees its share of the shop's pushes)
            quiet = watch.silent_for(shop, now)
            if quiet is None or quiet < shared.config.silence:
                continue
            if watch.expected_messages(shop, quiet, now) < shared.config.silence_min_expected:
                continue
            last = watch.last_message.get(shop, now - quiet)
            watch.reset_silence(shop, now)
            logger.warning(
                "shop silent for %.0f s although it normally trades; re-reading the lists",
                quiet.total_seconds(),
                extra={"action": "stream_silence", "shop": shop},
            )
            await open_gap(shared, shop, Cause.SILENCE, Interval(last, now))

    async def scan_ledger(self, shop: str) -> None:
        """Holes between proven stretches that no report covers (a safety net: they should not exist)."""
        shared = self._shared
        sync_from = await shared.ledger.sync_from(shop)
        end = await shared.ledger.covered_end(shop)
        if sync_from is None or end is None or end <= sync_from:
            return
        known = normalize(await shared.reports.unrecovered_windows(shop))
        for hole in await shared.ledger.gaps(shop, sync_from, end):
            for left in gaps(known, hole.start, hole.end):
                await open_gap(shared, shop, Cause.SWEEP, left)
        shared.metrics.coverage.set_gaps_open(shop, len(await shared.reports.open_reports(shop)))
