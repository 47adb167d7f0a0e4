"""Listing the tids of one increment window (docs/sync-rules.md#explicit-type,
docs/sync-rules.md#backward-paging, docs/sync-rules.md#count-then-walk-back, docs/sync-rules.md#page-size,
docs/sync-rules.md#fields-tid).

One counting call (`use_has_next=false`, page 1), and when there is more than one page, every page from
the last back to the first with `use_has_next=true`; `fields=tid,modified`, page size 100, the explicit full
type list. A tid seen twice (rows shift while pages are walked) is listed once, with the newest `modified`
the pages showed for it (docs/sync-rules.md#fields-tid-modified). TOP errors propagate:
`reconciler.backfill` decides what each means for the window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from reconciler.plan import Window, backward_pages
from store.gap_reports import PassCounts
from taobao.fields import INCREMENT_LIST_FIELDS
from taobao.limiter import Priority
from taobao.models import RejectedItem, Trade, TradePage


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


@dataclass(slots=True)
class Listing:
    tids: list[int]
    # The newest `modified` the pages showed per tid; a tid listed without one is absent (always fetched).
    modified: dict[int, datetime]
    queried_at: datetime  # when the counting call went out: what the list could see is older
    rejected: list[RejectedItem]  # list entries that failed validation


@dataclass(frozen=True, slots=True)
class ListQuery:
    client: TradeSource
    session: str
    types: Sequence[str]
    page_size: int
    priority: Priority

    async def page(self, window: Window, page_no: int, *, use_has_next: bool) -> TradePage:
        return await self.client.trades_sold_increment_get(
            self.session,
            start_modified=window.start,
            end_modified=window.end,
            page_no=page_no,
            page_size=self.page_size,
            fields=INCREMENT_LIST_FIELDS,
            types=self.types,
            use_has_next=use_has_next,
            priority=self.priority,
        )


async def list_window(
    query: ListQuery, window: Window, *, queried_at: datetime, counts: PassCounts
) -> Listing:
    """Every tid the lists hold for `window`, counting call first, then pages last → first."""
    counts.list_calls += 1
    first = await query.page(window, 1, use_has_next=False)
    tids: dict[int, None] = dict.fromkeys(t.tid for t in first.trades)
    modified: dict[int, datetime] = {}
    _note_modified(modified, first.trades)
    rejected = list(first.rejected)
    total = first.total_results if first.total_results is not None else len(first.trades)
    if total > query.page_size:
        # Backward (docs/sync-rules.md#backward-paging): rows that leave the window while we walk shift
        # towards page 1, which is read last; walking forward would skip them.
        for page_no in backward_pages(total, query.page_size):
            counts.list_calls += 1
            page = await query.page(window, page_no, use_has_next=True)
            tids.update(dict.fromkeys(t.tid for t in page.trades))
            _note_modified(modified, page.trades)
            rejected += page.rejected
    return Listing(list(tids), modified, queried_at, rejected)


def _note_modified(modified: dict[int, datetime], trades: Sequence[Trade]) -> None:
    for trade in trades:
        if trade.modified is not None:
            seen = modified.get(trade.tid)
            modified[trade.tid] = trade.modified if seen is None else max(seen, trade.modified)
