"""Reading increment windows completely: list each window's tids (`reconciler.listing`), fetch and
apply every trade (`reconciler.fetching`, the path the stream takes too), and say which windows were
read. A failed window is never reported as read, so the ledger never advances over it.

What a list call's error means for the window (docs/design.md#one-error-taxonomy-three-scopes):
* `isv.trade-service-rejection` → the window is split in two and retried after the configured delay
  (the platform says 3 minutes); a window that cannot be split further fails.
* a parameter refused (per call, `PermanentTopError`) → logged, never retried; the window fails for good.
* app-wide errors (`AppWideTopError`: the client now holds every call behind one probe) and retryable
  errors the client could not get past (it already retried) → the window fails for now, proves nothing.
* a rejected session → `SessionExpired` is raised: nothing more can be done for the shop.
List entries that fail validation are recorded as trade failures (dead letters). What a fullinfo
error means: see `reconciler.fetching`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from common.intervals import Interval
from common.metrics import Registry
from reconciler.fetching import Failure, Target, TradeFetch
from reconciler.lag import LagMeter
from reconciler.listing import Listing, ListQuery, TradeSource, list_window
from reconciler.plan import SECOND, Window
from reconciler.unchanged import is_current, is_stored
from store.fetch_apply import FetchEnd, TradeFailure, TradeFailures, dead_letter_counter, fetch_trade
from store.gap_reports import PassCounts
from store.ports import ReconcilerTrades
from taobao.errors import PermanentTopError, ServiceRejection, SessionExpired, TopError
from taobao.fields import ALL_TRADE_TYPES, MAX_PAGE_SIZE
from taobao.limiter import Priority
from taobao.models import RejectedItem, Trade

logger = logging.getLogger(__name__)

# Increment and sold.get only see trades created within three months (docs/top-api.md#three-month-window); a
# day of margin.
ONLINE_WINDOW = timedelta(days=89)


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


@dataclass(slots=True)
class ReadResult:
    read: list[Window] = field(default_factory=list)  # windows read completely, in order
    failure: Failure | None = None


class WindowReader:
    """Reads windows for one pass; a trade fetched once is not fetched again (see `TradeFetch`)."""

    def __init__(
        self,
        client: TradeSource,
        store: ReconcilerTrades,
        config: BackfillConfig,
        *,
        lag: LagMeter | None = None,
        now: Callable[[], datetime],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        failures: TradeFailures | None = None,
        within: Sequence[Interval] | None = None,
        skew: Callable[[], timedelta] = lambda: timedelta(0),
    ) -> None:
        self._client = client
        self._skew = skew  # Taobao's clock minus ours where ours is ahead (`Shared.skew`)
        self._store = store
        self.config = config
        self._lag = lag
        self._now = now
        self._sleep = sleep
        # Without the daemon's registry (a test, a one-off command) failures are counted on their own.
        failures = failures or TradeFailures(store, dead_letter_counter(Registry()))
        # `within`: where a fetched version may be applied (see `TradeFetch`); None: anywhere.
        self.fetch = TradeFetch(
            client,
            store,
            failures,
            concurrency=config.concurrency,
            apply_batch=config.apply_batch,
            within=within,
        )
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
        query = ListQuery(self._client, session, self.config.types, self.config.page_size, priority)
        await self._check_suspects(shop, query, counts)
        pending = deque(windows)
        while pending:
            window = pending.popleft()
            try:
                listing = await list_window(query, window, queried_at=self._now(), counts=counts)
            except ServiceRejection as exc:
                halves = await self._narrow(window, exc, shop, counts)
                if halves is None:
                    result.failure = Failure(f"{exc.sub_code}: window too narrow to split further", True)
                    return result
                pending.extendleft(reversed(halves))
                continue
            except SessionExpired:
                raise
            except TopError as exc:
                counts.windows_failed += 1
                result.failure = _list_failure(exc, window, shop)
                return result
            # A trade of the window that cannot be fetched or stored keeps the window unproven.
            target = Target(shop, source, counts, stream_cover, belongs=window.proves)
            result.failure = await self._fetch_listed(session, window, listing, query, target)
            if result.failure is not None:
                counts.windows_failed += 1
                return result
            counts.windows_read += 1
            result.read.append(window)
            if window.proof and self._lag is not None:
                self._lag.proven(shop, window.proves, listing.queried_at)
        return result

    async def _narrow(
        self, window: Window, exc: ServiceRejection, shop: str, counts: PassCounts
    ) -> tuple[Window, Window] | None:
        """After `isv.trade-service-rejection`: the window's halves, once the platform's delay has passed;
        None (and the window counted failed) when it cannot be split further."""
        counts.rejections += 1
        context = _context(shop, window)
        halves = window.halves(self.config.min_window)
        if halves is None:
            counts.windows_failed += 1
            logger.error(
                "trade service rejected a window that cannot be narrowed further",
                extra={"action": "backfill_window_failed", **context},
            )
            return None
        logger.warning(
            "trade service rejected the window; narrowing it and retrying in %.0f s",
            self.config.rejection_retry_seconds,
            extra={"action": "backfill_window_narrowed", **context},
        )
        await self._sleep(self.config.rejection_retry_seconds)
        return halves

    async def _fetch_listed(
        self, session: str, window: Window, listing: Listing, query: ListQuery, target: Target
    ) -> Failure | None:
        for item in listing.rejected:
            await self.dead_letter(
                target.source, f"list entry: {item.reason}", item, target.shop, target.counts
            )
        fetched = self.fetch.fetched
        wanted = [tid for tid in listing.tids if fetched.get(tid, window.start) <= window.end]
        wanted = await self._changed_since_stored(wanted, listing, target.counts, ahead=not window.proof)
        target.counts.found += len(set(listing.tids) - self._listed)
        self._listed.update(listing.tids)
        await self._probe_lag(session, window, listing, query.priority, target)
        return await self.fetch.fetch_and_apply(session, wanted, query.priority, target)

    async def _changed_since_stored(
        self, tids: Sequence[int], listing: Listing, counts: PassCounts, *, ahead: bool
    ) -> list[int]:
        """`tids` less those stored, owing nothing, at the latest version the list can stand for
        (`reconciler.unchanged`; `ahead`: a fresh window's rule); a tid listed without `modified` is
        always fetched."""
        listed = [tid for tid in tids if tid in listing.modified]
        if not listed:
            return list(tids)
        stored = await self._store.settled_versions(listed)
        skew = self._skew()

        def unchanged(tid: int) -> bool:
            if ahead:
                return is_stored(listing.modified[tid], stored[tid])
            return is_current(listing.modified[tid], stored[tid], skew)

        skip = {t for t in listed if t in stored and unchanged(t)}
        counts.fetches_skipped += len(skip)
        return [tid for tid in tids if tid not in skip]

    # ---- list lag ------------------------------------------------------------------------------------

    async def _probe_lag(
        self, session: str, window: Window, listing: Listing, priority: Priority, target: Target
    ) -> None:
        """Trades stored with a `modified` in the window that the list left out: if fullinfo says they
        have not changed since, the list is lagging by at least `queried_at - modified`. Proof windows
        only: a read ahead lists the newest seconds, where a trade left out has mostly just changed
        again, and its probes (fullinfo calls, one after another) would hold the reconnect gate; the
        proof read of the same stretch probes it."""
        if self._lag is None or self.config.lag_probes <= 0 or not window.proof:
            return
        listed = set(listing.tids)
        types = None if self.config.types == ALL_TRADE_TYPES else list(self.config.types)
        rows = await self._store.stored_in_window(
            target.shop,
            window.start,
            window.end,
            created_from=listing.queried_at - ONLINE_WINDOW,
            types=types,
            limit=self.config.lag_probes + len(listed),
        )
        probes = [(tid, modified) for tid, modified in rows if tid not in listed][: self.config.lag_probes]
        trades: list[Trade] = []
        for tid, modified in probes:
            target.counts.fullinfo_calls += 1
            probe = await fetch_trade(self._client, session, tid, priority=priority)
            if probe.end is FetchEnd.SHOP_REJECTED:
                assert probe.error is not None
                raise probe.error
            if probe.trade is None:
                continue  # a probe is a measurement; its trade is read through its own window
            trades.append(probe.trade)
            if probe.trade.modified is not None and probe.trade.modified == modified:
                # Lag, or left out for another reason: only a later listing that shows it can tell.
                self._lag.suspect(target.shop, tid, modified, listing.queried_at)
        await self.fetch.apply(trades, target)

    async def _check_suspects(self, shop: str, query: ListQuery, counts: PassCounts) -> None:
        """List each suspect's second again: shown now, its earlier absence was lag (a sample); still
        missing, it counts towards dropping it (`reconciler.lag`). A failed call just leaves it."""
        if self._lag is None:
            return
        now = self._now()
        for suspect in self._lag.suspects(shop, now)[: self.config.lag_probes]:
            second = Window(suspect.modified, suspect.modified + SECOND, proof=False)
            counts.list_calls += 1
            try:
                page = await query.page(second, 1, use_has_next=False)
            except SessionExpired:
                raise
            except TopError:
                continue
            listed = any(t.tid == suspect.tid for t in page.trades)
            if listed:
                counts.note_lag((suspect.unlisted_at - suspect.modified).total_seconds())
            self._lag.checked(suspect, listed=listed, at=now)

    async def dead_letter(
        self, source: str, reason: str, item: RejectedItem, shop: str, counts: PassCounts
    ) -> None:
        """A list entry (or TOPATS line) that failed validation: recorded as a trade failure."""
        raw = item.raw
        payload = raw if isinstance(raw, str | bytes) else json.dumps(raw, ensure_ascii=False, default=str)
        failure = TradeFailure(source, "invalid_list_entry", reason, payload, None, shop)
        await self.fetch.record(failure, counts)


def _context(shop: str, window: Window) -> dict[str, str]:
    return {"shop": shop, "window_start": window.start.isoformat(), "window_end": window.end.isoformat()}


def _list_failure(exc: TopError, window: Window, shop: str) -> Failure:
    """A list call failed after the client's retries: for good when retrying cannot help (ISV)."""
    context = _context(shop, window)
    if isinstance(exc, PermanentTopError):
        logger.error(
            "list call failed for good (not retried): %s",
            exc,
            extra={"action": "backfill_window_failed", **context},
        )
        return Failure(f"list call: {exc}", retryable=False)
    logger.warning(
        "list call failed after retries: %s", exc, extra={"action": "backfill_window_failed", **context}
    )
    return Failure(f"list call: {exc}", retryable=True)
