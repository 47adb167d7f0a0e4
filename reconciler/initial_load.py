"""A new shop's initial load (docs/sync-rules.md#plan-2, docs/sync-rules.md#plan-3): its history by *created*
time up to yesterday 23:59:59 (GMT+8), then the increment API by *modified* time from today 00:00:00 on.

History comes from `taobao.topats.trades.sold.get` (docs/top-api.md#topats): one task per part of at most
`days_per_task` days (the doc asks big sellers to split three months), polled through
`taobao.topats.result.get`, downloaded, checked against `check_code`, and streamed line by line into
the store in batches (parsing runs in a worker thread, one batch ahead of the writes). When TOPATS
is not available (the API is retired on today's platform), each day is read through
`taobao.trades.sold.get` with `use_has_next=true` and `fields=tid`, walked forward (created time never
changes, docs/sync-rules.md#sold-get-paging), and every tid fetched through fullinfo.

Progress is kept per part in `initial_load_parts`, so an interrupted load resumes where it stopped:
finished parts are skipped, a part whose task was created polls that task again, and re-applying a
part is harmless (the store's upsert is idempotent). When every part is done the ledger records
`[since, until)` as proven by the initial load, and the shop's gap report carries on with the
increment windows from `until` (today 00:00:00) on.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from common.errors import OrderSyncError
from common.intervals import Interval
from reconciler.backfill import WindowReader
from reconciler.ledger import Ledger
from reconciler.progress import Progress
from store.coverage import ProvenBy
from store.gap_reports import GapReport, GapReports, PassCounts
from store.initial_loads import SOLD_GET, TOPATS, InitialLoads, LoadPart, LoadState
from taobao.client import TopClient
from taobao.errors import PermanentTopError, SessionExpired, TopatsDownloadError
from taobao.fields import FULLINFO_FIELDS, LIST_FIELDS
from taobao.limiter import Priority
from taobao.models import RejectedItem, TopatsTask, Trade
from taobao.timefmt import GMT8
from taobao.topats import iter_trades

logger = logging.getLogger(__name__)

SOURCE = "initial_load"
DAY = timedelta(days=1)


class InitialLoadFailed(OrderSyncError):
    """A part of the initial load could not be completed now; the load resumes from that part later."""


@dataclass(frozen=True, slots=True)
class InitialLoadConfig:
    days_per_task: int = 30
    poll_seconds: float = 30.0  # the longest wait between taobao.topats.result.get calls
    first_poll_seconds: float = 1.0  # the first wait; it doubles up to poll_seconds
    max_wait_seconds: float = 6 * 3600.0  # tasks "usually finish in 30-60 minutes"
    batch: int = 2000  # trades per store transaction
    writers: int = 2  # store transactions in flight at once
    download_attempts: int = 3  # each with a fresh single-use URL
    workdir: Path | None = None  # where downloads go (default: the system's temporary directory)


def local_midnight(moment: datetime) -> datetime:
    """The GMT+8 midnight that starts `moment`'s day on Taobao's calendar."""
    local = moment.astimezone(GMT8)
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


class InitialLoader:
    def __init__(
        self,
        client: TopClient,
        loads: InitialLoads,
        ledger: Ledger,
        reports: GapReports,
        reader: Callable[[], WindowReader],
        config: InitialLoadConfig,
        *,
        now: Callable[[], datetime],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        progress: Callable[[str], Progress] | None = None,
    ) -> None:
        self._client = client
        self._loads = loads
        self._ledger = ledger
        self._reports = reports
        self._reader = reader
        self.config = config
        self._now = now
        self._sleep = sleep
        self._progress = progress or (lambda shop: Progress(f"initial load of {shop}", shop=shop))

    async def state(self, shop: str) -> LoadState | None:
        return await self._loads.state(shop)

    async def begin(self, shop: str, days: int) -> LoadState:
        """Plan a load of `days` days before today for `shop` (idempotent: an existing load is kept).
        The shop's ledger starts at the first day; its gap report opens now."""
        existing = await self.state(shop)
        if existing is not None:
            return existing
        if not 1 <= days <= 90:
            raise ValueError("an initial load covers 1 to 90 days (the online window is three months)")
        now = self._now()
        until = local_midnight(now)
        since = until - days * DAY
        parts = self._split(since, until, TOPATS)
        await self._loads.plan(shop, since=since, until=until, method=TOPATS, parts=parts, at=now)
        logger.info(
            "initial load planned: %d days from %s",
            days,
            since.date().isoformat(),
            extra={"action": "initial_load_planned", "shop": shop},
        )
        state = await self.state(shop)
        assert state is not None
        return state

    def _split(self, since: datetime, until: datetime, method: str) -> list[Interval]:
        step = self.config.days_per_task * DAY if method == TOPATS else DAY
        parts: list[Interval] = []
        cursor = since
        while cursor < until:
            end = min(cursor + step, until)
            parts.append(Interval(cursor, end))
            cursor = end
        return parts

    async def parts(self, shop: str) -> list[LoadPart]:
        return await self._loads.parts(shop)

    async def run(self, shop: str, session: str, *, progress: Progress | None = None) -> LoadState:
        """Load every part not done yet; then record the history as proven. Raises InitialLoadFailed
        (resumable), SessionExpired."""
        state = await self.state(shop)
        if state is None:
            raise LookupError(f"no initial load planned for {shop}")
        if state.done:
            return state
        report_id = state.report_id
        shown = progress or self._progress(shop)
        all_parts = await self.parts(shop)
        shown.parts_total = len(all_parts)
        shown.parts_done = sum(1 for p in all_parts if p.state == "done")
        try:
            # Every export task is created first: the platform prepares them side by side.
            all_parts = await self._start_tasks(shop, session, all_parts, shown)
        except SessionExpired:
            raise
        except PermanentTopError as exc:
            return await self._fall_back(shop, session, exc, shown)
        for part in all_parts:
            if part.state == "done":
                continue
            counts = PassCounts(keep_trades=False)
            started = self._now()
            try:
                if part.method == TOPATS:
                    loaded = await self._topats_part(shop, session, part, counts, shown)
                else:
                    loaded = await self._sold_get_part(shop, session, part, counts, shown)
            except SessionExpired:
                raise
            except PermanentTopError as exc:
                if part.method != TOPATS:
                    raise InitialLoadFailed(f"sold.get: {exc}") from exc
                return await self._fall_back(shop, session, exc, shown)
            finally:
                if report_id is not None and (counts.list_calls or counts.found or counts.fullinfo_calls):
                    await self._reports.add_pass(
                        report_id,
                        counts,
                        started_at=started,
                        progress_until=None,
                        fresh_until=None,
                        overlap_seconds=None,
                    )
            await self._finish_part(shop, part, loaded)
            shown.parts_done += 1
            shown.update(force=True)
        await self._ledger.prove(shop, Interval(state.since, state.until), ProvenBy.INITIAL_LOAD)
        await self._loads.finish(shop)
        if report_id is not None:
            await self._reports.add_pass(
                report_id,
                PassCounts(),
                started_at=self._now(),
                progress_until=state.until,
                fresh_until=None,
                overlap_seconds=None,
            )
        shown.update(stage="history loaded", force=True)
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

    async def _finish_part(self, shop: str, part: LoadPart, loaded: int) -> None:
        await self._loads.finish_part(shop, part.start, loaded)

    async def _fall_back(self, shop: str, session: str, exc: Exception, progress: Progress) -> LoadState:
        logger.warning(
            "TOPATS is not available (%s); loading day by day through sold.get instead",
            exc,
            extra={"action": "initial_load_fallback", "shop": shop},
        )
        await self._switch_to_sold_get(shop)
        return await self.run(shop, session, progress=progress)

    async def _switch_to_sold_get(self, shop: str) -> None:
        state = await self.state(shop)
        assert state is not None
        done = [p for p in await self.parts(shop) if p.state == "done"]
        parts: list[Interval] = []
        cursor = state.since
        for part in [*done, None]:
            stop = state.until if part is None else part.start
            if cursor < stop:
                parts += self._split(cursor, stop, SOLD_GET)
            if part is not None:
                cursor = max(cursor, part.end)
        await self._loads.replan(shop, SOLD_GET, parts)

    # ---- TOPATS ---------------------------------------------------------------------------------------

    async def _start_tasks(
        self, shop: str, session: str, parts: list[LoadPart], progress: Progress
    ) -> list[LoadPart]:
        started: list[LoadPart] = []
        for part in parts:
            if part.method == TOPATS and part.state == "pending":
                progress.update(stage="creating export tasks", force=True)
                task_id = await self._create_task(shop, session, part)
                part = LoadPart(part.start, part.end, part.method, task_id, "started", part.trades)
            started.append(part)
        return started

    async def _create_task(self, shop: str, session: str, part: LoadPart) -> int:
        task_id = await self._client.topats_trades_sold_get(
            session,
            start_date=part.start.astimezone(GMT8).date(),
            end_date=(part.end - DAY).astimezone(GMT8).date(),
            fields=FULLINFO_FIELDS,
            priority=Priority.BACKFILL,
        )
        await self._loads.start_part(shop, part.start, task_id)
        return task_id

    async def _topats_part(
        self, shop: str, session: str, part: LoadPart, counts: PassCounts, progress: Progress
    ) -> int:
        task_id = part.task_id
        task: TopatsTask | None = None
        if task_id is not None:
            try:
                task = await self._wait_done(session, task_id, progress)
            except PermanentTopError as exc:
                # The task is gone (tasks are kept a limited time): start it again.
                logger.info(
                    "TOPATS task %d is gone (%s); creating a new one",
                    task_id,
                    exc,
                    extra={"action": "topats_task_recreated", "shop": shop},
                )
                task = None
        if task is None:
            progress.update(stage="creating the export task", force=True)
            task_id = await self._create_task(shop, session, part)
            task = await self._wait_done(session, task_id, progress)
        return await self._download_and_load(shop, session, task, counts, progress)

    async def _wait_done(self, session: str, task_id: int, progress: Progress) -> TopatsTask:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.max_wait_seconds
        wait = min(self.config.first_poll_seconds, self.config.poll_seconds)
        while True:
            task = await self._client.topats_result_get(task_id, session=session, priority=Priority.BACKFILL)
            if task.done and task.download_url:
                return task
            if loop.time() > deadline:
                raise InitialLoadFailed(
                    f"TOPATS task {task_id} not done after {self.config.max_wait_seconds:.0f} s"
                )
            progress.update(stage=f"export task {task.status or 'pending'}", force=True)
            await self._sleep(wait)
            wait = min(wait * 2, self.config.poll_seconds)

    async def _download_and_load(
        self, shop: str, session: str, task: TopatsTask, counts: PassCounts, progress: Progress
    ) -> int:
        workdir = self.config.workdir or Path(tempfile.gettempdir())
        path = workdir / f"order-sync-topats-{task.task_id}.zip"
        try:
            for attempt in range(1, self.config.download_attempts + 1):
                progress.update(stage="downloading", force=True)
                try:
                    assert task.download_url is not None
                    await self._client.download_topats_result(
                        task.download_url, path, check_code=task.check_code
                    )
                    break
                except TopatsDownloadError as exc:
                    if attempt == self.config.download_attempts:
                        raise InitialLoadFailed(f"TOPATS download: {exc}") from exc
                    logger.warning(
                        "TOPATS download failed (%s); asking for a fresh URL",
                        exc,
                        extra={"action": "topats_download_retry", "shop": shop, "attempt": attempt},
                    )
                    task = await self._wait_done(session, task.task_id, progress)
            progress.update(stage="loading", force=True)
            return await self._load_file(shop, path, counts, progress)
        finally:
            path.unlink(missing_ok=True)

    async def _load_file(self, shop: str, path: Path, counts: PassCounts, progress: Progress) -> int:
        """Stream the result file into the store: the next batch is parsed in a thread while up to
        `writers` batches are being written (the database works while Python parses)."""
        items: Iterator[Trade | RejectedItem] = iter_trades(path)
        size = self.config.batch

        def next_batch() -> list[Trade | RejectedItem]:
            return list(itertools.islice(items, size))

        reader = self._reader()
        loaded = 0
        writes: set[asyncio.Task[None]] = set()
        upcoming: asyncio.Future[list[Trade | RejectedItem]] | None = None
        try:
            upcoming = asyncio.ensure_future(asyncio.to_thread(next_batch))
            while True:
                batch = await upcoming
                if not batch:
                    break
                upcoming = asyncio.ensure_future(asyncio.to_thread(next_batch))
                trades = [t for t in batch if isinstance(t, Trade)]
                for item in batch:
                    if isinstance(item, RejectedItem):
                        await reader.dead_letter(
                            SOURCE, f"TOPATS line: {item.reason}", item.raw, None, shop, counts
                        )
                counts.found += len(trades)
                while len(writes) >= self.config.writers:
                    done, writes = await asyncio.wait(writes, return_when=asyncio.FIRST_COMPLETED)
                    for finished in done:
                        finished.result()
                writes.add(asyncio.create_task(reader.apply(shop, trades, SOURCE, counts)))
                loaded += len(trades)
                progress.update(trades=len(trades))
            for outcome in await asyncio.gather(*writes, return_exceptions=True):
                if isinstance(outcome, BaseException):
                    raise outcome
            writes.clear()
        finally:
            for task in writes:
                task.cancel()
            await asyncio.gather(*writes, return_exceptions=True)
            if upcoming is not None and not upcoming.done():
                await asyncio.gather(upcoming, return_exceptions=True)
            close = getattr(items, "close", None)
            if close is not None:
                close()
        return loaded

    # ---- sold.get, one day at a time -------------------------------------------------------------------

    async def _sold_get_part(
        self, shop: str, session: str, part: LoadPart, counts: PassCounts, progress: Progress
    ) -> int:
        reader = self._reader()
        day_end = part.end - timedelta(seconds=1)
        tids: dict[int, None] = {}
        page_no = 1
        progress.update(stage=f"day {part.start.astimezone(GMT8).date().isoformat()}")
        while True:
            counts.list_calls += 1
            page = await self._client.trades_sold_get(
                session,
                start_created=part.start,
                end_created=day_end,
                page_no=page_no,
                fields=LIST_FIELDS,
                types=reader.config.types,
                use_has_next=True,
                priority=Priority.BACKFILL,
            )
            tids.update(dict.fromkeys(t.tid for t in page.trades))
            for item in page.rejected:
                await reader.dead_letter(SOURCE, f"list entry: {item.reason}", item.raw, None, shop, counts)
            if not page.has_next:
                break
            page_no += 1
        counts.found += len(tids)
        before = counts.new + counts.changed + counts.unchanged
        failure = await reader.fetch_and_apply(shop, session, list(tids), Priority.BACKFILL, SOURCE, counts)
        if failure is not None:
            raise InitialLoadFailed(failure.reason)
        loaded = counts.new + counts.changed + counts.unchanged - before
        progress.update(trades=loaded)
        return loaded


async def plan_and_run(
    loader: InitialLoader, shop: str, session: str, days: int, *, progress: Progress | None = None
) -> tuple[LoadState, GapReport | None]:
    """Plan (if needed) and run `shop`'s initial load; the load's state and its gap report."""
    await loader.begin(shop, days)
    state = await loader.run(shop, session, progress=progress)
    report = None if state.report_id is None else await loader._reports.get(state.report_id)
    return state, report
