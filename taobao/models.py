"""Typed views of TOP's Trade and Order (docs/top-api.md#trade-fullinfo-get).

Ids are int64 (modern tids have 19 digits, beyond a float's precision), money is Decimal, times are
GMT+8 strings turned into aware datetimes here and nowhere else. The whole JSON object as received
stays in `raw`, so fields this model does not name still reach the database.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from taobao.timefmt import parse_top_time

INT64_MAX = 2**63 - 1


def _to_time(value: Any) -> Any:
    if isinstance(value, str):
        return parse_top_time(value)
    if isinstance(value, datetime) and value.tzinfo is None:
        raise ValueError("naive datetime")
    return value


def _to_money(value: Any) -> Any:
    if isinstance(value, float):
        # A float has already lost the cents; refuse rather than store a wrong amount.
        raise ValueError("money must be a string or an integer, not a float")
    if isinstance(value, str):
        try:
            return Decimal(value.strip() or "0")
        except InvalidOperation:
            # An ArithmeticError, which validation would not catch: "N/A" must fail the trade, not the
            # process (docs/design.md#bad-input-never-crashes).
            raise ValueError("money is not a decimal number") from None
    return value


def _to_int64(value: Any) -> Any:
    if isinstance(value, (bool, float)):
        raise ValueError("int64 id must be an integer or a decimal string")
    if isinstance(value, str):
        return int(value.strip())
    return value


TopTime = Annotated[datetime, BeforeValidator(_to_time)]
Money = Annotated[Decimal, BeforeValidator(_to_money)]
Int64 = Annotated[int, BeforeValidator(_to_int64), Field(ge=0, le=INT64_MAX)]


def unwrap_list(value: Any, inner: str) -> list[Any]:
    """TOP double-wraps lists (`{"orders": {"order": [...]}}`); simplified JSON does not; empty lists
    are omitted altogether. All three shapes give a plain list."""
    if value is None:
        return []
    if isinstance(value, dict):
        items = value.get(inner, [])
        return list(items) if isinstance(items, list) else [items]
    if isinstance(value, list):
        return value
    raise ValueError(f"expected a list or a {{{inner!r}: [...]}} wrapper")


class Order(BaseModel):
    """A sub-order. Only the fields the store indexes are named; the rest stay in the trade's `raw`."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    oid: Int64
    status: str | None = None
    refund_status: str | None = None
    title: str | None = None
    num: int | None = None
    num_iid: Int64 | None = None
    sku_id: str | None = None
    price: Money | None = None
    payment: Money | None = None
    total_fee: Money | None = None
    end_time: TopTime | None = None


class Trade(BaseModel):
    """A trade as `taobao.trade.fullinfo.get` (or a list call with fewer fields) returns it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    tid: Int64
    seller_nick: str | None = None
    buyer_nick: str | None = None
    buyer_open_uid: str | None = None
    status: str | None = None
    type: str | None = None
    created: TopTime | None = None
    modified: TopTime | None = None
    pay_time: TopTime | None = None
    consign_time: TopTime | None = None
    end_time: TopTime | None = None
    payment: Money | None = None
    total_fee: Money | None = None
    post_fee: Money | None = None
    orders: list[Order] = Field(default_factory=list)
    raw: dict[str, Any] = Field(default_factory=dict, repr=False)
    # When this state was read from TOP (set by the client, never by TOP). `modified` has one-second
    # resolution: two fetches of one trade within a second can carry different content at an equal
    # `modified`, and only the later read may win (docs/design.md#modified-never-goes-backwards), whichever
    # commits last.
    fetched_at: datetime | None = None

    @model_validator(mode="before")
    @classmethod
    def _keep_raw(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if "raw" in data and "tid" not in data:
            return data
        shaped = dict(data)
        shaped["raw"] = data
        shaped["orders"] = unwrap_list(data.get("orders"), "order")
        return shaped


def _to_optional_int(value: Any) -> Any:
    if isinstance(value, str):
        return int(value.strip()) if value.strip() else None
    return value


def _to_optional_bool(value: Any) -> Any:
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        return None if not lowered else value
    return value


class RejectedItem(BaseModel):
    """A list entry that failed validation: kept whole, with the reason, for a dead-letter row."""

    model_config = ConfigDict(frozen=True)

    raw: Any
    reason: str


class TradePage(BaseModel):
    """One page of `taobao.trades.sold.get` / `taobao.trades.sold.increment.get`
    (docs/top-api.md#trades-sold-get, docs/top-api.md#trades-sold-increment-get).

    `total_results` comes only with use_has_next=false and `has_next` only with use_has_next=true; an
    empty window sends neither the list nor, sometimes, the count. Entries that fail validation land in
    `rejected` instead of failing the page (docs/design.md#bad-input-never-crashes)."""

    model_config = ConfigDict(frozen=True)

    trades: list[Trade] = Field(default_factory=list)
    total_results: Annotated[int | None, BeforeValidator(_to_optional_int)] = None
    has_next: Annotated[bool | None, BeforeValidator(_to_optional_bool)] = None
    request_id: str | None = None
    rejected: list[RejectedItem] = Field(default_factory=list)

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> TradePage:
        trades: list[Trade] = []
        rejected: list[RejectedItem] = []
        for item in unwrap_list(payload.get("trades"), "trade"):
            try:
                trades.append(Trade.model_validate(item))
            except ValidationError as exc:
                rejected.append(RejectedItem(raw=item, reason=_short_reason(exc)))
        return cls(
            trades=trades,
            total_results=payload.get("total_results"),
            has_next=payload.get("has_next"),
            request_id=payload.get("request_id"),
            rejected=rejected,
        )


class TopatsTask(BaseModel):
    """`taobao.topats.result.get` → `task` (docs/top-api.md#topats). Unfinished tasks carry only id and
    status."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    task_id: Int64
    status: str | None = None
    created: TopTime | None = None
    method: str | None = None
    # Single-use and possibly carrying an access token: kept out of reprs.
    download_url: str | None = Field(default=None, repr=False)
    check_code: str | None = None
    raw: dict[str, Any] = Field(default_factory=dict, repr=False)

    @model_validator(mode="before")
    @classmethod
    def _keep_raw(cls, data: Any) -> Any:
        if isinstance(data, dict) and "raw" not in data:
            return {**data, "raw": data}
        return data

    @property
    def done(self) -> bool:
        return self.status == "done"


def _short_reason(exc: ValidationError) -> str:
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": str(exc)}
    where = ".".join(str(part) for part in first.get("loc", ()))
    return f"{exc.error_count()} validation error(s); first at {where or '(root)'}: {first.get('msg')}"
