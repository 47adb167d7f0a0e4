"""What a TMC message says about a trade: the tid and the seller (docs/tmc-protocol.md#trade-topics), or
why it cannot be processed. Pure; the dispatcher routes by it.

Every message that names a trade counts: trade topics (`taobao_trade_*`) and refund topics
(`taobao_refund_*`, docs/tmc-protocol.md#refund-topics) that carry a `tid` both ask for a fetch of that
trade's current state, since a refund changes the trade (its orders' refund status, its payment). A
refund message with no tid names no trade; any other topic is not about trades."""

from __future__ import annotations

import json
from dataclasses import dataclass

from taobao.tmc.events import TmcMessage

TRADE_TOPIC_PREFIX = "taobao_trade_"
REFUND_TOPIC_PREFIX = "taobao_refund_"
INT64_MAX = 2**63 - 1
# strict=False: control characters inside strings (seen in memo fields) are not a reason to drop.
# One decoder for all messages: json.loads(strict=False) would build a new one per call.
_CONTENT_DECODER = json.JSONDecoder(strict=False)


@dataclass(frozen=True, slots=True)
class TradeEvent:
    tid: int
    shop: str | None


@dataclass(frozen=True, slots=True)
class Rejection:
    kind: str  # a small fixed set, used as a metric label
    reason: str


def parse_trade_event(message: TmcMessage) -> TradeEvent | Rejection:
    """The tid and seller of a trade message (docs/tmc-protocol.md#trade-topics), or why the message cannot be
    processed."""
    refund = message.topic.startswith(REFUND_TOPIC_PREFIX)
    if not refund and not message.topic.startswith(TRADE_TOPIC_PREFIX):
        return Rejection("not_trade_topic", f"topic {message.topic!r} is not a trade topic")
    try:
        body = _CONTENT_DECODER.decode(message.content)
    except ValueError as exc:
        return Rejection("bad_content", f"content is not JSON: {exc}")
    except RecursionError:
        return Rejection("bad_content", "content is nested deeper than the JSON parser goes")
    if not isinstance(body, dict):
        return Rejection("bad_content", "content is not a JSON object")
    tid = _int64(body.get("tid"))
    if tid is None and refund and "tid" not in body:
        return Rejection("names_no_trade", f"refund message {message.topic!r} names no trade")
    if tid is None:
        return Rejection("bad_content", "content has no usable tid")
    shop = message.nick or body.get("seller_nick")
    shop = shop.strip() if isinstance(shop, str) and shop.strip() else None
    return TradeEvent(tid=tid, shop=shop)


def _int64(value: object) -> int | None:
    # A float has already lost digits of a 19-digit tid; a bool is not an id.
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    try:
        number = int(value.strip()) if isinstance(value, str) else value
    except ValueError:
        return None
    return number if 0 < number <= INT64_MAX else None
