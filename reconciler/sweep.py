"""The sweep: every SYNC_SWEEP_SECONDS each led shop's recent proof windows are read again at the lowest
priority. Trades that come back changed had changes the stream never delivered; those inside stretches
the stream claimed are push loss (docs/sync-rules.md#push-loss), which this measures. What a sweep
reads completely is proven by the sweep; a sweep that found something, or failed part-way, leaves a
report (a failed window's stretch stays open for the next rounds).

Fullinfo answers with a trade's newest version, which can lie past the windows read; the sweep applies
it only inside its windows or where the stream claimed its time (`reconciler.proof.sweep_applies`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from common.intervals import Interval
from reconciler.backfill import WindowReader
from reconciler.config import Shared
from reconciler.detection import open_gap
from reconciler.fetching import Failure
from reconciler.lag import LagMeter
from reconciler.plan import Window, lag_horizon, plan_windows
from reconciler.proof import failed, sweep_applies, sweep_span
from reconciler.stream_watch import StreamWatch
from store.coverage import ProvenBy
from store.gap_reports import Cause, Outcome, PassCounts
from taobao.errors import SessionExpired
from taobao.limiter import Priority

logger = logging.getLogger(__name__)


class ReaderFactory(Protocol):
    def __call__(self, *, within: Sequence[Interval] | None = None) -> WindowReader: ...


class Sweeper:
    def __init__(self, shared: Shared, watch: StreamWatch, lag: LagMeter, reader: ReaderFactory) -> None:
        self._shared = shared
        self._watch = watch
        self._lag = lag
        self._reader = reader

    async def sweep(self, shop: str, *, stream_started: datetime | None) -> PassCounts:
        """Sweep `shop` (the caller holds its lock); `stream_started`: this process's first connect."""
        shared = self._shared
        if not self._watch.connected or not shared.coordination.leads(shop):
            # Nothing to measure while the stream is away, and the outage's report is reading.
            return PassCounts()
        now = shared.now()
        ledger = shared.ledger
        stream_end = await ledger.covered_end(shop, ProvenBy.STREAM)
        open_windows = [
            Interval(r.window_start, r.window_end) for r in await shared.reports.open_reports(shop)
        ]
        windows = await self._windows(shop, now, stream_started, stream_end, open_windows)
        if not windows or stream_end is None:
            return PassCounts()
        # The stream's claim as far as its proof reaches: a version fetched past the windows counts as
        # push loss there, and is left alone elsewhere (`reconciler.proof.sweep_applies`).
        stream_cover = await ledger.intervals(shop, windows[0].start, stream_end, kinds=[ProvenBy.STREAM])
        counts = PassCounts()
        try:
            within = sweep_applies(windows, stream_cover, open_windows)
            result = await self._reader(within=within).read(
                shop,
                shared.session_of(shop),
                windows,
                priority=Priority.SWEEP,
                source="sweep",
                counts=counts,
                stream_cover=stream_cover,
            )
        except SessionExpired as exc:
            logger.error("sweep stopped: %s", exc, extra={"action": "sweep_session_rejected", "shop": shop})
            return counts
        for window in result.read:
            await ledger.prove(shop, window.proves, ProvenBy.SWEEP)
        await self._lag.withdraw(shop, ledger)  # proofs read under a lag since measured longer
        shared.metrics.count_pass(shop, Cause.SWEEP.value, counts, purpose="sweep")
        logger.info(
            "sweep read %d window(s): %d trades, %d brought in, %d pushes lost",
            len(result.read),
            counts.found,
            counts.brought_in,
            counts.push_loss,
            extra={"action": "sweep_done", "shop": shop},
        )
        unresolved = await shared.unresolved_in(shop, windows[0].start, windows[-1].end)
        if counts.brought_in or result.failure is not None or unresolved:
            await self._report(shop, windows, result.read, counts, result.failure, now, unresolved=unresolved)
        return counts

    async def _windows(
        self,
        shop: str,
        now: datetime,
        stream_started: datetime | None,
        stream_end: datetime | None,
        open_windows: list[Interval],
    ) -> list[Window]:
        """The proof windows of what the sweep may cover now (`reconciler.proof.sweep_span`)."""
        shared = self._shared
        ledger, config = shared.ledger, shared.config
        overlap = self._lag.overlap(now)
        span = sweep_span(
            last_sweep_end=await ledger.covered_end(shop, ProvenBy.SWEEP),
            stream_started=stream_started,
            sync_from=await ledger.sync_from(shop) or now,
            stream_end=stream_end,
            open_starts=[w.start for w in open_windows],
            horizon=lag_horizon(shared.horizon_now(), safety_lag=config.safety_lag, overlap=overlap),
        )
        if span is None:
            return []
        return plan_windows(
            span,
            now=shared.horizon_now(),
            safety_lag=config.safety_lag,
            overlap=overlap,
            max_span=config.max_span,
            fresh=False,
        )

    async def _report(
        self,
        shop: str,
        windows: list[Window],
        read: list[Window],
        counts: PassCounts,
        failure: Failure | None,
        now: datetime,
        *,
        unresolved: int,
    ) -> None:
        """What the sweep brought in, and (when a window failed) the rest of its stretch, left open; left
        open too while unresolved trades belong to it (docs/design.md#unresolved-trades-block-proof)."""
        shared = self._shared
        report = await open_gap(
            shared, shop, Cause.SWEEP, Interval(windows[0].start, windows[-1].end), detected_at=now
        )
        await shared.reports.add_pass(
            report.id,
            counts,
            started_at=now,
            progress_until=read[-1].end if read else None,
            fresh_until=None,
            overlap_seconds=self._lag.overlap(now).total_seconds(),
        )
        if failure is None and not unresolved:
            await shared.reports.finish(report.id, Outcome.RECOVERED, None, shared.now())
        elif failure is not None:
            await shared.reports.finish(report.id, failed(failure), failure.reason, shared.now())
