"""A new shop's initial load (docs/sync-rules.md#plan-2, docs/sync-rules.md#plan-3): its history by *created*
time up to yesterday 23:59:59 (GMT+8), then the increment API by *modified* time from today 00:00:00 on.

`begin` plans the load (`reconciler.load_plan`): its parts, its gap report and the start of the shop's
ledger, in one step (`store.initial_loads`). `run` reads every part not done yet (`reconciler.history`:
TOPATS export tasks, or sold.get day by day when TOPATS is not available) and, when all are done,
records `[since, until)` as proven by the initial load; the shop's gap report then carries on with the
increment windows from `until` (today 00:00:00) on.

Progress is kept per part, so an interrupted load resumes where it stopped: finished parts are skipped,
a part whose task was created polls that task again, and re-reading a part is harmless.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from common.intervals import Interval
from reconciler.backfill import WindowReader
from reconciler.history import HistoryReader, HistorySource
from reconciler.ledger import Ledger
from reconciler.load_plan import InitialLoadConfig, InitialLoadFailed, history_span, remaining, split
from reconciler.progress import Progress
from store.coverage import ProvenBy
from store.gap_reports import GapReport, GapReports, PassCounts
from store.initial_loads import SOLD_GET, TOPATS, InitialLoads, LoadPart, LoadState
from store.ports import LineLoader
from taobao.errors import AppWideTopError, PermanentTopError, SessionExpired, TopError
from taobao.pause import PAUSING_METHODS

logger = logging.getLogger(__name__)


class InitialLoader:
    def __init__(
        self,
        client: HistorySource,
        loads: InitialLoads,
        ledger: Ledger,
        reports: GapReports,
        reader: Callable[[], WindowReader],
        config: InitialLoadConfig,
        *,
        now: Callable[[], datetime],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        progress: Callable[[str], Progress] | None = None,
        lines: LineLoader | None = None,
    ) -> None:
        self._loads = loads
        self._ledger = ledger
        self.reports = reports
        self.config = config
        self._now = now
        self._history = HistoryReader(client, loads, reader, config, sleep=sleep, lines=lines)
        self._progress = progress or (lambda shop: Progress(f"initial load of {shop}", shop=shop))

    async def state(self, shop: str) -> LoadState | None:
        return await self._loads.state(shop)

    async def parts(self, shop: str) -> list[LoadPart]:
        return await self._loads.parts(shop)

    async def begin(self, shop: str, days: int) -> LoadState:
        """Plan a load of `days` days before today for `shop` (idempotent: an existing load is kept).
        The shop's ledger starts at the first day; its gap report opens now."""
        existing = await self.state(shop)
        if existing is not None:
            return existing
        now = self._now()
        span = history_span(now, days)
        parts = split(span, TOPATS, days_per_task=self.config.days_per_task)
        await self._loads.plan(shop, since=span.start, until=span.end, method=TOPATS, parts=parts, at=now)
        logger.info(
            "initial load planned: %d days from %s",
            days,
            span.start.date().isoformat(),
            extra={"action": "initial_load_planned", "shop": shop},
        )
        state = await self.state(shop)
        assert state is not None
        return state

    async def run(self, shop: str, session: str, *, progress: Progress | None = None) -> LoadState:
        """Load every part not done yet; then record the history as proven. Raises InitialLoadFailed
        (resumable), SessionExpired."""
        state = await self.state(shop)
        if state is None:
            raise LookupError(f"no initial load planned for {shop}")
        if state.done:
            return state
        shown = progress or self._progress(shop)
        parts = await self.parts(shop)
        shown.parts_total = len(parts)
        shown.parts_done = sum(1 for p in parts if p.done)
        try:
            # Every export task is created first: the platform prepares them side by side.
            parts = await self._history.start_tasks(shop, session, parts, shown)
            for part in parts:
                if not part.done:
                    await self._load_part(shop, session, part, state.report_id, shown)
        except SessionExpired:
            raise
        except PermanentTopError as exc:
            return await self._fall_back(shop, session, exc, shown)
        except AppWideTopError as exc:
            if exc.method not in PAUSING_METHODS:
                # The app lacks the TOPATS permission package: the one call no sync needs.
                return await self._fall_back(shop, session, exc, shown)
            raise InitialLoadFailed(f"initial load: {exc}") from exc
        except TopError as exc:
            # The client already retried (or waited out a ban): the load goes on from this part on a
            # later round, instead of failing the round, or the gate and with it the stream.
            raise InitialLoadFailed(f"initial load: {exc}") from exc
        return await self._finish(state, shown)

    async def _load_part(
        self, shop: str, session: str, part: LoadPart, report_id: int | None, progress: Progress
    ) -> None:
        counts = PassCounts(keep_trades=False)
        started = self._now()
        try:
            loaded = await self._history.load(shop, session, part, counts, progress)
        finally:
            # What a part read before it failed is the report's too.
            if report_id is not None and (counts.list_calls or counts.found or counts.fullinfo_calls):
                await self.reports.add_pass(
                    report_id,
                    counts,
                    started_at=started,
                    progress_until=None,
                    fresh_until=None,
                    overlap_seconds=None,
                )
        await self._loads.finish_part(shop, part.start, loaded)
        progress.parts_done += 1
        progress.update(force=True)

    async def _finish(self, state: LoadState, progress: Progress) -> LoadState:
        """Every part is done: the history is proven, and the report goes on from `until`."""
        shop = state.shop
        await self._ledger.prove(shop, Interval(state.since, state.until), ProvenBy.INITIAL_LOAD)
        await self._loads.finish(shop)
        if state.report_id is not None:
            await self.reports.add_pass(
                state.report_id,
                PassCounts(),
                started_at=self._now(),
                progress_until=state.until,
                fresh_until=None,
                overlap_seconds=None,
            )
        progress.update(stage="history loaded", force=True)
        final = await self.state(shop)
        assert final is not None
        logger.info(
            "initial load of %s done: %d trades by %s",
            shop,
            final.trades,
            final.method,
            extra={"action": "initial_load_done", "shop": shop},
        )
        return final

    async def _fall_back(self, shop: str, session: str, exc: Exception, progress: Progress) -> LoadState:
        logger.warning(
            "TOPATS is not available (%s); loading day by day through sold.get instead",
            exc,
            extra={"action": "initial_load_fallback", "shop": shop},
        )
        await self.switch_to_sold_get(shop)
        return await self.run(shop, session, progress=progress)

    async def switch_to_sold_get(self, shop: str) -> None:
        """Read what is left of the load day by day through sold.get (the parts done are kept)."""
        state = await self.state(shop)
        if state is None:
            raise LookupError(f"no initial load planned for {shop}")
        done = [Interval(p.start, p.end) for p in await self.parts(shop) if p.done]
        span = Interval(state.since, state.until)
        parts = remaining(span, done, SOLD_GET, days_per_task=self.config.days_per_task)
        await self._loads.replan(shop, SOLD_GET, parts)


async def plan_and_run(
    loader: InitialLoader, shop: str, session: str, days: int, *, progress: Progress | None = None
) -> tuple[LoadState, GapReport | None]:
    """Plan (if needed) and run `shop`'s initial load; the load's state and its gap report."""
    await loader.begin(shop, days)
    state = await loader.run(shop, session, progress=progress)
    report = None if state.report_id is None else await loader.reports.get(state.report_id)
    return state, report
