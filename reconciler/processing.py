"""Processing a gap report: a pass reads what is left of its window, window by window, each recorded
(the ledger's proof and the report's counts) as soon as it is read, so a pass that is interrupted keeps
what it proved and the next one resumes after it; then the report is finished or left open
(`reconciler.proof` decides which windows and which outcome), and a partial one is tried again on the
retry schedule (`reconciler.retries`).

Proof is conservative: only windows below the lag horizon prove; fresh windows above it bring changes
in early and are read again, as proof, once the horizon has passed them.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from reconciler.backfill import ReadResult, WindowReader
from reconciler.config import Shared
from reconciler.fetching import Failure
from reconciler.lag import LagMeter
from reconciler.plan import Window
from reconciler.proof import TRIMMED_CAUSES, conclusion, history_loading, pass_windows, proven_until
from reconciler.retries import RetrySchedule
from store.coverage import ProvenBy
from store.errors import NotLeader, StoreError
from store.gap_reports import GapReport, Outcome, PassCounts
from taobao.errors import SessionExpired
from taobao.limiter import Priority

logger = logging.getLogger(__name__)

# Tries of a pass's bookkeeping (ledger proof, report counts) before the pass gives up (about 6 s).
RECORD_ATTEMPTS = 6


@dataclass(frozen=True, slots=True)
class _Pass:
    """One pass over a report: when it started and with which overlap (the report keeps both)."""

    report: GapReport
    started_at: datetime
    overlap: timedelta


class ReportProcessor:
    def __init__(
        self, shared: Shared, lag: LagMeter, reader: Callable[[], WindowReader], retries: RetrySchedule
    ) -> None:
        self._shared = shared
        self._lag = lag
        self._reader = reader
        self.retries = retries

    def due(self, report: GapReport) -> bool:
        """Not waiting for its retry."""
        return self.retries.due(report.id)

    async def process(
        self,
        report: GapReport,
        *,
        fresh: bool,
        priority: Priority = Priority.BACKFILL,
        source: str = "backfill",
    ) -> GapReport:
        """One pass over what is left of `report`'s window; closes it when all of it is proven. The
        caller holds the shop's lock."""
        shared = self._shared
        now = shared.now()
        work = _Pass(report, now, self._lag.overlap(now))
        if history_loading(report):
            return report  # the history is still loading; the increment starts where it ends
        proven_from = report.proven_from
        if report.cause in TRIMMED_CAUSES:
            proven = await shared.ledger.intervals(report.shop, proven_from, report.window_end)
            proven_from = proven_until(proven_from, proven)
        if proven_from >= report.window_end:
            if await shared.unresolved_in(report.shop, report.window_start, report.window_end):
                return report  # read; open until its unresolved trades are stored (the redrive's work)
            await shared.reports.finish(report.id, Outcome.RECOVERED, None, now)
            return await shared.reports.get(report.id)
        config = shared.config
        windows = pass_windows(
            report,
            proven_from,
            now=shared.horizon_now(),
            safety_lag=config.safety_lag,
            overlap=work.overlap,
            max_span=config.max_span,
            fresh=fresh,
        )
        if not windows:
            return report
        failure = await self._read(work, windows, priority, source)
        return await self._conclude(report, failure)

    async def _read(
        self, work: _Pass, windows: Sequence[Window], priority: Priority, source: str
    ) -> Failure | None:
        """Read `windows` in order, each recorded as soon as it is read; the failure that stopped them."""
        shared, shop = self._shared, work.report.shop
        stream_cover = await shared.ledger.intervals(
            shop, windows[0].start, windows[-1].end, kinds=[ProvenBy.STREAM]
        )
        reader = self._reader()  # one reader per pass: a trade fetched once is not fetched again
        total = PassCounts()
        failure: Failure | None = None
        for window in windows:
            if not shared.coordination.leads(shop):
                raise NotLeader(shop)  # handed over: the new leader resumes after the last window recorded
            counts = PassCounts()
            try:
                result = await reader.read(
                    shop,
                    shared.session_of(shop),
                    [window],
                    priority=priority,
                    source=source,
                    counts=counts,
                    stream_cover=stream_cover,
                )
            except SessionExpired as exc:
                # Open and tried again, not failed for good: once the session is renewed (at once on
                # code 27, where a refresh token is held) or replaced, the window is read; the rounds
                # pass a shop by while it is not served. Failed for good, nothing would read it again.
                result = ReadResult(failure=Failure(f"session rejected: {exc}", retryable=True))
                logger.error(
                    "backfill stopped: the shop's session was rejected; tried again once it has a new one",
                    extra={"action": "backfill_session_rejected", "shop": shop},
                )
            except StoreError:
                # The batches applied before the database failed are in: they are this report's finds
                # (the next pass sees them unchanged and would not list them).
                await self._record(work, counts, result=None)
                raise
            await self._record(work, counts, result=result)
            total.add(counts)
            failure = result.failure
            if failure is not None:
                break
        shared.metrics.count_pass(shop, work.report.cause, total, purpose="backfill")
        withdraw = functools.partial(self._lag.withdraw, shop, shared.ledger)
        await shared.retrying_db("coverage_withdraw_failed", withdraw, attempts=RECORD_ATTEMPTS)
        return failure

    async def _record(self, work: _Pass, counts: PassCounts, *, result: ReadResult | None) -> None:
        """What a window proved goes to the ledger, its counts and trades to the report; both retried
        past a lost connection: trades applied but not recorded would be missing from the report for
        good."""
        shared, shop = self._shared, work.report.shop
        progress: datetime | None = None
        fresh_until: datetime | None = None
        for part in [] if result is None else result.read:
            if not part.proof:
                fresh_until = part.end
                continue
            prove = functools.partial(shared.ledger.prove, shop, part.proves, ProvenBy.BACKFILL)
            await shared.retrying_db("backfill_record_failed", prove, attempts=RECORD_ATTEMPTS)
            progress = part.end
            shared.metrics.coverage.set_proven_until(shop, part.end)
        add = functools.partial(
            shared.reports.add_pass,
            work.report.id,
            counts,
            started_at=work.started_at,
            progress_until=progress,
            fresh_until=fresh_until,
            overlap_seconds=work.overlap.total_seconds(),
        )
        await shared.retrying_db("backfill_record_failed", add, attempts=RECORD_ATTEMPTS)

    async def _conclude(self, report: GapReport, failure: Failure | None) -> GapReport:
        """Finish the report when the pass decided it; a partial one waits for its retry."""
        shared = self._shared
        reports = shared.reports
        updated = await reports.get(report.id)
        unresolved = await shared.unresolved_in(report.shop, report.window_start, report.window_end)
        outcome = conclusion(updated, failure, unresolved=unresolved)
        if outcome is None:
            return updated  # open until the horizon passes the rest of its window
        await reports.finish(report.id, outcome, None if failure is None else failure.reason, shared.now())
        if outcome is Outcome.PARTIAL:
            self.retries.failed(report.id)
        else:
            self.retries.forget(report.id)
        if outcome is Outcome.RECOVERED:
            logger.info(
                "gap recovered: %d new, %d changed, %d unchanged, %d pushes lost",
                updated.trades_new,
                updated.trades_changed,
                updated.trades_unchanged,
                updated.push_loss,
                extra={"action": "gap_recovered", "shop": report.shop},
            )
        return await reports.get(report.id)
