"""Reading an answer's payload into the models: one trade (`parse_trade`, fullinfo) or one list page
(`parse_trade_page`), checking a page's count, trades and `has_next` agree before anything is built on
it (docs/design.md#lists-are-checked-before-proof).

Pure: a payload in, a model or a `TopError` out (`MalformedResponse` for one trade's content,
`MalformedPage` for a page); nothing else escapes, whatever the payload holds
(docs/design.md#bad-input-never-crashes). What one page can be checked for:

* the counting call (`use_has_next=false`) must carry `total_results` unless the page is empty, and
  hold `min(total_results - skipped, page_size)` entries: a short or empty page where the count
  promises more is malformed;
* a paging call (`use_has_next=true`) must carry `has_next` unless the page is empty, and a page that
  says more follow must be full.

Entries that fail validation still count as entries (they land in `rejected`, and become dead letters).
Whether the pages of one window agree with each other is `reconciler.listing`'s to check.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from taobao.errors import MalformedPage, MalformedResponse
from taobao.fields import TRADE_FULLINFO_GET
from taobao.models import Trade, TradePage

# How much of an unusable answer a dead-letter row keeps.
_PAYLOAD_CHARS = 64 * 1024
# What odd values raise while a model is built: pydantic's ValidationError is a ValueError; decimal's
# InvalidOperation and datetime's OverflowError are ArithmeticErrors, which validation lets through.
_CONTENT_ERRORS = (ValueError, TypeError, ArithmeticError, RecursionError)


def parse_trade(payload: dict[str, Any], tid: int) -> Trade:
    """The trade in a fullinfo payload, stamped with the time it was read; `MalformedResponse` when it
    is missing, does not validate, or is another trade."""
    item = payload.get("trade")
    if not isinstance(item, dict):
        raise _unusable("no trade object in the response", payload, tid)
    try:
        trade = Trade.model_validate(item)
    except _CONTENT_ERRORS as exc:
        count = exc.error_count() if isinstance(exc, ValidationError) else 1
        raise _unusable(f"trade failed validation ({count} error(s))", item, tid) from exc
    if trade.tid != tid:
        raise _unusable(f"asked for tid {tid}, got {trade.tid}", item, tid)
    return trade.model_copy(update={"fetched_at": datetime.now(UTC)})


def parse_trade_page(
    payload: dict[str, Any], *, method: str, page_no: int, page_size: int, use_has_next: bool
) -> TradePage:
    """The page in `payload`, checked; raises `MalformedPage` (and nothing else) when it does not add up."""
    try:
        page = TradePage.from_payload(payload)
    except _CONTENT_ERRORS as exc:
        raise _malformed(f"page does not parse ({type(exc).__name__})", method) from None
    problem = page_problem(page, page_no=page_no, page_size=page_size, use_has_next=use_has_next)
    if problem is not None:
        raise _malformed(problem, method)
    return page


def page_problem(page: TradePage, *, page_no: int, page_size: int, use_has_next: bool) -> str | None:
    """Why `page` cannot be trusted, or None."""
    entries = len(page.trades) + len(page.rejected)
    if entries > page_size:
        return f"{entries} entries on a page of {page_size}"
    if use_has_next:
        if page.has_next is None:
            return None if entries == 0 else "has_next missing from a page with trades"
        if page.has_next and entries < page_size:
            return f"has_next promised more after a page of {entries} of {page_size}"
        return None
    if page.total_results is None:
        return None if entries == 0 else "total_results missing from a page with trades"
    if page.total_results < 0:
        return f"total_results is {page.total_results}"
    expected = max(0, min(page.total_results - (page_no - 1) * page_size, page_size))
    if entries != expected:
        return f"{entries} entries where total_results={page.total_results} promised {expected}"
    return None


def _malformed(reason: str, method: str) -> MalformedPage:
    # No payload kept: the window is read again, so nothing is owed; the reason is what the log needs.
    return MalformedPage(f"malformed list page: {reason}", method=method)


def _unusable(reason: str, payload: Any, tid: int) -> MalformedResponse:
    return MalformedResponse(reason, payload=dump_payload(payload), method=TRADE_FULLINFO_GET, tid=tid)


def dump_payload(value: Any) -> str:
    """`value` as JSON text for a dead-letter row, cut to a size a row can hold."""
    try:
        return json.dumps(value, ensure_ascii=False, default=str)[:_PAYLOAD_CHARS]
    except (ValueError, TypeError, RecursionError):
        return repr(value)[:_PAYLOAD_CHARS]
