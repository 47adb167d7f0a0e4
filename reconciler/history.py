"""Reading one part of a new shop's history into the store, by created time.

TOPATS (docs/top-api.md#topats): the part's export task is created (every part's task first, so the
platform prepares them side by side), polled through `taobao.topats.result.get` until it is done,
downloaded (checked against `check_code`; a failed download asks for a fresh single-use URL), and
streamed into the store in batches: the next batch is read in a worker thread while up to `writers`
batches are being written. A task the platform no longer knows is created again. Where the store has
a bulk path (`store.ports.LineLoader`), the lines go to it as they are (PostgreSQL parses them and
applies the plain ones, docs/performance.md#initial-load) and only the lines it leaves go through
`parse_line` and the per-trade path below; otherwise every line does.

sold.get, when TOPATS is not available (the API is retired on today's platform): the day's tids
through `taobao.trades.sold.get` with `use_has_next=true` and `fields=tid`, walked forward (created
time never changes, docs/sync-rules.md#sold-get-paging), each fetched through fullinfo
(`reconciler.fetching`).

Trades go through the same fetch → apply path as every backfill (`store.fetch_apply`); lines and list
entries that fail validation are recorded as trade failures. Re-reading a part is harmless: the
store's upsert is idempotent.
"""

from __future__ import annotations

import asyncio
import functools
import io
import itertools
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Generic, Protocol, TypeVar

from common.intervals import Interval
from reconciler.backfill import WindowReader
from reconciler.fetching import Target
from reconciler.listing import TradeSource
from reconciler.load_plan import DAY, InitialLoadConfig, InitialLoadFailed
from reconciler.progress import Progress
from store.gap_reports import PassCounts
from store.initial_loads import TOPATS, InitialLoads, LoadPart
from store.ports import LineLoader
from taobao.errors import PermanentTopError, TopatsDownloadError
from taobao.fields import FULLINFO_FIELDS, LIST_FIELDS
from taobao.limiter import Priority
from taobao.models import RejectedItem, TopatsTask, Trade, TradePage
from taobao.timefmt import GMT8
from taobao.topats import LineChunk, iter_line_chunks, iter_trades

logger = logging.getLogger(__name__)

SOURCE = "initial_load"

T = TypeVar("T")


class HistorySource(TradeSource, Protocol):
    """The TOP calls the reconciler makes (`taobao.client.TopClient` fits)."""

    async def trades_sold_get(
        self,
        session: str,
        *,
        start_created: datetime,
        end_created: datetime,
        page_no: int,
        page_size: int = ...,
        fields: str = ...,
        types: Sequence[str] = ...,
        use_has_next: bool = ...,
        priority: Priority = ...,
    ) -> TradePage: ...

    async def topats_trades_sold_get(
        self, session: str, *, start_date: date, end_date: date, fields: str, priority: Priority = ...
    ) -> int: ...

    async def topats_result_get(
        self, task_id: int, *, session: str | None = ..., priority: Priority = ...
    ) -> TopatsTask: ...

    async def download_topats_result(
        self, url: str, dest: str | os.PathLike[str] | IO[bytes], *, check_code: str | None
    ) -> None: ...


class HistoryReader:
    """Loads parts of one shop's history; returns how many trades each part held."""

    def __init__(
        self,
        client: HistorySource,
        loads: InitialLoads,
        reader: Callable[[], WindowReader],
        config: InitialLoadConfig,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        lines: LineLoader | None = None,
    ) -> None:
        self._client = client
        self._loads = loads
        self._reader = reader
        self.config = config
        self._sleep = sleep
        self._lines = lines

    async def start_tasks(
        self, shop: str, session: str, parts: list[LoadPart], progress: Progress
    ) -> list[LoadPart]:
        """Create the export task of every pending TOPATS part; the parts as they are now."""
        started: list[LoadPart] = []
        for part in parts:
            if part.method == TOPATS and part.state == "pending":
                progress.update(stage="creating export tasks", force=True)
                task_id = await self._create_task(shop, session, part)
                part = LoadPart(part.start, part.end, part.method, task_id, "started", part.trades)
            started.append(part)
        return started

    async def load(
        self, shop: str, session: str, part: LoadPart, counts: PassCounts, progress: Progress
    ) -> int:
        """Read `part` into the store. Raises PermanentTopError (TOPATS is not available: the load
        falls back to sold.get), InitialLoadFailed (resumable), SessionExpired."""
        if part.method == TOPATS:
            return await self._topats_part(shop, session, part, counts, progress)
        try:
            return await self._sold_get_part(shop, session, part, counts, progress)
        except PermanentTopError as exc:
            raise InitialLoadFailed(f"sold.get: {exc}") from exc

    # ---- TOPATS ---------------------------------------------------------------------------------------

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
        workdir = self.config.workdir or _system_temp_dir()
        path = None if workdir is None else workdir / f"order-sync-topats-{task.task_id}.zip"
        if path is None:
            logger.warning(
                "no writable temporary directory: the TOPATS result is held in memory (set SYNC_TEMP_DIR)",
                extra={"action": "topats_in_memory", "shop": shop},
            )
        try:
            for attempt in range(1, self.config.download_attempts + 1):
                progress.update(stage="downloading", force=True)
                target: Path | IO[bytes] = io.BytesIO() if path is None else path
                try:
                    assert task.download_url is not None
                    await self._client.download_topats_result(
                        task.download_url, target, check_code=task.check_code
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
            return await self.load_file(shop, target, counts, progress)
        finally:
            if path is not None:
                path.unlink(missing_ok=True)

    async def load_file(
        self, shop: str, path: Path | IO[bytes], counts: PassCounts, progress: Progress
    ) -> int:
        """Stream the result file into the store: the next batch is parsed in a thread while up to
        `writers` batches are being written (the database works while Python parses)."""
        if self._lines is not None:
            return await self._load_chunks(shop, path, self._lines, counts, progress)
        reader = self._reader()
        target = Target(shop, SOURCE, counts)
        batches = _Batches(iter_trades(path), self.config.batch)
        writes = _Writes(self.config.writers)
        loaded = 0
        try:
            while batch := await batches.next():
                trades = [t for t in batch if isinstance(t, Trade)]
                for item in batch:
                    if isinstance(item, RejectedItem):
                        await reader.dead_letter(SOURCE, f"TOPATS line: {item.reason}", item, shop, counts)
                counts.found += len(trades)
                await writes.add(functools.partial(reader.fetch.apply, trades, target))
                loaded += len(trades)
                progress.update(trades=len(trades))
            await writes.wait_all()
        finally:
            await writes.cancel()
            await batches.close()
        return loaded

    async def _load_chunks(
        self, shop: str, path: Path | IO[bytes], lines: LineLoader, counts: PassCounts, progress: Progress
    ) -> int:
        """The bulk path: chunks of lines to the store as they are; what it leaves, line by line."""
        reader = self._reader()
        target = Target(shop, SOURCE, counts)
        chunks = _Batches(iter_line_chunks(path, self.config.batch), 1)
        writes = _Writes(self.config.writers)
        loaded = 0

        async def write(chunk: LineChunk) -> None:
            nonlocal loaded
            result = await lines.load_lines(chunk.lines, source=SOURCE)
            left = range(len(chunk.lines)) if result is None else result.leftover
            if result is not None:
                counts.found += result.taken
                counts.new += result.inserted
                counts.changed += result.updated
                counts.unchanged += result.unchanged
                loaded += result.taken
                progress.update(trades=result.taken)
            if left:
                # Lines the bulk path left (odd shapes, or a chunk PostgreSQL could not read): as
                # `iter_trades` reads them, through the per-trade path.
                parsed = await asyncio.to_thread(lambda: [chunk.parse(i) for i in left])
                trades = [t for t in parsed if isinstance(t, Trade)]
                for item in parsed:
                    if isinstance(item, RejectedItem):
                        await reader.dead_letter(SOURCE, f"TOPATS line: {item.reason}", item, shop, counts)
                counts.found += len(trades)
                await reader.fetch.apply(trades, target)
                loaded += len(trades)
                progress.update(trades=len(trades))

        try:
            while batch := await chunks.next():
                for chunk in batch:
                    await writes.add(functools.partial(write, chunk))
            await writes.wait_all()
        finally:
            await writes.cancel()
            await chunks.close()
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
                await reader.dead_letter(SOURCE, f"list entry: {item.reason}", item, shop, counts)
            if not page.has_next:
                break
            page_no += 1
        counts.found += len(tids)
        before = counts.new + counts.changed + counts.unchanged
        # A trade that fails belongs to the day it was created on: its `modified` is not known.
        target = Target(shop, SOURCE, counts, belongs=Interval(part.start, part.end))
        failure = await reader.fetch.fetch_and_apply(session, list(tids), Priority.BACKFILL, target)
        if failure is not None:
            raise InitialLoadFailed(failure.reason)
        loaded = counts.new + counts.changed + counts.unchanged - before
        progress.update(trades=loaded)
        return loaded


class _Batches(Generic[T]):
    """The items of a result file in batches of `size`, the next one read in a worker thread while
    the current one is written."""

    def __init__(self, items: Iterator[T], size: int) -> None:
        self._items = items
        self._size = size
        self._upcoming: asyncio.Future[list[T]] | None = None

    def _parse(self) -> list[T]:
        return list(itertools.islice(self._items, self._size))

    async def next(self) -> list[T]:
        """The next batch (empty at the end of the file)."""
        upcoming = self._upcoming or asyncio.ensure_future(asyncio.to_thread(self._parse))
        batch = await upcoming
        self._upcoming = asyncio.ensure_future(asyncio.to_thread(self._parse)) if batch else None
        return batch

    async def close(self) -> None:
        if self._upcoming is not None and not self._upcoming.done():
            await asyncio.gather(self._upcoming, return_exceptions=True)
        close = getattr(self._items, "close", None)
        if close is not None:
            close()


class _Writes:
    """Store writes running side by side, at most `limit` at once; the first failure is raised."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._running: set[asyncio.Task[None]] = set()

    async def add(self, write: Callable[[], Coroutine[Any, Any, None]]) -> None:
        while len(self._running) >= self._limit:
            done, self._running = await asyncio.wait(self._running, return_when=asyncio.FIRST_COMPLETED)
            for finished in done:
                finished.result()
        self._running.add(asyncio.create_task(write()))

    async def wait_all(self) -> None:
        running, self._running = self._running, set()
        for outcome in await asyncio.gather(*running, return_exceptions=True):
            if isinstance(outcome, BaseException):
                raise outcome

    async def cancel(self) -> None:
        for task in self._running:
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        self._running.clear()


def _system_temp_dir() -> Path | None:
    """The system's temporary directory (TMPDIR, /tmp, /var/tmp, ...), or None when none is writable (a
    read-only root filesystem)."""
    try:
        return Path(tempfile.gettempdir())
    except FileNotFoundError:
        return None
