"""Typed views of TOP's Trade and Order (top_api.md §5).

Ids are int64 (modern tids have 19 digits, beyond a float's precision), money is Decimal, times are
GMT+8 strings turned into aware datetimes here and nowhere else. The whole JSON object as received
stays in `raw`, so fields this model does not name still reach the database.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

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
        return Decimal(value.strip() or "0")
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
