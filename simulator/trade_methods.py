"""The trade APIs the gateway serves (docs/top-api.md#trades-sold-get,
docs/top-api.md#trades-sold-increment-get, docs/top-api.md#trade-fullinfo-get), as functions of the market and
the request.

Each returns the response body with plain top-level lists; the gateway adds the envelope.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from simulator.clock import whole_seconds
from simulator.lifecycle import ALL_STATUSES, STATUS_QUERY_GROUPS
from simulator.market import Market
from simulator.top_protocol import (
    FieldSelection,
    TopError,
    invalid,
    parse_bool,
    parse_int,
    parse_time,
    require,
)
from simulator.trade_index import Payload, TradeRecord, Version
from simulator.trade_types import DEFAULT_QUERY_TYPES, KNOWN_TYPES, TYPE_QUERY_GROUPS
from simulator.tradegen import Skeleton

# increment.get may cover at most one day (docs/top-api.md#one-day-span).
MAX_INCREMENT_SPAN_SECONDS = 86400
MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 40
# Fields big-sale list answers leave out besides `orders` (docs/top-api.md#data-delay).
PEAK_OMITTED_FIELDS = frozenset(
    {"oaid", "timeout_action_time", "commission_fee", "available_confirm_fee", "alipay_no"}
)


def trade_not_exist() -> TopError:
    return TopError(15, "Remote Service Error", "isv.trade-not-exist", "交易订单不存在")


@dataclass(frozen=True, slots=True)
class CallContext:
    """What a method needs besides its parameters: whose shop, the server's now, list lag, peak mode."""

    shop: int
    now: int
    online_window_seconds: int
    list_lag_seconds: float = 0.0
    peak_mode: bool = False

    @property
    def window_start(self) -> int:
        return self.now - self.online_window_seconds

    @property
    def lag_cutoff(self) -> int | None:
        if self.list_lag_seconds <= 0:
            return None
        return self.now - int(self.list_lag_seconds)


def parse_types(params: Mapping[str, str]) -> frozenset[str]:
    """The `type` parameter; omitted means the default subset, so other types are silently missed."""
    value = params.get("type", "")
    if value == "":
        return DEFAULT_QUERY_TYPES
    chosen: set[str] = set()
    for name in (v.strip() for v in value.split(",")):
        if not name:
            continue
        if name not in KNOWN_TYPES:
            raise invalid("type", f"不支持的交易类型{name}")
        chosen |= TYPE_QUERY_GROUPS.get(name, {name})
    return frozenset(chosen)


def parse_status(params: Mapping[str, str]) -> frozenset[str] | None:
    value = params.get("status", "")
    if value == "":
        return None
    if value in STATUS_QUERY_GROUPS:
        return STATUS_QUERY_GROUPS[value]
    if value not in ALL_STATUSES:
        raise invalid("status")
    return frozenset({value})


def parse_paging(params: Mapping[str, str]) -> tuple[int, int]:
    page_no = parse_int(params, "page_no", 1)
    page_size = parse_int(params, "page_size", DEFAULT_PAGE_SIZE)
    assert page_no is not None
    assert page_size is not None
    if page_no < 1:
        raise invalid("page_no")
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise invalid("page_size", f"page_size必须在1到{MAX_PAGE_SIZE}之间")
    return page_no, page_size


def _status_of(payload: Payload) -> str:
    return payload.status if isinstance(payload, Skeleton) else str(payload["status"])


def _list_body(
    market: Market,
    ctx: CallContext,
    params: Mapping[str, str],
    rows: list[tuple[TradeRecord, Version]],
) -> dict[str, Any]:
    selection = FieldSelection(require(params, "fields"))
    page_no, page_size = parse_paging(params)
    use_has_next = parse_bool(params, "use_has_next", False)
    buyer_nick = params.get("buyer_nick", "")
    if buyer_nick:
        rows = [(rec, v) for rec, v in rows if market.materialize(v[1]).get("buyer_nick") == buyer_nick]
    start = (page_no - 1) * page_size
    page = rows[start : start + page_size]
    trades = []
    for _rec, version in page:
        raw = market.materialize(version[1])
        trade = selection.apply(raw, with_orders=not ctx.peak_mode)
        if ctx.peak_mode:
            for name in PEAK_OMITTED_FIELDS:
                trade.pop(name, None)
        trades.append(trade)
    body: dict[str, Any] = {}
    if use_has_next:
        body["has_next"] = start + page_size < len(rows)
    else:
        body["total_results"] = len(rows)
    body["trades"] = trades
    return body


def trades_sold_get(market: Market, ctx: CallContext, params: Mapping[str, str]) -> dict[str, Any]:
    """Trades by `created`, newest first, within the three-month online window."""
    require(params, "fields")
    types = parse_types(params)
    statuses = parse_status(params)
    start_dt = parse_time(params, "start_created")
    end_dt = parse_time(params, "end_created")
    # A start before the window is clamped, not refused: the real error for it is unknown
    # (docs/top-api.md#trades-sold-get).
    start = ctx.window_start if start_dt is None else max(whole_seconds(start_dt), ctx.window_start)
    end = ctx.now if end_dt is None else whole_seconds(end_dt)
    cutoff = ctx.lag_cutoff
    rows: list[tuple[TradeRecord, Version]] = []
    if start <= end:
        for rec in reversed(market.created_between(ctx.shop, start, end)):
            if rec.type not in types:
                continue
            version = market.visible_version(rec, cutoff)
            if version is None or (statuses is not None and _status_of(version[1]) not in statuses):
                continue
            rows.append((rec, version))
    return _list_body(market, ctx, params, rows)


def trades_sold_increment_get(market: Market, ctx: CallContext, params: Mapping[str, str]) -> dict[str, Any]:
    """Trades by `modified` within [start_modified, end_modified], newest first; span at most one day."""
    require(params, "fields")
    require(params, "start_modified")
    require(params, "end_modified")
    start_dt = parse_time(params, "start_modified")
    end_dt = parse_time(params, "end_modified")
    assert start_dt is not None
    assert end_dt is not None
    start, end = whole_seconds(start_dt), whole_seconds(end_dt)
    if end <= start:
        raise invalid("end_modified", "end_modified必须大于start_modified")
    if end - start > MAX_INCREMENT_SPAN_SECONDS:
        # The real error shape for a span over one day is unknown (docs/top-api.md#one-day-span); this is a
        # guess.
        raise invalid("end_modified", "查询时间跨度不能超过一天", code=15)
    types = parse_types(params)
    statuses = parse_status(params)
    cutoff = ctx.lag_cutoff
    window_start = ctx.window_start
    rows: list[tuple[TradeRecord, Version]] = []
    for rec in market.modified_candidates(ctx.shop, start, end, cutoff):
        if rec.type not in types or rec.created < window_start:
            continue
        version = market.visible_version(rec, cutoff)
        if version is None or not start <= version[0] <= end:
            continue
        if statuses is not None and _status_of(version[1]) not in statuses:
            continue
        rows.append((rec, version))
    rows.sort(key=lambda row: (row[1][0], row[0].tid), reverse=True)
    return _list_body(market, ctx, params, rows)


def trade_fullinfo_get(market: Market, ctx: CallContext, params: Mapping[str, str]) -> dict[str, Any]:
    """One trade as it is now; unknown tids and other shops' tids do not exist."""
    selection = FieldSelection(require(params, "fields"))
    require(params, "tid")
    tid = parse_int(params, "tid")
    if tid is None or not 1 <= tid <= 2**63 - 1:
        raise invalid("tid")
    rec = market.record(tid)
    if rec is None or rec.shop != ctx.shop:
        raise trade_not_exist()
    return {"trade": selection.apply(market.materialize(rec.current))}
