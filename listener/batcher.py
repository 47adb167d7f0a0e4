"""Commit batching: fetched trades are written to the store together, then their messages confirmed.

One `apply_trades` per flush. Flushes run one at a time, so the store sees the stream's writes in the
order they were fetched, and trades that arrive while a flush runs go together into the next one (group
commit): at low load a trade is written as soon as the store is free, at high load batches grow by
themselves. Only when the fetch side is saturated (`backlog()` says tids are waiting for a worker) does
a batch linger for company, until `max_size` trades are waiting or the first has waited `max_delay`:
latency is then dominated by the queue anyway, and bigger batches cost less per trade.
Only after a flush returns are the messages it covers confirmed (docs/design.md#confirm-after-commit). A
failed flush confirms nothing and is retried with a jittered, capped backoff until it succeeds or the service
stops.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from listener.metrics import ListenerMetrics
from listener.ports import TradeStore
from store.types import ApplyResult
from taobao.models import Trade

log = logging.getLogger(__name__)

SOURCE = "stream"


class Settler(Protocol):
    """The part of the dispatcher the batcher needs: settle messages after their commit."""

    async def confirm(self, message_ids: Iterable[int]) -> None: ...

    async def leave_unconfirmed(self, message_ids: Iterable[int], kind: str, reason: str) -> None: ...


@dataclass(frozen=True)
class Backoff:
    """Capped exponential delay with jitter, so many restarting daemons do not retry in step."""

    base: float = 0.2
    cap: float = 10.0

    def delay(self, attempt: int) -> float:
        ceiling: float = min(self.cap, self.base * 2.0 ** max(0, attempt - 1))
        return ceiling * random.uniform(0.5, 1.0)


@dataclass
class _Entry:
    trade: Trade
    message_ids: list[int] = field(default_factory=list)


def _no_backlog() -> bool:
    return False


def _newer_or_same(candidate: Trade, current: Trade) -> bool:
    """Whether `candidate` should replace `current` for the same tid within one batch. A later fetch
    wins unless it is visibly older (docs/design.md#modified-never-goes-backwards is enforced again by the
    store's guarded upsert)."""
    if candidate.modified is None or current.modified is None:
        return current.modified is None
    return candidate.modified >= current.modified


class CommitBatcher:
    def __init__(
        self,
        *,
        store: TradeStore,
        settler: Settler,
        max_size: int,
        max_delay: float,
        metrics: ListenerMetrics,
        backoff: Backoff | None = None,
    ) -> None:
        self._store = store
        self._settler = settler
        self._max_size = max_size
        self._max_delay = max_delay
        self._metrics = metrics
        self._backoff = backoff or Backoff()

        # One entry per tid: two fetches of a tid in one batch become one row (an upsert cannot touch
        # the same row twice in one statement) carrying both fetches' messages.
        self._pending: dict[int, _Entry] = {}
        self._first_at = 0.0
        self._has_items = asyncio.Event()
        self._closing = asyncio.Event()
        self._last_write: asyncio.Future[ApplyResult] | None = None
        self.failing = False  # the last flush failed; cleared by the next success (for /readyz)
        self.committing = 0  # trades in the flush being written right now
        self._backlog: Callable[[], bool] = _no_backlog

    def set_backlog_probe(self, backlog: Callable[[], bool]) -> None:
        """`backlog()` is true while more fetched trades are sure to follow soon (tids are queued for a
        worker); only then does a batch wait for company."""
        self._backlog = backlog

    def add(self, trade: Trade, message_ids: Sequence[int]) -> None:
        entry = self._pending.get(trade.tid)
        if entry is None:
            if not self._pending:
                self._first_at = asyncio.get_running_loop().time()
            self._pending[trade.tid] = _Entry(trade, list(message_ids))
        else:
            entry.message_ids += message_ids
            if _newer_or_same(trade, entry.trade):
                entry.trade = trade
        self._has_items.set()

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    async def run(self) -> None:
        """Flush until `close()` was called and nothing is left."""
        while True:
            if not await self._wait_for_batch():
                return
            batch = self._take()
            attempt = 0
            while True:
                attempt += 1
                if await self._commit(batch, attempt):
                    break
                if self._closing.is_set():
                    await self._give_up(batch)
                    break
                try:
                    async with asyncio.timeout(self._backoff.delay(attempt)):
                        await self._closing.wait()
                except TimeoutError:
                    pass

    def close(self) -> None:
        """Flush what is pending at once, without retrying failures, and let `run()` return."""
        self._closing.set()
        self._has_items.set()  # also cuts short a batch that is waiting for company

    async def _wait_for_batch(self) -> bool:
        while not self._pending:
            if self._closing.is_set():
                return False
            self._has_items.clear()
            await self._has_items.wait()
        loop = asyncio.get_running_loop()
        deadline = self._first_at + self._max_delay
        while len(self._pending) < self._max_size and not self._closing.is_set() and self._backlog():
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            # Woken by every add (to look at the backlog again) and by close().
            self._has_items.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._has_items.wait()
            except TimeoutError:
                break
        return True

    def _take(self) -> list[_Entry]:
        tids = list(self._pending)[: self._max_size]
        batch = [self._pending.pop(tid) for tid in tids]
        # Entries left over have waited already: `_first_at` stays, so they go out in the next flush.
        return batch

    async def _commit(self, batch: list[_Entry], attempt: int) -> bool:
        trades = [entry.trade for entry in batch]
        self.committing = len(trades)
        # The write runs as its own task: if this one is cancelled mid-write, the transaction still
        # finishes and its messages are confirmed before the cancellation goes on
        # (docs/design.md#last-write-survives-cancellation).
        write = asyncio.ensure_future(self._store.apply_trades(trades, source=SOURCE))
        self._last_write = write
        try:
            try:
                result = await asyncio.shield(write)
            except asyncio.CancelledError:
                try:
                    result = await write
                except Exception:
                    raise asyncio.CancelledError from None
                await self._settle(batch, result)
                raise
        except asyncio.CancelledError:
            raise
        except Exception:
            self.failing = True
            self._metrics.batches.inc(outcome="failed")
            log.warning(
                "store commit of %d trades failed; their messages stay unconfirmed",
                len(trades),
                exc_info=True,
                extra={"action": "commit_failed", "attempt": attempt},
            )
            return False
        finally:
            self.committing = 0
        self.failing = False
        await self._settle(batch, result)
        return True

    async def _settle(self, batch: list[_Entry], result: ApplyResult) -> None:
        self._metrics.batches.inc(outcome="committed")
        self._metrics.trades_committed.inc(len(batch))
        # A rejected trade was quarantined in the same transaction: its dead-letter row is committed, so
        # its messages are settled like the others (the reconciler is the backstop for the trade).
        covered = set(result.changed) | set(result.unchanged) | set(result.rejected)
        confirm: list[int] = []
        missing: list[int] = []
        for entry in batch:
            (confirm if entry.trade.tid in covered else missing).extend(entry.message_ids)
        log.debug(
            "committed %d trades (%d changed), confirming %d messages",
            len(batch),
            len(result.changed),
            len(confirm),
            extra={"action": "batch_committed"},
        )
        await self._settler.confirm(confirm)
        if missing:
            # The store did not say these were applied; confirming them could lose a change.
            log.warning(
                "store result omitted %d trades of the batch; their messages stay unconfirmed",
                len(batch) - len(covered & {entry.trade.tid for entry in batch}),
                extra={"action": "commit_incomplete"},
            )
            await self._settler.leave_unconfirmed(missing, "not_applied", "store did not apply the trade")

    async def _give_up(self, batch: list[_Entry]) -> None:
        ids = [mid for entry in batch for mid in entry.message_ids]
        log.warning(
            "stopping with an uncommitted batch of %d trades; %d messages stay unconfirmed",
            len(batch),
            len(ids),
            extra={"action": "batch_abandoned"},
        )
        await self._settler.leave_unconfirmed(ids, "shutdown", "stopped before commit")
