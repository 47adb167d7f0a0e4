"""Pure checks and shaping before a trade reaches the database (no I/O).

Anything PostgreSQL would refuse is caught here, per trade, so it never reaches the database as an
error (docs/design.md#bad-input-never-crashes). What can be stored is stored
(docs/design.md#text-replaced):

* U+0000 and lone surrogates, which text and jsonb cannot hold, are replaced with U+FFFD in every
  text column and in `raw`; the trade is stored, and the original is kept as a dead-letter row (a
  history record, not a debt).
* An optional field out of PostgreSQL's range (a time before year 1 in UTC, an amount beyond
  numeric(14,2) or with an exponent no numeric holds, a count beyond integer) is stored empty (NULL);
  the trade is stored with `raw` as received and reported `flawed`, so it stays unresolved and is read
  again until an answer stores whole (such values are broken answers, not the trade's truth).
* A trade whose required parts are unusable (no `modified`, `modified` out of range, `raw` that is not
  JSON, an oid twice) is refused: unresolved, with its raw bytes.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Final

from pydantic import BaseModel

from common.text import UNSTORABLE, storable
from store.constants import INT32_MAX, MONEY_DIGITS
from store.errors import InvalidTradeError
from taobao.models import Order, Trade
from taobao.timefmt import format_top_time

# A JSON escape for NUL: an odd number of backslashes before "u0000" (an escaped backslash followed by
# the text "u0000" is an even number and is harmless).
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
# What text and jsonb cannot hold: NUL and surrogate code points (in a Python str a valid pair is one
# code point, so any surrogate left is a lone one).
_UNSTORABLE = UNSTORABLE
# asyncpg encodes numeric in binary, which refuses exponents below this; PostgreSQL's own input limit
# is of the same order. Taobao's amounts have two decimals.
MIN_MONEY_EXPONENT: Final = -1000
# The `kind` of a refusal: the `reason` label of dead_letters_total.
INVALID_TRADE: Final = "invalid_trade"
OUT_OF_RANGE: Final = "out_of_range_field"


@dataclass(frozen=True, slots=True)
class PreparedTrade:
    """A trade that can be stored, with its canonical JSON and content hash. `trade` is what is stored:
    text replaced (`replaced`) and out-of-range optional fields emptied (`flaws` says which)."""

    trade: Trade
    modified: datetime
    raw_json: str
    content_hash: bytes
    replaced: bool = False
    flaws: tuple[str, ...] = ()
    # The trade as received, for the dead-letter row of a replaced text or the unresolved row of a flaw.
    original: bytes = field(default=b"", repr=False)


@dataclass(frozen=True, slots=True)
class Rejection:
    """A trade the store could not keep whole, shaped for a dead-letter row and an unresolved one:
    refused (not stored), or flawed (stored with fields left empty)."""

    tid: int
    shop: str | None
    reason: str
    payload: bytes
    kind: str = INVALID_TRADE
    modified: datetime | None = None


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
    """What `trades.content_hash` holds for a trade stored with `raw_json` as its canonical JSON."""
    return hashlib.sha256(raw_json.encode("utf-8")).digest()


def prepare_trade(trade: Trade) -> PreparedTrade:
    """Shape one trade for the store; raise InvalidTradeError (with a reason a person can act on) when
    its required parts are unusable."""
    modified = trade.modified
    if modified is None:
        raise InvalidTradeError("no `modified` time: cannot order it against other versions", tid=trade.tid)
    if not _time_storable(modified):
        raise InvalidTradeError(f"`modified` {modified!r} is out of range", tid=trade.tid)
    _check_orders(trade)
    received = trade
    # `raw` is encoded once: the same text is checked for what PostgreSQL cannot hold, hashed and
    # stored; it is encoded again only for the rare trade whose text had to be replaced.
    raw_json = _raw_json(trade)
    encoded = _utf8(raw_json)
    replaced = encoded is None or _has_json_nul(raw_json) or any(_UNSTORABLE.search(t) for t in _texts(trade))
    if replaced:
        trade = _replace_unstorable(trade)
        raw_json = _raw_json(trade)
        encoded = raw_json.encode("utf-8")
    assert encoded is not None
    trade, flaws = _empty_out_of_range(trade)  # named fields only: `raw` stays as received
    original = dead_letter_payload(received) if replaced or flaws else b""
    digest = hashlib.sha256(encoded).digest()
    return PreparedTrade(trade, modified, raw_json, digest, replaced, flaws, original)


def _raw_json(trade: Trade) -> str:
    try:
        return canonical_json(trade.raw)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidTradeError(f"raw is not storable JSON ({type(exc).__name__})", tid=trade.tid) from exc


def _utf8(text: str) -> bytes | None:
    """`text` as UTF-8, or None when it holds a lone surrogate (which UTF-8 cannot encode)."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return None


def _has_json_nul(text: str) -> bool:
    return "\\u0000" in text and _JSON_NUL.search(text) is not None


def check_trade(trade: Trade) -> None:
    """Raise InvalidTradeError if `apply_trades` would refuse this trade."""
    prepare_trade(trade)


def sanitized_text(text: str) -> str:
    """`text` with NUL and lone surrogates replaced by U+FFFD (`common.text.storable`)."""
    return storable(text)


def _replace_unstorable(trade: Trade) -> Trade:
    """The trade with U+0000 and lone surrogates replaced by U+FFFD in its text columns and in `raw`."""
    orders = [
        order.model_copy(update={name: _clean(getattr(order, name)) for name in _ORDER_TEXTS})
        for order in trade.orders
    ]
    update: dict[str, Any] = {name: _clean(getattr(trade, name)) for name in _TRADE_TEXTS}
    update |= {"orders": orders, "raw": _clean_json(trade.raw)}
    return trade.model_copy(update=update)


def _clean(value: str | None) -> str | None:
    return None if value is None else sanitized_text(value)


def _clean_json(value: Any) -> Any:
    if isinstance(value, str):
        return sanitized_text(value)
    if isinstance(value, dict):
        return {sanitized_text(k) if isinstance(k, str) else k: _clean_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean_json(v) for v in value]
    return value


_TRADE_TEXTS = ("seller_nick", "buyer_nick", "buyer_open_uid", "status", "type")
_ORDER_TEXTS = ("status", "refund_status", "title", "sku_id")
_TRADE_TIMES = ("created", "pay_time", "consign_time", "end_time")
_TRADE_MONEY = ("payment", "total_fee", "post_fee")
_ORDER_MONEY = ("price", "payment", "total_fee")


def _empty_out_of_range(trade: Trade) -> tuple[Trade, tuple[str, ...]]:
    """The trade with optional fields PostgreSQL cannot hold set to None; which ones."""
    update, flaws = _unstorable(trade, _TRADE_TIMES, _TRADE_MONEY, "")
    orders: list[Order] = []
    for order in trade.orders:
        order_update, order_flaws = _unstorable(order, ("end_time",), _ORDER_MONEY, f"order {order.oid} ")
        if order.num is not None and abs(order.num) > INT32_MAX:
            order_update["num"] = None
            order_flaws.append(f"order {order.oid} num {order.num} is out of range")
        orders.append(order.model_copy(update=order_update) if order_update else order)
        flaws += order_flaws
    if not flaws:
        return trade, ()
    return trade.model_copy(update={**update, "orders": orders}), tuple(flaws)


def _unstorable(
    model: Trade | Order, times: Iterable[str], money: Iterable[str], label: str
) -> tuple[dict[str, Any], list[str]]:
    """The fields of `model` (of `times` and `money`) PostgreSQL cannot hold, set to None, and why."""
    update: dict[str, Any] = {}
    flaws: list[str] = []
    for name in times:
        value = getattr(model, name)
        if value is not None and not _time_storable(value):
            update[name] = None
            flaws.append(f"{label}{name} {value.isoformat()} is out of range")
    for name in money:
        value = getattr(model, name)
        if value is not None and not _money_storable(value):
            update[name] = None
            flaws.append(f"{label}{name} {value} is not a storable amount")
    return update, flaws


def _time_storable(value: datetime) -> bool:
    """timestamptz holds any time Python does, once in UTC: year 1 in GMT+8 falls before it."""
    try:
        value.astimezone(UTC)
    except (OverflowError, ValueError):
        return False
    return True


def _money_storable(value: Decimal) -> bool:
    if not value.is_finite():
        return False
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)  # finite
    # adjusted() is the exponent of the leading digit: >= 12 means at least 10**12.
    return exponent >= MIN_MONEY_EXPONENT and not (value and value.adjusted() >= MONEY_DIGITS)


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
            rejected.append(rejection(trade, exc.reason))
            continue
        kept = newest.get(trade.tid)
        if kept is None or (prepared.modified, _read_time(trade)) >= (kept.modified, _read_time(kept.trade)):
            newest[trade.tid] = prepared
    return [newest[tid] for tid in sorted(newest)], rejected


def rejection(trade: Trade, reason: str, kind: str = INVALID_TRADE) -> Rejection:
    """`trade` refused for `reason`, with its bytes as received."""
    shop = None if trade.seller_nick is None else storable_text(trade.seller_nick)
    modified = trade.modified if trade.modified is not None and _time_storable(trade.modified) else None
    return Rejection(trade.tid, shop, storable_text(reason), dead_letter_payload(trade), kind, modified)


def flawed(prepared: PreparedTrade) -> Rejection:
    """A stored trade with fields left empty, shaped for its unresolved row."""
    trade = prepared.trade
    shop = None if trade.seller_nick is None else storable_text(trade.seller_nick)
    reason = storable_text("stored with fields left empty: " + "; ".join(prepared.flaws))
    return Rejection(trade.tid, shop, reason, prepared.original, OUT_OF_RANGE, prepared.modified)


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


def _check_orders(trade: Trade) -> None:
    """Sub-orders are keyed by oid: one twice cannot be stored as it came."""
    seen: set[int] = set()
    for order in trade.orders:
        if order.oid in seen:
            raise InvalidTradeError(f"sub-order {order.oid} appears twice", tid=trade.tid)
        seen.add(order.oid)
