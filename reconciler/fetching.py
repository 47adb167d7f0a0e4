"""The reconciler's side of the one fetch → apply path (`store.fetch_apply`, which the stream's workers
take too): fullinfo for every listed tid, a few at a time, applied in batches; each trade counted as
new, changed or unchanged for the gap report, and as push loss when its change fell in a stretch the
stream claimed.

How a fetch ended decides what happens (docs/design.md#one-error-taxonomy-three-scopes):
* the trade → applied with the others of its batch;
* the shop's session rejected → `SessionExpired` is raised: nothing more can be done for the shop;
* a problem of the trade alone (`isv.trade-not-exist`, a malformed response, another permanent error)
  → recorded as a trade failure, as the stream does: unresolved, it keeps the window that named it
  (`Target.belongs`) unproven and is retried by the redrive (docs/design.md#unresolved-trades-block-proof);
* anything else (an app-wide failure, which pauses the client; a transient error the client already
  retried) → the rest is not fetched and the window fails for now: it stays a gap, proven by nothing.
A trade the store cannot keep whole is recorded the same way (`store.fetch_apply.apply_fetched`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from common.intervals import Interval, covers
from reconciler.listing import TradeSource
from store.fetch_apply import (
    Fetched,
    FetchEnd,
    TradeFailure,
    TradeFailures,
    apply_fetched,
    fetch_trade,
)
from store.gap_reports import PassCounts, RecoveredTrade
from store.ports import ReconcilerTrades
from taobao.errors import TradeNotFound
from taobao.limiter import Priority
from taobao.models import Trade

logger = logging.getLogger(__name__)

_MIN = datetime.fromisoformat("1970-01-01T00:00:00+00:00")


@dataclass(frozen=True, slots=True)
class Failure:
    reason: str
    # False: an ISV error or another cause retrying cannot fix (docs/sync-rules.md#retry-isp-never-isv)
    retryable: bool


@dataclass(frozen=True, slots=True)
class Target:
    """Where fetched trades go and how they are counted: `shop`'s trades, written as `source`, counted
    into `counts`, push loss measured against `stream_cover`; a trade that fails belongs to `belongs`
    (the window that listed it; None: the second of the version fetched)."""

    shop: str
    source: str
    counts: PassCounts
    stream_cover: Sequence[Interval] = ()
    belongs: Interval | None = None


class TradeFetch:
    """Fetches and applies for one pass; remembers the newest state fetched per tid, so a trade is not
    fetched again unless the lists show it changed since."""

    def __init__(
        self,
        client: TradeSource,
        store: ReconcilerTrades,
        failures: TradeFailures,
        *,
        concurrency: int,
        apply_batch: int,
        within: Sequence[Interval] | None = None,
    ) -> None:
        self._client = client
        self._store = store
        self._failures = failures
        self._concurrency = concurrency
        self.apply_batch = apply_batch
        # Fullinfo answers with a trade's newest version, which can lie past the windows read; with
        # `within`, a version modified outside those stretches is not applied (whoever reads its time
        # brings it in and counts it).
        self._within = within
        self.fetched: dict[int, datetime] = {}

    async def fetch_and_apply(
        self, session: str, tids: Sequence[int], priority: Priority, target: Target
    ) -> Failure | None:
        """Fetch every tid through fullinfo (`concurrency` at a time) and apply them in batches; the
        first failure that is not about one trade stops the rest. Raises SessionExpired."""
        if not tids:
            return None
        run = _Run(self, target)
        queue: deque[int] = deque(tids)

        async def worker() -> None:
            while queue and run.failure is None:
                tid = queue.popleft()
                target.counts.fullinfo_calls += 1
                await run.take(await fetch_trade(self._client, session, tid, priority=priority))

        workers = [
            asyncio.create_task(worker(), name=f"backfill-fetch-{n}")
            for n in range(max(1, min(self._concurrency, len(tids))))
        ]
        try:
            await asyncio.gather(*workers)
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        await run.flush(force=True)
        if run.failure is not None:
            logger.warning(
                "window not read completely: %s",
                run.failure.reason,
                extra={"action": "backfill_fetch_failed", "shop": target.shop},
            )
        return run.failure

    async def apply(self, trades: Sequence[Trade], target: Target) -> None:
        """Apply `trades` (store.fetch_apply.apply_fetched) and count them for the report; with
        `within`, only those modified inside it."""
        within = self._within
        if within is not None:
            trades = [t for t in trades if t.modified is None or covers(within, t.modified)]
        if not trades:
            return
        existed = await self._store.existing_tids([t.tid for t in trades])
        result = await apply_fetched(
            self._store,
            trades,
            source=target.source,
            failures=self._failures,
            shop=target.shop,
            belongs=target.belongs,
        )
        for trade in trades:
            if trade.modified is not None:
                seen = self.fetched.get(trade.tid)
                self.fetched[trade.tid] = trade.modified if seen is None else max(seen, trade.modified)
        counts = target.counts
        changed = set(result.changed)
        unchanged = set(result.unchanged) - changed
        counts.unchanged += len(unchanged)
        if unchanged:
            # Read again and found as stored: the later read time lets the next pass skip it
            # (reconciler.unchanged).
            await self._store.confirm_reads([t for t in _newest(trades).values() if t.tid in unchanged])
        counts.dead_letters += len(result.refused) + len(result.flawed) + len(result.replaced)
        newest = _newest(trades)
        for tid in sorted(changed):
            trade = newest[tid]
            lost = trade.modified is not None and covers(target.stream_cover, trade.modified)
            kind = "changed" if tid in existed else "new"
            if kind == "new":
                counts.new += 1
            else:
                counts.changed += 1
            if lost:
                counts.push_loss += 1
            if counts.keep_trades:
                counts.recovered.append(RecoveredTrade(tid, trade.modified, kind, lost))

    async def record(self, failure: TradeFailure, counts: PassCounts) -> None:
        """A trade (or list entry) that could not be fetched or stored: the one call the stream makes
        too (store.fetch_apply.TradeFailures.record)."""
        await self._failures.record(failure)
        counts.dead_letters += 1


@dataclass(slots=True)
class _Run:
    """One `fetch_and_apply`: the batch being filled, and the failure that stopped it, if any."""

    fetch: TradeFetch
    target: Target
    batch: list[Trade] = field(default_factory=list)
    failure: Failure | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def take(self, fetched: Fetched) -> None:
        if fetched.end is FetchEnd.TRADE:
            assert fetched.trade is not None
            self.batch.append(fetched.trade)
            await self.flush(force=False)
        elif fetched.end is FetchEnd.SHOP_REJECTED:
            assert fetched.error is not None
            raise fetched.error
        elif fetched.end is FetchEnd.TRADE_FAILED:
            target = self.target
            if isinstance(fetched.error, TradeNotFound):
                target.counts.not_found += 1
            failure = TradeFailure(
                target.source,
                fetched.kind,
                fetched.reason,
                fetched.payload(),
                fetched.tid,
                target.shop,
                belongs=target.belongs,
            )
            await self.fetch.record(failure, target.counts)
        elif self.failure is None:
            self.failure = Failure(f"fullinfo of {fetched.tid}: {fetched.error}", retryable=True)

    async def flush(self, *, force: bool) -> None:
        async with self.lock:
            if self.batch and (force or len(self.batch) >= self.fetch.apply_batch):
                taken = self.batch[:]
                self.batch.clear()
                await self.fetch.apply(taken, self.target)


def _newest(trades: Sequence[Trade]) -> dict[int, Trade]:
    """The newest state per tid of a batch (the one the store kept)."""
    newest: dict[int, Trade] = {}
    for trade in trades:
        kept = newest.get(trade.tid)
        if kept is None or (trade.modified or trade.created or _MIN) >= (
            kept.modified or kept.created or _MIN
        ):
            newest[trade.tid] = trade
    return newest
