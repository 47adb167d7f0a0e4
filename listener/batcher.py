"""Commit batching: fetched trades are written to the store together, then their messages confirmed.

One `apply_trades` per flush, through `store.fetch_apply.apply_fetched` (the path the reconciler takes
too, which records the trades the store could not keep whole as unresolved). Flushes run one at a time,
so the store sees the stream's writes in the order they were fetched, and trades that arrive while a
flush runs go together into the next one (group commit): at low load a trade is written as soon as the
store is free, at high load batches grow by themselves (up to `max_size` trades and `MAX_BATCH_BYTES`).
Only when the fetch side is saturated (`backlog()` says tids are waiting for a worker) does a batch
linger for company, until `max_size` trades are waiting or the first has waited `max_delay`: latency is
then dominated by the queue anyway, and bigger batches cost less per trade. Only after a flush returns
are the messages it covers confirmed (docs/design.md#confirm-after-commit). A failed flush confirms
nothing and is retried (`common.backoff.retrying`, jittered and capped) until it succeeds or the
service stops.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from common.backoff import BackoffPolicy, retrying
from listener.capacity import DEFAULT_MAX_FETCHED_BYTES, FetchBudget, trade_size
from listener.metrics import ListenerMetrics
from listener.ports import TradeStore
from store.fetch_apply import REDRIVE_POLICY, TradeFailures, apply_fetched
from store.types import ApplyResult
from taobao.models import Trade

log = logging.getLogger(__name__)

SOURCE = "stream"
# How a failed flush is retried: soon at first (a pool connection was reset), at most every 10 s.
STORE_RETRY: Final = BackoffPolicy(base=0.2, cap=10.0)
# Estimated trade memory one flush writes at most (one trade always goes): the write encodes its batch
# again (JSON text, then the wire message), so a batch of large trades would double the memory held.
MAX_BATCH_BYTES: Final = 8 * 1024 * 1024


class Settler(Protocol):
    """The part of the dispatcher the batcher needs: settle messages after their commit."""

    async def confirm(self, message_ids: Iterable[int]) -> None: ...

    async def leave_unconfirmed(self, message_ids: Iterable[int], kind: str, reason: str) -> None: ...


class _Closing(Exception):
    """Raised instead of waiting for the next attempt once `close()` was called: the batch is given up."""


@dataclass
class _Entry:
    trade: Trade
    size: int  # trade_size(trade), held in the fetch budget until the entry's flush ends
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
        max_fetched_bytes: int = DEFAULT_MAX_FETCHED_BYTES,
        retry: BackoffPolicy = STORE_RETRY,
        redrive: BackoffPolicy = REDRIVE_POLICY,
    ) -> None:
        self._store = store
        # Fetches wait on it (WorkerPool) while the trades waiting here for their commit fill it.
        self.budget = FetchBudget(max_fetched_bytes)
        # Trades the store cannot keep whole become unresolved, recorded where the reconciler records
        # its own (store.fetch_apply), before their messages are settled.
        self._failures = TradeFailures(store, metrics.dead_letters, policy=redrive)
        self._settler = settler
        self._max_size = max_size
        self._max_delay = max_delay
        self._metrics = metrics
        self._retry = retry

        # One entry per tid: two fetches of a tid in one batch become one row (an upsert cannot touch
        # the same row twice in one statement) carrying both fetches' messages.
        self._pending: dict[int, _Entry] = {}
        self._first_at = 0.0
        self._has_items = asyncio.Event()
        self._closing = asyncio.Event()
        self.failing = False  # the last flush failed; cleared by the next success (for /readyz)
        self._writing_since: float | None = None  # loop time the write in progress began
        self._backlog: Callable[[], bool] = _no_backlog
        metrics.registry.gauge(
            "fetched_bytes_held",
            "Estimated memory of trades fetched and not yet committed",
            self._gauge_bytes,
        )

    def set_backlog_probe(self, backlog: Callable[[], bool]) -> None:
        """`backlog()` is true while more fetched trades are sure to follow soon (tids are queued for a
        worker); only then does a batch wait for company."""
        self._backlog = backlog

    def add(self, trade: Trade, message_ids: Sequence[int]) -> None:
        size = trade_size(trade)
        self.budget.hold(size)
        entry = self._pending.get(trade.tid)
        if entry is None:
            if not self._pending:
                self._first_at = asyncio.get_running_loop().time()
            self._pending[trade.tid] = _Entry(trade, size, list(message_ids))
        else:
            entry.message_ids += message_ids
            if _newer_or_same(trade, entry.trade):
                self.budget.release(entry.size)
                entry.trade, entry.size = trade, size
            else:
                self.budget.release(size)
        self._has_items.set()

    def _gauge_bytes(self) -> list[tuple[dict[str, str], float]]:
        return [({}, float(self.budget.bytes))]

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def writing_for(self) -> float:
        """Seconds the store write in progress has taken so far (0: none is): a write that hangs on a
        silent database is as bad as one that fails, and /readyz says so before it times out."""
        if self._writing_since is None:
            return 0.0
        return asyncio.get_running_loop().time() - self._writing_since

    async def run(self) -> None:
        """Flush until `close()` was called and nothing is left."""
        while await self._wait_for_batch():
            batch = self._take()
            try:
                await self._flush(batch)
            finally:
                self.budget.release(sum(entry.size for entry in batch))

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
        """The oldest pending entries, up to `max_size` of them and `MAX_BATCH_BYTES`."""
        batch: list[_Entry] = []
        size = 0
        for tid in list(self._pending)[: self._max_size]:
            entry = self._pending[tid]
            if batch and size + entry.size > MAX_BATCH_BYTES:
                break
            batch.append(self._pending.pop(tid))
            size += entry.size
        # Entries left over have waited already: `_first_at` stays, so they go out in the next flush.
        return batch

    async def _flush(self, batch: list[_Entry]) -> None:
        """Write `batch` until a write succeeds, then settle its messages; after `close()` a failed
        write is not retried and the messages are handed back."""
        try:
            result = await retrying(
                functools.partial(self._write, batch),
                retry_on=Exception,  # whatever the store raised, the batch stays and is tried again
                policy=self._retry,
                sleep=self._pause,
                on_retry=functools.partial(self._write_failed, len(batch)),
            )
        except _Closing:
            await self._give_up(batch)
            return
        self.failing = False
        await self._settle(batch, result)

    async def _write(self, batch: list[_Entry]) -> ApplyResult:
        trades = [entry.trade for entry in batch]
        # The write runs as its own task: if this one is cancelled mid-write, the transaction still
        # finishes and its messages are confirmed before the cancellation goes on
        # (docs/design.md#last-write-survives-cancellation).
        write = asyncio.ensure_future(
            apply_fetched(self._store, trades, source=SOURCE, failures=self._failures)
        )
        self._writing_since = asyncio.get_running_loop().time()
        write.add_done_callback(self._write_ended)
        try:
            return await asyncio.shield(write)
        except asyncio.CancelledError:
            try:
                result = await write
            except Exception:
                raise asyncio.CancelledError from None
            await self._settle(batch, result)
            raise

    def _write_ended(self, _write: asyncio.Future[ApplyResult]) -> None:
        self._writing_since = None

    def _write_failed(self, trades: int, error: BaseException, attempt: int, delay: float) -> None:
        self.failing = True
        self._metrics.batches.inc(outcome="failed")
        log.warning(
            "store commit of %d trades failed; their messages stay unconfirmed",
            trades,
            exc_info=error,
            extra={"action": "commit_failed", "attempt": attempt},
        )

    async def _pause(self, delay: float) -> None:
        """The wait between attempts, cut short by `close()`; once closing, no further attempt."""
        if self._closing.is_set():
            raise _Closing
        try:
            async with asyncio.timeout(delay):
                await self._closing.wait()
        except TimeoutError:
            pass

    async def _settle(self, batch: list[_Entry], result: ApplyResult) -> None:
        self._metrics.batches.inc(outcome="committed")
        self._metrics.trades_committed.inc(len(batch))
        # A refused trade was recorded as unresolved before the write returned: the debt is committed,
        # so its messages are settled like the others (the redrive owns the trade now).
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
