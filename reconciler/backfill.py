"""Reading one increment window completely: list the tids (docs/sync-rules.md#explicit-type,
docs/sync-rules.md#backward-paging, docs/sync-rules.md#count-then-walk-back, docs/sync-rules.md#page-size),
fetch each trade through fullinfo, apply them to the store, and say which windows were read.

Listing a window: one counting call (`use_has_next=false`, page 1), and when there is more than one
page, every page from the last back to the first with `use_has_next=true`; `fields=tid`, page size 100,
the explicit full type list. A tid seen twice (rows shift while pages are walked) is fetched once.

Errors (docs/design.md#one-error-taxonomy-three-scopes):
* `isv.trade-service-rejection` → the window is split in two and retried after the configured delay
  (the platform says 3 minutes); a window that cannot be split further fails.
* other `isv.*` and permanent errors of a list call → logged, never retried; the window fails.
* retryable errors the client could not get past (it already retried) → the window fails for now.
* a rejected session → `SessionExpired` is raised: nothing more can be done for the shop.
* fullinfo: `isv.trade-not-exist` is counted and skipped; other permanent errors put the trade in
  the dead-letter table and it is skipped (docs/design.md#bad-input-never-crashes); anything else fails the
  window.
A failed window is never reported as read, so the ledger never advances over it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from common.intervals import Interval, covers
from reconciler.lag import LagMeter
from reconciler.plan import Window, backward_pages
from store.gap_reports import PassCounts, RecoveredTrade
from store.ports import ReconcilerTrades
from taobao.errors import (
    MalformedResponse,
    PermanentTopError,
    ServiceRejection,
    SessionExpired,
    TopError,
    TradeNotFound,
)
from taobao.fields import ALL_TRADE_TYPES, LIST_FIELDS, MAX_PAGE_SIZE
from taobao.limiter import Priority
from taobao.models import RejectedItem, Trade, TradePage

logger = logging.getLogger(__name__)

# Increment and sold.get only see trades created within three months (docs/top-api.md#three-month-window); a
# day of margin.
ONLINE_WINDOW = timedelta(days=89)


class TradeSource(Protocol):
    """The TOP calls a backfill makes (`taobao.client.TopClient` fits)."""

    async def trades_sold_increment_get(
        self,
        session: str,
        *,
        start_modified: datetime,
        end_modified: datetime,
        page_no: int,
        page_size: int = ...,
        fields: str = ...,
        types: Sequence[str] = ...,
        use_has_next: bool = ...,
        priority: Priority = ...,
    ) -> TradePage: ...

    async def trade_fullinfo(self, session: str, tid: int, *, priority: Priority = ...) -> Trade: ...


@dataclass(frozen=True, slots=True)
class BackfillConfig:
    types: tuple[str, ...] = ALL_TRADE_TYPES
    page_size: int = MAX_PAGE_SIZE
    concurrency: int = 8
    apply_batch: int = 100
    rejection_retry_seconds: float = 180.0
    min_window: timedelta = timedelta(seconds=60)
    # Trades looked at per window to measure list lag (each costs one fullinfo call).
    lag_probes: int = 20


@dataclass(frozen=True, slots=True)
class Failure:
    reason: str
    # False: an ISV error or another cause retrying cannot fix (docs/sync-rules.md#retry-isp-never-isv)
    retryable: bool


@dataclass(slots=True)
class ReadResult:
    read: list[Window] = field(default_factory=list)  # windows read completely, in order
    failure: Failure | None = None


@dataclass(slots=True)
class Listing:
    tids: list[int]
    queried_at: datetime
    rejected: list[RejectedItem]


class WindowReader:
    """Reads windows for one pass; remembers which trade states it already fetched (dedupe by tid)."""

    def __init__(
        self,
        client: TradeSource,
        store: ReconcilerTrades,
        config: BackfillConfig,
        *,
        lag: LagMeter | None = None,
        now: Callable[[], datetime],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._client = client
        self._store = store
        self.config = config
        self._lag = lag
        self._now = now
        self._sleep = sleep
        self._fetched: dict[int, datetime] = {}
        self._listed: set[int] = set()

    async def read(
        self,
        shop: str,
        session: str,
        windows: Iterable[Window],
        *,
        priority: Priority,
        source: str,
        counts: PassCounts,
        stream_cover: Sequence[Interval] = (),
    ) -> ReadResult:
        """Read `windows` in order; stop at the first that fails. Raises SessionExpired."""
        result = ReadResult()
        pending = deque(windows)
        while pending:
            window = pending.popleft()
            context = {
                "shop": shop,
                "window_start": window.start.isoformat(),
                "window_end": window.end.isoformat(),
            }
            try:
                listing = await self._list(session, window, priority, counts)
            except ServiceRejection as exc:
                counts.rejections += 1
                halves = window.halves(self.config.min_window)
                if halves is None:
                    counts.windows_failed += 1
                    result.failure = Failure(f"{exc.sub_code}: window too narrow to split further", True)
                    logger.error(
                        "trade service rejected a window that cannot be narrowed further",
                        extra={"action": "backfill_window_failed", **context},
                    )
                    return result
                logger.warning(
                    "trade service rejected the window; narrowing it and retrying in %.0f s",
                    self.config.rejection_retry_seconds,
                    extra={"action": "backfill_window_narrowed", **context},
                )
                await self._sleep(self.config.rejection_retry_seconds)
                pending.extendleft(reversed(halves))
                continue
            except SessionExpired:
                raise
            except PermanentTopError as exc:
                counts.windows_failed += 1
                result.failure = Failure(f"list call: {exc}", retryable=False)
                logger.error(
                    "list call failed for good (not retried): %s",
                    exc,
                    extra={"action": "backfill_window_failed", **context},
                )
                return result
            except TopError as exc:
                counts.windows_failed += 1
                result.failure = Failure(f"list call: {exc}", retryable=True)
                logger.warning(
                    "list call failed after retries: %s",
                    exc,
                    extra={"action": "backfill_window_failed", **context},
                )
                return result
            for item in listing.rejected:
                await self.dead_letter(source, f"list entry: {item.reason}", item.raw, None, shop, counts)
            wanted = [tid for tid in listing.tids if self._fetched.get(tid, window.start) <= window.end]
            counts.found += len(set(listing.tids) - self._listed)
            self._listed.update(listing.tids)
            await self._probe_lag(shop, session, window, listing, priority, source, counts, stream_cover)
            failure = await self.fetch_and_apply(
                shop, session, wanted, priority, source, counts, stream_cover
            )
            if failure is not None:
                counts.windows_failed += 1
                result.failure = failure
                return result
            counts.windows_read += 1
            result.read.append(window)
        return result

    # ---- listing -------------------------------------------------------------------------------------

    async def _list(self, session: str, window: Window, priority: Priority, counts: PassCounts) -> Listing:
        page_size = self.config.page_size
        types = self.config.types
        queried_at = self._now()
        counts.list_calls += 1
        first = await self._client.trades_sold_increment_get(
            session,
            start_modified=window.start,
            end_modified=window.end,
            page_no=1,
            page_size=page_size,
            fields=LIST_FIELDS,
            types=types,
            use_has_next=False,
            priority=priority,
        )
        tids: dict[int, None] = dict.fromkeys(t.tid for t in first.trades)
        rejected = list(first.rejected)
        total = first.total_results if first.total_results is not None else len(first.trades)
        if total > page_size:
            # Backward (docs/sync-rules.md#backward-paging): rows that leave the window while we walk shift
            # towards page 1, which is read last; walking forward would skip them.
            for page_no in backward_pages(total, page_size):
                counts.list_calls += 1
                page = await self._client.trades_sold_increment_get(
                    session,
                    start_modified=window.start,
                    end_modified=window.end,
                    page_no=page_no,
                    page_size=page_size,
                    fields=LIST_FIELDS,
                    types=types,
                    use_has_next=True,
                    priority=priority,
                )
                tids.update(dict.fromkeys(t.tid for t in page.trades))
                rejected += page.rejected
        return Listing(list(tids), queried_at, rejected)

    # ---- list lag ------------------------------------------------------------------------------------

    async def _probe_lag(
        self,
        shop: str,
        session: str,
        window: Window,
        listing: Listing,
        priority: Priority,
        source: str,
        counts: PassCounts,
        stream_cover: Sequence[Interval],
    ) -> None:
        """Trades stored with a `modified` in the window that the list left out: if fullinfo says they
        have not changed since, the list is lagging by at least `queried_at - modified`."""
        if self._lag is None or self.config.lag_probes <= 0:
            return
        listed = set(listing.tids)
        types = None if self.config.types == ALL_TRADE_TYPES else list(self.config.types)
        rows = await self._store.stored_in_window(
            shop,
            window.start,
            window.end,
            created_from=listing.queried_at - ONLINE_WINDOW,
            types=types,
            limit=self.config.lag_probes + len(listed),
        )
        stored = {tid: modified for tid, modified in rows if tid not in listed}
        probes = list(stored.items())[: self.config.lag_probes]
        if not probes:
            return
        trades: list[Trade] = []
        for tid, modified in probes:
            try:
                counts.fullinfo_calls += 1
                trade = await self._client.trade_fullinfo(session, tid, priority=priority)
            except SessionExpired:
                raise
            except TopError:
                continue  # a probe is a measurement; its trade is read through its own window
            trades.append(trade)
            if trade.modified is not None and trade.modified == modified:
                lag = (listing.queried_at - modified).total_seconds()
                counts.note_lag(lag)
                self._lag.observe(lag, listing.queried_at, shop)
        await self.apply(shop, trades, source, counts, stream_cover)

    # ---- fullinfo and the store ------------------------------------------------------------------------

    async def fetch_and_apply(
        self,
        shop: str,
        session: str,
        tids: Sequence[int],
        priority: Priority,
        source: str,
        counts: PassCounts,
        stream_cover: Sequence[Interval] = (),
    ) -> Failure | None:
        """Fetch every tid through fullinfo (`concurrency` at a time) and apply them in batches; the
        first failure that is not about one trade stops the rest."""
        if not tids:
            return None
        queue: deque[int] = deque(tids)
        batch: list[Trade] = []
        failure: list[Failure] = []
        flush_lock = asyncio.Lock()

        async def flush(force: bool) -> None:
            async with flush_lock:
                if batch and (force or len(batch) >= self.config.apply_batch):
                    taken = batch[:]
                    batch.clear()
                    await self.apply(shop, taken, source, counts, stream_cover)

        async def worker() -> None:
            while queue and not failure:
                tid = queue.popleft()
                counts.fullinfo_calls += 1
                try:
                    trade = await self._client.trade_fullinfo(session, tid, priority=priority)
                except SessionExpired:
                    raise
                except TradeNotFound:
                    counts.not_found += 1
                    continue
                except PermanentTopError as exc:
                    payload = exc.payload if isinstance(exc, MalformedResponse) else json.dumps({"tid": tid})
                    await self.dead_letter(source, f"fullinfo: {exc}", payload, tid, shop, counts)
                    continue
                except TopError as exc:
                    failure.append(Failure(f"fullinfo of {tid}: {exc}", retryable=True))
                    return
                batch.append(trade)
                await flush(force=False)

        workers = [
            asyncio.create_task(worker(), name=f"backfill-fetch-{n}")
            for n in range(max(1, min(self.config.concurrency, len(tids))))
        ]
        try:
            await asyncio.gather(*workers)
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        await flush(force=True)
        if failure:
            logger.warning(
                "window not read completely: %s",
                failure[0].reason,
                extra={"action": "backfill_fetch_failed", "shop": shop},
            )
            return failure[0]
        return None

    async def apply(
        self,
        shop: str,
        trades: Sequence[Trade],
        source: str,
        counts: PassCounts,
        stream_cover: Sequence[Interval] = (),
    ) -> None:
        """Apply `trades`; count them as new, changed or unchanged, and as push loss when the change
        fell in a stretch the stream claimed (`stream_cover`)."""
        if not trades:
            return
        tids = [t.tid for t in trades]
        existed = await self._store.existing_tids(tids)
        result = await self._store.apply_trades(trades, source=source)
        changed = set(result.changed)
        newest: dict[int, Trade] = {}
        for trade in trades:
            kept = newest.get(trade.tid)
            if kept is None or (trade.modified or trade.created or _MIN) >= (
                kept.modified or kept.created or _MIN
            ):
                newest[trade.tid] = trade
            if trade.modified is not None:
                seen = self._fetched.get(trade.tid)
                self._fetched[trade.tid] = trade.modified if seen is None else max(seen, trade.modified)
        counts.unchanged += len(set(result.unchanged) - changed)
        counts.dead_letters += len(result.rejected)
        for tid in sorted(changed):
            trade = newest[tid]
            lost = trade.modified is not None and covers(stream_cover, trade.modified)
            kind = "changed" if tid in existed else "new"
            if kind == "new":
                counts.new += 1
            else:
                counts.changed += 1
            if lost:
                counts.push_loss += 1
            if counts.keep_trades:
                counts.recovered.append(RecoveredTrade(tid, trade.modified, kind, lost))

    async def dead_letter(
        self,
        source: str,
        reason: str,
        payload: object,
        tid: int | None,
        shop: str,
        counts: PassCounts,
    ) -> None:
        text = (
            payload
            if isinstance(payload, str | bytes)
            else json.dumps(payload, ensure_ascii=False, default=str)
        )
        await self._store.dead_letter(source=source, reason=reason, payload=text, tid=tid, shop=shop)
        counts.dead_letters += 1


_MIN = datetime.fromisoformat("1970-01-01T00:00:00+00:00")
