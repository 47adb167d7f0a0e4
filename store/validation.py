"""Pure checks and shaping before a trade reaches the database (no I/O).

Anything PostgreSQL would refuse must be caught here, per trade, so one bad trade is quarantined
instead of failing its whole batch (docs/design.md#bad-input-never-crashes): a missing `modified`, NUL
characters (text and jsonb refuse them), lone surrogates (not UTF-8), NaN/Infinity in `raw` (jsonb refuses
them), amounts beyond numeric(14,2), counts beyond integer, an oid twice in one trade.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

from store.constants import INT32_MAX, MONEY_DIGITS
from store.errors import InvalidTradeError
from taobao.models import Trade
from taobao.timefmt import format_top_time

# A JSON escape for NUL: an odd number of backslashes before "u0000" (an escaped backslash followed by
# the text "u0000" is an even number and is harmless).
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


@dataclass(frozen=True, slots=True)
class PreparedTrade:
    """A trade that passed validation, with its canonical JSON and content hash."""

    trade: Trade
    modified: datetime
    raw_json: str
    content_hash: bytes


@dataclass(frozen=True, slots=True)
class Rejection:
    """A trade refused by validation, shaped as a dead-letter row."""

    tid: int
    shop: str | None
    reason: str
    payload: bytes


def _json_default(value: Any) -> Any:
    # `raw` is normally plain JSON; these cover trades built in code or parsed with Decimal floats.
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime):
        return format_top_time(value) if value.tzinfo is not None else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"{type(value).__name__} is not JSON")


def canonical_json(raw: dict[str, Any]) -> str:
    """Sorted keys, no spaces, UTF-8 text: equal content gives equal text. Raises ValueError/TypeError
    for NaN/Infinity and for values JSON cannot hold."""
    return json.dumps(
        raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_json_default
    )


def content_hash(raw_json: str) -> bytes:
    return hashlib.sha256(raw_json.encode("utf-8")).digest()


def prepare_trade(trade: Trade) -> PreparedTrade:
    """Validate one trade for the store; raise InvalidTradeError with a reason a person can act on."""
    if trade.modified is None:
        raise InvalidTradeError("no `modified` time: cannot order it against other versions", tid=trade.tid)
    try:
        raw_json = canonical_json(trade.raw)
    except (TypeError, ValueError) as exc:
        raise InvalidTradeError(f"raw is not storable JSON ({exc})", tid=trade.tid) from exc
    texts = _texts(trade)
    nul_in_raw = "\\u0000" in raw_json and _JSON_NUL.search(raw_json) is not None
    if nul_in_raw or any("\x00" in text for text in texts):
        raise InvalidTradeError("text contains a NUL character, which PostgreSQL refuses", tid=trade.tid)
    try:
        digest = content_hash(raw_json)
        for text in texts:
            text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidTradeError("text is not valid Unicode (lone surrogate)", tid=trade.tid) from exc
    _check_numbers(trade)
    return PreparedTrade(trade, trade.modified, raw_json, digest)


def check_trade(trade: Trade) -> None:
    """Raise InvalidTradeError if `apply_trades` would quarantine this trade."""
    prepare_trade(trade)


_NEVER = datetime.min.replace(tzinfo=UTC)


def _read_time(trade: Trade) -> datetime:
    return trade.fetched_at or _NEVER


def prepare_batch(trades: Iterable[Trade]) -> tuple[list[PreparedTrade], list[Rejection]]:
    """Split a batch into storable trades (one per tid, the newest; sorted by tid) and rejections.

    Among duplicates the greater `modified` wins; on a tie the later read (`fetched_at`), then the later
    one in the batch."""
    newest: dict[int, PreparedTrade] = {}
    rejected: list[Rejection] = []
    for trade in trades:
        try:
            prepared = prepare_trade(trade)
        except InvalidTradeError as exc:
            shop = None if trade.seller_nick is None else storable_text(trade.seller_nick)
            rejected.append(Rejection(trade.tid, shop, storable_text(exc.reason), dead_letter_payload(trade)))
            continue
        kept = newest.get(trade.tid)
        if kept is None or (prepared.modified, _read_time(trade)) >= (kept.modified, _read_time(kept.trade)):
            newest[trade.tid] = prepared
    return [newest[tid] for tid in sorted(newest)], rejected


def dead_letter_payload(trade: Trade) -> bytes:
    """The trade as JSON bytes, as close to what was received as can be stored."""
    try:
        return json.dumps(trade.raw, ensure_ascii=False, default=_json_default).encode("utf-8")
    except (TypeError, ValueError):
        pass
    try:
        # ASCII escapes keep lone surrogates and NaN readable.
        return json.dumps(trade.raw, ensure_ascii=True, default=_json_default).encode("ascii")
    except (TypeError, ValueError):
        return repr(trade.raw).encode("utf-8", errors="backslashreplace")


def storable_text(text: str) -> str:
    """`text` with what PostgreSQL's text type refuses (NUL, lone surrogates) written as escapes, for
    columns that describe bad input (dead-letter reason and shop)."""
    return text.encode("utf-8", errors="backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def _texts(trade: Trade) -> list[str]:
    texts = [trade.seller_nick, trade.buyer_nick, trade.buyer_open_uid, trade.status, trade.type]
    for order in trade.orders:
        texts.extend((order.status, order.refund_status, order.title, order.sku_id))
    return [t for t in texts if t is not None]


def _check_numbers(trade: Trade) -> None:
    money: list[tuple[str, Decimal | None]] = [
        ("payment", trade.payment),
        ("total_fee", trade.total_fee),
        ("post_fee", trade.post_fee),
    ]
    seen: set[int] = set()
    for order in trade.orders:
        if order.oid in seen:
            raise InvalidTradeError(f"sub-order {order.oid} appears twice", tid=trade.tid)
        seen.add(order.oid)
        money.append((f"order {order.oid} price", order.price))
        money.append((f"order {order.oid} payment", order.payment))
        money.append((f"order {order.oid} total_fee", order.total_fee))
        if order.num is not None and abs(order.num) > INT32_MAX:
            raise InvalidTradeError(f"order {order.oid} num {order.num} is out of range", tid=trade.tid)
    for name, value in money:
        # adjusted() is the exponent of the leading digit: >= 12 means at least 10**12.
        if value is not None and (not value.is_finite() or (value and value.adjusted() >= MONEY_DIGITS)):
            raise InvalidTradeError(f"{name} {value} is not a storable amount", tid=trade.tid)
