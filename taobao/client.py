"""`TopClient`: the trade APIs the service calls (docs/top-api.md), over `taobao.transport.TopTransport`
(the limiter, signing, retries and the envelope, one call at a time).

`trade_fullinfo` for the stream and the backfill, the two list calls for reconciliation and the initial
load (`trades_sold_get`, `trades_sold_increment_get`, always with every trade type), and the TOPATS export
(start, poll, download) for three months of history. Each validates what it sends and what comes back;
a response it cannot use is a `MalformedResponse` carrying the payload for the dead-letter table.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import date, datetime
from typing import IO

from pydantic import ValidationError

from taobao.answers import dump_payload, parse_trade, parse_trade_page
from taobao.errors import MalformedResponse
from taobao.fields import (
    ALL_TRADE_TYPES,
    FULLINFO_FIELDS,
    LIST_FIELDS,
    MAX_INCREMENT_SPAN,
    MAX_PAGE_SIZE,
    TOPATS_RESULT_GET,
    TOPATS_TRADES_SOLD_GET,
    TRADE_FULLINFO_GET,
    TRADES_SOLD_GET,
    TRADES_SOLD_INCREMENT_GET,
)
from taobao.limiter import Priority
from taobao.models import TopatsTask, Trade, TradePage
from taobao.topats import download_result
from taobao.transport import RetryPolicy, TopTransport

# A TopClient is configured with a RetryPolicy, so both are importable from here.
__all__ = ["RetryPolicy", "TopClient"]


class TopClient(TopTransport):
    """Async client for the TOP trade APIs. Use `async with` or call `close()`."""

    async def trade_fullinfo(
        self,
        session: str,
        tid: int,
        *,
        fields: str = FULLINFO_FIELDS,
        priority: Priority = Priority.STREAM,
    ) -> Trade:
        """`taobao.trade.fullinfo.get`: the trade's current state. `fields` must include `tid`."""
        payload = await self.call(
            TRADE_FULLINFO_GET, {"fields": fields, "tid": tid}, session=session, priority=priority, tid=tid
        )
        return parse_trade(payload, tid)

    async def trades_sold_get(
        self,
        session: str,
        *,
        start_created: datetime,
        end_created: datetime,
        page_no: int,
        page_size: int = MAX_PAGE_SIZE,
        fields: str = LIST_FIELDS,
        types: Sequence[str] = ALL_TRADE_TYPES,
        use_has_next: bool = True,
        priority: Priority = Priority.BACKFILL,
    ) -> TradePage:
        """`taobao.trades.sold.get`: one page of trades created in the window, newest first."""
        if end_created < start_created:
            raise ValueError("end_created is before start_created")
        window = {"start_created": start_created, "end_created": end_created}
        return await self._trade_page(
            TRADES_SOLD_GET, session, window, page_no, page_size, fields, types, use_has_next, priority
        )

    async def trades_sold_increment_get(
        self,
        session: str,
        *,
        start_modified: datetime,
        end_modified: datetime,
        page_no: int,
        page_size: int = MAX_PAGE_SIZE,
        fields: str = LIST_FIELDS,
        types: Sequence[str] = ALL_TRADE_TYPES,
        use_has_next: bool = True,
        priority: Priority = Priority.BACKFILL,
    ) -> TradePage:
        """`taobao.trades.sold.increment.get`: one page of trades modified in the window, most recently
        modified first. The window must be shorter than a day (`fields.MAX_INCREMENT_SPAN`)."""
        span = end_modified - start_modified
        if span.total_seconds() <= 0:
            raise ValueError("end_modified must be after start_modified")
        if span > MAX_INCREMENT_SPAN:
            raise ValueError(
                f"increment window of {span} is longer than {MAX_INCREMENT_SPAN}; "
                "TOP allows at most one day per call, split the window"
            )
        window = {"start_modified": start_modified, "end_modified": end_modified}
        return await self._trade_page(
            TRADES_SOLD_INCREMENT_GET,
            session,
            window,
            page_no,
            page_size,
            fields,
            types,
            use_has_next,
            priority,
        )

    async def _trade_page(
        self,
        method: str,
        session: str,
        window: dict[str, datetime],
        page_no: int,
        page_size: int,
        fields: str,
        types: Sequence[str],
        use_has_next: bool,
        priority: Priority,
    ) -> TradePage:
        """One page of a list call; `type` is always sent in full (docs/sync-rules.md#explicit-type)."""
        _check_paging(page_no, page_size, types)
        payload = await self.call(
            method,
            {
                "fields": fields,
                **window,
                "type": list(types),
                "page_no": page_no,
                "page_size": page_size,
                "use_has_next": use_has_next,
            },
            session=session,
            priority=priority,
        )
        return parse_trade_page(
            payload, method=method, page_no=page_no, page_size=page_size, use_has_next=use_has_next
        )

    # ---- TOPATS (legacy asynchronous export, docs/top-api.md#topats) ---------------------------------------

    async def topats_trades_sold_get(
        self,
        session: str,
        *,
        start_date: date,
        end_date: date,
        fields: str,
        priority: Priority = Priority.BACKFILL,
    ) -> int:
        """`taobao.topats.trades.sold.get`: start an export of whole days; returns the task id."""
        if end_date < start_date:
            raise ValueError("end_date is before start_date")
        payload = await self.call(
            TOPATS_TRADES_SOLD_GET,
            {
                "start_time": start_date.strftime("%Y%m%d"),
                "end_time": end_date.strftime("%Y%m%d"),
                "fields": fields,
            },
            session=session,
            priority=priority,
        )
        task = payload.get("task")
        task_id = task.get("task_id") if isinstance(task, dict) else None
        if isinstance(task_id, str) and task_id.strip().isdigit():
            task_id = int(task_id)
        if not isinstance(task_id, int) or isinstance(task_id, bool):
            raise MalformedResponse(
                "no task id in the response", payload=dump_payload(payload), method=TOPATS_TRADES_SOLD_GET
            )
        return task_id

    async def topats_result_get(
        self, task_id: int, *, session: str | None = None, priority: Priority = Priority.BACKFILL
    ) -> TopatsTask:
        """`taobao.topats.result.get`: the task's status and, once done, a single-use download URL."""
        payload = await self.call(TOPATS_RESULT_GET, {"task_id": task_id}, session=session, priority=priority)
        task = payload.get("task")
        if not isinstance(task, dict):
            raise MalformedResponse(
                "no task object in the response", payload=dump_payload(payload), method=TOPATS_RESULT_GET
            )
        try:
            return TopatsTask.model_validate(task)
        except ValidationError as exc:
            raise MalformedResponse(
                "task failed validation", payload=dump_payload(task), method=TOPATS_RESULT_GET
            ) from exc

    async def download_topats_result(
        self, url: str, dest: str | os.PathLike[str] | IO[bytes], *, check_code: str | None
    ) -> None:
        """Stream a TOPATS result file into `dest` (a path, or a writable binary file), checking its MD5
        against `check_code`. A path is written through a `.part` file and appears only when the check
        passes. Read the trades with `taobao.topats.iter_trades`. Not a TOP API call: no quota taken."""
        await download_result(
            self._session(), url, dest, check_code=check_code, socket_timeouts=self.socket_timeouts
        )


def _check_paging(page_no: int, page_size: int, types: Sequence[str]) -> None:
    if page_no < 1:
        raise ValueError("page_no starts at 1")
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"page_size must be 1..{MAX_PAGE_SIZE}")
    if isinstance(types, str) or not types:
        # Without `type` TOP returns only a few default types and silently drops the rest.
        raise ValueError("types must be a non-empty sequence of trade types")
