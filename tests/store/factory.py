"""Trades for store tests, built the way the TOP client builds them: from TOP-shaped JSON."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any

from taobao.models import Trade
from taobao.timefmt import GMT8, format_top_time

BASE_TIME = datetime(2024, 11, 11, 0, 0, 0, tzinfo=GMT8)

_tids = itertools.count(2899536456494937165)


def fresh_tids(n: int) -> list[int]:
    """Tids no other test in the session has used (19 digits, like modern tids: beyond a double)."""
    return [next(_tids) for _ in range(n)]


def trade_json(
    tid: int,
    second: int,
    *,
    status: str = "WAIT_BUYER_PAY",
    shop: str = "shop-a",
    orders: int = 1,
    note: str = "",
    title: str = "item",
) -> dict[str, Any]:
    """A fullinfo-shaped trade whose `modified` is BASE_TIME + `second` seconds."""
    modified = BASE_TIME + timedelta(seconds=second)
    return {
        "tid": tid,
        "seller_nick": shop,
        "buyer_nick": "buyer",
        "status": status,
        "type": "fixed",
        "created": format_top_time(BASE_TIME),
        "modified": format_top_time(modified),
        "payment": "10.00",
        "total_fee": "10.00",
        "post_fee": "0.00",
        "seller_memo": note,
        "orders": {
            "order": [
                {
                    "oid": 1000 + i,
                    "status": status,
                    "refund_status": "NO_REFUND",
                    "title": f"{title} {i}",
                    "num": 1,
                    "price": "10.00",
                    "payment": "10.00",
                }
                for i in range(orders)
            ]
        },
    }


def make_trade(tid: int, second: int, **kwargs: Any) -> Trade:
    return Trade.model_validate(trade_json(tid, second, **kwargs))
