"""The worker pool: take a tid from the dispatcher, fetch its current state, hand it to the batcher.

What happens to the messages a fetch covers depends only on how the fetch ended
(docs/design.md#one-error-taxonomy-three-scopes):

  trade                → batcher: committed, then confirmed
  SessionExpired       → the shop is paused; messages left unconfirmed (the server redelivers them)
  PermanentTopError    → dead letter, then confirm (incl. TradeNotFound, MalformedResponse): a retry
                         cannot succeed, and an unconfirmed message would come back forever
  anything else        → left unconfirmed: the client already retried retryable errors and waited out
                         bans, so one that escapes (or a ServiceRejection) is left to TMC's redelivery
"""

from __future__ import annotations

import asyncio
import logging

from listener.batcher import CommitBatcher
from listener.dispatcher import Dispatcher, WorkItem
from listener.metrics import ListenerMetrics
from listener.ports import TradeFetcher
from taobao.errors import PermanentTopError, SessionExpired, TopError
from taobao.limiter import Priority

log = logging.getLogger(__name__)


class WorkerPool:
    def __init__(
        self,
        *,
        dispatcher: Dispatcher,
        fetcher: TradeFetcher,
        batcher: CommitBatcher,
        size: int,
        metrics: ListenerMetrics,
    ) -> None:
        if size < 1:
            raise ValueError("a worker pool needs at least one worker")
        self._dispatcher = dispatcher
        self._fetcher = fetcher
        self._batcher = batcher
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
        while True:
            item = await self._dispatcher.next_work()
            try:
                await self._process(item)
            finally:
                await self._dispatcher.finish_fetch(item)

    async def _process(self, item: WorkItem) -> None:
        context = {"tid": item.tid, "shop": item.shop}
        try:
            trade = await self._fetcher.trade_fullinfo(
                item.session.get_secret_value(), item.tid, priority=Priority.STREAM
            )
        except SessionExpired as exc:
            self._metrics.fetches.inc(outcome="session_expired")
            await self._dispatcher.pause_shop(item.shop, str(exc))
            await self._dispatcher.leave_unconfirmed(item.message_ids, "shop_paused", "session expired")
        except PermanentTopError as exc:
            self._metrics.fetches.inc(outcome="permanent_error")
            log.warning("fullinfo failed for good: %s", exc, extra={"action": "fetch_permanent", **context})
            await self._dispatcher.quarantine(item.message_ids, type(exc).__name__, f"fullinfo: {exc}")
        except Exception as exc:
            # Includes RetryableTopError, RateLimited and ServiceRejection after the client's own retries,
            # and defects in the fetcher: the message comes back later, so nothing is lost.
            self._metrics.fetches.inc(outcome="retry_later")
            log.warning(
                "fullinfo failed (%s); messages left for redelivery",
                type(exc).__name__,
                exc_info=not isinstance(exc, TopError),  # a TOP error explains itself; others are defects
                extra={"action": "fetch_failed", **context},
            )
            await self._dispatcher.leave_unconfirmed(item.message_ids, "fetch_failed", type(exc).__name__)
        else:
            self._metrics.fetches.inc(outcome="ok")
            self._batcher.add(trade, item.message_ids)
