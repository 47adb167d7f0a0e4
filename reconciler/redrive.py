"""The redrive: unresolved trades (docs/design.md#unresolved-trades-block-proof) fetched again when their
next attempt comes, through the one fetch → apply path (`store.fetch_apply`).

Each round the reconciler redrives the shops it leads, a bounded number of trades each, the most overdue
first. A trade fetched and stored whole is resolved by the store, in the upsert's transaction (a
version read after the last failure, or at least as new as the newest one known, pays the debt). One
that fails again is recorded again without a new dead letter: its attempts grow and its next attempt
moves out on the backoff (`store.fetch_apply.TradeFailures`). What the client could not get past
(a retryable error, a ban, an app-wide failure) and defects leave the trade as it is, due again after
its backoff: an error that might be the platform's is never the trade's. A rejected session stops
the shop's redrive.

A trade the redrive brings in whose version falls in the window of an open gap report is that report's
find (docs/design.md#unresolved-trades-block-proof): the report listed it, or would have, and only
missed storing it; credited there, on-call's report accounts for every trade its gap cost, whichever
of the report's next pass and the redrive got to it first.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from common.intervals import Interval, covers
from reconciler.config import Shared
from reconciler.listing import TradeSource
from store.coverage import ProvenBy
from store.fetch_apply import FetchEnd, TradeFailure, TradeFailures, apply_fetched, fetch_trade
from store.gap_reports import PassCounts, RecoveredTrade
from store.ports import ReconcilerTrades
from store.unresolved import UnresolvedTrade
from taobao.errors import SessionExpired
from taobao.limiter import Priority

logger = logging.getLogger(__name__)

SOURCE = "redrive"


@dataclass(slots=True)
class RedriveCounts:
    tried: int = 0
    stored: int = 0
    failed: int = 0  # failed again for the trade's own reason: recorded, due later
    deferred: int = 0  # the platform or the client could not answer: due again later, not counted


class Redrive:
    def __init__(
        self, shared: Shared, client: TradeSource, trades: ReconcilerTrades, failures: TradeFailures
    ) -> None:
        self._shared = shared
        self._client = client
        self._trades = trades
        self._failures = failures

    async def run(self, shops: list[str]) -> RedriveCounts:
        """Fetch the due unresolved trades of `shops` (the caller leads them)."""
        shared = self._shared
        counts = RedriveCounts()
        due = await shared.unresolved.due(shops, shared.now(), shared.config.redrive_batch * len(shops))
        stopped: set[str] = set()
        for row in due:
            if row.shop in stopped or row.shop not in shared.shops:
                continue
            counts.tried += 1
            try:
                await self._one(row, counts)
            except SessionExpired as exc:
                stopped.add(row.shop)
                logger.error(
                    "redrive stopped: %s", exc, extra={"action": "redrive_session_rejected", "shop": row.shop}
                )
        if counts.tried:
            logger.info(
                "redrive: %d tried, %d stored, %d failed again, %d deferred",
                counts.tried,
                counts.stored,
                counts.failed,
                counts.deferred,
                extra={"action": "redrive_done"},
            )
        return counts

    async def _one(self, row: UnresolvedTrade, counts: RedriveCounts) -> None:
        shared = self._shared
        context = {"tid": row.tid, "shop": row.shop, "attempt": row.attempts + 1}
        try:
            fetched = await fetch_trade(
                self._client, shared.session_of(row.shop), row.tid, priority=Priority.BACKFILL
            )
        except Exception:
            # A defect in the client is not the trade's fault: it stays due, tried after its backoff.
            logger.warning(
                "redrive fetch failed", exc_info=True, extra={"action": "redrive_deferred", **context}
            )
            await self._again(row, "defect", "the client failed; tried again later")
            counts.deferred += 1
            return
        if fetched.end is FetchEnd.SHOP_REJECTED:
            assert fetched.error is not None
            raise fetched.error
        if fetched.end is FetchEnd.TRADE:
            trade = fetched.trade
            assert trade is not None
            existed = await self._trades.existing_tids([trade.tid])
            result = await apply_fetched(
                self._trades, [trade], source=SOURCE, failures=self._failures, shop=row.shop
            )
            if result.refused or result.flawed:
                counts.failed += 1
            else:
                counts.stored += 1
            if trade.tid in result.changed and trade.modified is not None:
                kind = "changed" if trade.tid in existed else "new"
                await self._credit_report(row.shop, RecoveredTrade(trade.tid, trade.modified, kind, False))
            return
        if fetched.end is FetchEnd.TRADE_FAILED:
            counts.failed += 1
            await self._again(row, fetched.kind, fetched.reason, payload=fetched.payload())
            return
        counts.deferred += 1
        await self._again(row, row.kind, f"{row.reason} (redrive: {fetched.reason})")

    async def _credit_report(self, shop: str, found: RecoveredTrade) -> None:
        """Add `found` to the open gap reports of `shop` whose window holds its version (module doc)."""
        shared = self._shared
        assert found.modified is not None
        for report in await shared.reports.open_reports(shop):
            window = Interval(report.window_start, report.window_end)
            if not window.contains(found.modified):
                continue
            stream = await shared.ledger.intervals(shop, window.start, window.end, kinds=[ProvenBy.STREAM])
            lost = covers(stream, found.modified)
            counts = PassCounts(push_loss=int(lost))
            counts.new, counts.changed = (1, 0) if found.kind == "new" else (0, 1)
            counts.recovered.append(RecoveredTrade(found.tid, found.modified, found.kind, lost))
            await shared.reports.add_pass(
                report.id, counts, started_at=shared.now(), progress_until=None, fresh_until=None,
                overlap_seconds=None,
            )  # fmt: skip

    async def _again(self, row: UnresolvedTrade, kind: str, reason: str, payload: str | None = None) -> None:
        """The trade is still owed: its row counts the attempt and waits for its next one."""
        failure = TradeFailure(SOURCE, kind, reason, payload or b"", row.tid, row.shop, belongs=row.belongs)
        await self._failures.record(failure, history=False)
