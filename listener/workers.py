"""The worker pool: take a tid from the dispatcher, fetch its current state, hand it to the batcher.

What happens to the messages a fetch covers depends only on how the fetch ended (`store.fetch_apply`,
the path the reconciler's backfill takes too; docs/design.md#one-error-taxonomy-three-scopes):

  TRADE          → batcher: committed, then confirmed
  SHOP_REJECTED  → the shop is paused; messages left unconfirmed (the server redelivers them). When the
                   rejected session is no longer the shop's (renewed while the call was in flight), the
                   messages stay held and are fetched again with the new one instead
  TRADE_FAILED   → `isv.trade-not-exist` within SYNC_DETAIL_LAG_SECONDS of the push is lag (the detail
                   store lags the message channel): the messages stay held and the tid is fetched again
                   after a backoff (`Dispatcher.retry_later`). Otherwise (and after that allowance) the
                   trade is recorded as unresolved, with its dead letter: it is retried on its own
                   schedule and keeps the second of its message unproven
                   (docs/design.md#unresolved-trades-block-proof); then the messages are confirmed, or
                   they would come back forever. Not recorded: left unconfirmed.
  APP_FAILED     → left unconfirmed (nothing recorded against the trade, nothing confirmed, so nothing
                   proven): an app-wide failure is never the message's fault. The client now holds
                   every fetch behind one probe (`taobao.pause`); the server redelivers the messages
                   and they are fetched once the probe is answered
  RETRY_LATER    → left unconfirmed: the client already retried retryable errors and waited out bans,
                   so one that escapes (or a ServiceRejection) is left to TMC's redelivery; so is a
                   defect in the fetcher
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from common.backoff import BackoffPolicy, delay_after
from listener.batcher import CommitBatcher
from listener.dispatcher import Dispatcher, WorkItem
from listener.metrics import ListenerMetrics
from listener.ports import TradeFetcher
from store.fetch_apply import REDRIVE_POLICY, Fetched, FetchEnd, TradeFailure, TradeFailures, fetch_trade
from store.ports import FailureLog
from store.unresolved import second_of
from taobao.errors import TradeNotFound
from taobao.limiter import Priority

log = logging.getLogger(__name__)

SOURCE = "stream"
# The `fullinfo_fetches_total` outcome of each end.
_OUTCOMES = {
    FetchEnd.TRADE: "ok",
    FetchEnd.SHOP_REJECTED: "session_expired",
    FetchEnd.TRADE_FAILED: "permanent_error",
    FetchEnd.APP_FAILED: "app_wide_error",
    FetchEnd.RETRY_LATER: "retry_later",
}
# A trade not there yet is fetched again after 1 s, doubling to 30 s, jittered.
LAG_RETRY: Final = BackoffPolicy(base=1.0, cap=30.0)


@dataclass(frozen=True, slots=True)
class TradeLag:
    """How long the stream waits for a trade fullinfo does not know yet (SYNC_DETAIL_LAG_SECONDS)."""

    allowance: float = 180.0
    retry: BackoffPolicy = LAG_RETRY


class WorkerPool:
    def __init__(
        self,
        *,
        dispatcher: Dispatcher,
        fetcher: TradeFetcher,
        batcher: CommitBatcher,
        store: FailureLog,
        size: int,
        metrics: ListenerMetrics,
        lag: TradeLag | None = None,
        redrive: BackoffPolicy = REDRIVE_POLICY,
    ) -> None:
        if size < 1:
            raise ValueError("a worker pool needs at least one worker")
        self._dispatcher = dispatcher
        self._fetcher = fetcher
        self._batcher = batcher
        self._lag = lag or TradeLag()
        self._failures = TradeFailures(store, metrics.dead_letters, policy=redrive)
        self._metrics = metrics
        self.size = size
        # Batches wait for company only while fetched trades are sure to keep coming.
        batcher.set_backlog_probe(dispatcher.has_backlog)

    async def run(self) -> None:
        """Run `size` workers until cancelled. A worker never dies of a fetch error; if one dies of a
        defect, the group (and so the daemon, through its supervisor) stops."""
        async with asyncio.TaskGroup() as group:
            for number in range(self.size):
                group.create_task(self._work(), name=f"fetch-worker-{number}")

    async def _work(self) -> None:
        budget = self._batcher.budget
        while True:
            # Room for what the fetch may bring before taking the work: while commits fall behind,
            # tids stay queued (and coalesce) rather than fetched trades piling up in memory.
            await budget.reserve()
            try:
                item = await self._dispatcher.next_work()
                try:
                    await self._process(item)
                finally:
                    await self._dispatcher.finish_fetch(item)
            finally:
                budget.unreserve()

    async def _process(self, item: WorkItem) -> None:
        context = {"tid": item.tid, "shop": item.shop}
        try:
            fetched = await fetch_trade(
                self._fetcher, item.session.get_secret_value(), item.tid, priority=Priority.STREAM
            )
        except Exception as exc:
            # A defect in the fetcher: the message comes back later, so nothing is lost.
            self._metrics.fetches.inc(outcome=_OUTCOMES[FetchEnd.RETRY_LATER])
            log.warning(
                "fullinfo failed (%s); messages left for redelivery",
                type(exc).__name__,
                exc_info=True,
                extra={"action": "fetch_failed", **context},
            )
            await self._dispatcher.leave_unconfirmed(item.message_ids, "fetch_failed", type(exc).__name__)
            return
        self._metrics.fetches.inc(outcome=_OUTCOMES[fetched.end])
        if fetched.end is FetchEnd.TRADE:
            assert fetched.trade is not None
            self._batcher.add(fetched.trade, item.message_ids)
        elif fetched.end is FetchEnd.SHOP_REJECTED:
            if not self._dispatcher.fetch_again_if_renewed(item):
                await self._dispatcher.pause_shop(item.shop, str(fetched.error))
                await self._dispatcher.leave_unconfirmed(item.message_ids, "shop_paused", "session expired")
        elif fetched.end is FetchEnd.TRADE_FAILED and self._lagging(item, fetched):
            self._metrics.fetches.inc(outcome="not_there_yet")
            self._dispatcher.retry_later(item, delay_after(self._lag.retry, item.retries + 1))
        elif fetched.end is FetchEnd.TRADE_FAILED:
            log.warning(
                "fullinfo failed for good: %s", fetched.error, extra={"action": "fetch_permanent", **context}
            )
            await self._record(item, fetched)
        elif fetched.end is FetchEnd.APP_FAILED:
            # No log line per message: the pause logs once when it trips and once when it clears.
            await self._dispatcher.leave_unconfirmed(item.message_ids, "app_paused", fetched.kind)
        else:
            log.warning(
                "fullinfo failed (%s); messages left for redelivery",
                fetched.kind,
                extra={"action": "fetch_failed", **context},
            )
            await self._dispatcher.leave_unconfirmed(item.message_ids, "fetch_failed", fetched.kind)

    def _lagging(self, item: WorkItem, fetched: Fetched) -> bool:
        """`isv.trade-not-exist` while the oldest message is younger than the allowance: lag."""
        return isinstance(fetched.error, TradeNotFound) and item.held_for < self._lag.allowance

    async def _record(self, item: WorkItem, fetched: Fetched) -> None:
        """Record the trade failure, then confirm the messages; without the record, confirming would
        lose the change, so they are left for redelivery instead. The trade belongs to the second of
        its oldest message: the stream's proof was held behind it until now."""
        failure = TradeFailure(
            source=SOURCE,
            kind=fetched.kind,
            reason=fetched.reason,
            payload=json.dumps({"tid": item.tid, "message_ids": list(item.message_ids)}),
            tid=item.tid,
            shop=item.shop,
            belongs=second_of(item.oldest_time or datetime.now(UTC)),
        )
        try:
            await self._failures.record(failure)
        except Exception:
            log.exception(
                "could not record the trade failure; messages left for redelivery",
                extra={"action": "dead_letter_failed", "tid": item.tid, "shop": item.shop},
            )
            await self._dispatcher.leave_unconfirmed(
                item.message_ids, "dead_letter_failed", "dead letter write failed"
            )
            return
        await self._dispatcher.confirm(item.message_ids)
