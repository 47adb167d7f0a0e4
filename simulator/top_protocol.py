"""TOP response shapes and request-parameter rules the gateway shares between its methods
(docs/top-api.md#response-envelope, docs/top-api.md#error-envelope): envelopes, double-wrapped lists, field
selection, errors, request ids, JSON text. Pure functions; no I/O.
"""

from __future__ import annotations

import json
import random
import re
import string
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from taobao.timefmt import parse_top_time

# List keys TOP double-wraps, with the inner element name (`"trades": {"trade": [...]}`).
LIST_WRAPPERS: dict[str, str] = {
    "trades": "trade",
    "orders": "order",
    "promotion_details": "promotion_detail",
    "service_orders": "service_order",
    "subtasks": "subtask",
}

_BASE36 = string.digits + string.ascii_lowercase


class TopError(Exception):
    """A TOP error answer (`error_response`). Carries no secrets: only codes and public texts."""

    def __init__(self, code: int, msg: str, sub_code: str | None = None, sub_msg: str | None = None) -> None:
        super().__init__(f"{code} {msg} {sub_code or ''}".strip())
        self.code = code
        self.msg = msg
        self.sub_code = sub_code
        self.sub_msg = sub_msg

    def body(self, request_id: str) -> dict[str, Any]:
        inner: dict[str, Any] = {"code": self.code, "msg": self.msg}
        if self.sub_code is not None:
            inner["sub_code"] = self.sub_code
        if self.sub_msg is not None:
            inner["sub_msg"] = self.sub_msg
        inner["request_id"] = request_id
        return {"error_response": inner}


def missing(name: str) -> TopError:
    return TopError(
        40, "Missing Required Arguments", f"isv.missing-parameter:{name}", f"缺少必要的参数{name}"
    )


def invalid(name: str, detail: str = "", code: int = 41) -> TopError:
    msg = "Invalid Arguments" if code == 41 else "Remote Service Error"
    return TopError(code, msg, f"isv.invalid-parameter:{name}", detail or f"非法参数{name}")


def new_request_id(rng: random.Random) -> str:
    """A lower-case base-36 token of 11–14 characters, like `16kksr4el1bs0`
    (docs/top-api.md#error-envelope)."""
    return "".join(rng.choice(_BASE36) for _ in range(rng.randint(11, 14)))


def response_key(method: str) -> str:
    """`taobao.trades.sold.get` → `trades_sold_get_response`; other prefixes are kept."""
    name = method.removeprefix("taobao.")
    return name.replace(".", "_") + "_response"


def wrap_lists(body: Mapping[str, Any]) -> dict[str, Any]:
    """Top-level plain lists → TOP's double-wrapped form. Nested values are kept as they are: raw trades
    are stored already wrapped (`"orders": {"order": [...]}`)."""
    return {
        key: {LIST_WRAPPERS[key]: item} if key in LIST_WRAPPERS and isinstance(item, list) else item
        for key, item in body.items()
    }


def unwrap_lists(value: Any) -> Any:
    """TOP's double-wrapped lists → plain lists (the `simplify=true` shape), recursively."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            inner = LIST_WRAPPERS.get(key)
            if inner is not None and isinstance(item, dict) and set(item) <= {inner}:
                out[key] = [unwrap_lists(x) for x in item.get(inner, [])]
            else:
                out[key] = unwrap_lists(item)
        return out
    if isinstance(value, list):
        return [unwrap_lists(x) for x in value]
    return value


def _drop_empty_lists(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if not (k in LIST_WRAPPERS and isinstance(v, list) and not v)}


def envelope(method: str, body: dict[str, Any], request_id: str, simplify: bool) -> dict[str, Any]:
    """The success envelope. `body` uses plain lists for top-level result lists (`trades`) and holds raw
    trades whose inner lists are already double-wrapped; empty top-level lists are omitted."""
    body = _drop_empty_lists(body)
    if simplify:
        out: dict[str, Any] = unwrap_lists(body)
        out["request_id"] = request_id
        return out
    inner = wrap_lists(body)
    inner["request_id"] = request_id
    return {response_key(method): inner}


# ----- fields --------------------------------------------------------------------------------------


class FieldSelection:
    """A parsed `fields` parameter: trade fields plus either whole `orders` or some `orders.x`."""

    __slots__ = ("all_orders", "order_fields", "trade_fields")

    def __init__(self, fields: str) -> None:
        names = [f.strip() for f in fields.split(",") if f.strip()]
        self.trade_fields = frozenset(n for n in names if "." not in n)
        self.order_fields = frozenset(n.split(".", 1)[1] for n in names if n.startswith("orders."))
        self.all_orders = "orders" in self.trade_fields

    def apply(self, raw: Mapping[str, Any], with_orders: bool = True) -> dict[str, Any]:
        out = {k: v for k, v in raw.items() if k in self.trade_fields and k != "orders"}
        if not with_orders:
            return out
        orders = raw.get("orders", {}).get("order", [])
        if self.all_orders:
            if orders:
                out["orders"] = {"order": [dict(o) for o in orders]}
        elif self.order_fields and orders:
            wanted = self.order_fields
            out["orders"] = {"order": [{k: v for k, v in o.items() if k in wanted} for o in orders]}
        return out


# ----- parameter parsing ---------------------------------------------------------------------------


def require(params: Mapping[str, str], name: str) -> str:
    value = params.get(name, "")
    if value == "":
        raise missing(name)
    return value


def parse_int(params: Mapping[str, str], name: str, default: int | None = None) -> int | None:
    value = params.get(name, "")
    if value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise invalid(name) from None


def parse_bool(params: Mapping[str, str], name: str, default: bool = False) -> bool:
    value = params.get(name, "")
    if value == "":
        return default
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise invalid(name)


def parse_time(params: Mapping[str, str], name: str) -> datetime | None:
    value = params.get(name, "")
    if value == "":
        return None
    try:
        return parse_top_time(value)
    except ValueError:
        raise invalid(name, f"{name}格式错误，应为yyyy-MM-dd HH:mm:ss") from None


# ----- JSON text -----------------------------------------------------------------------------------

# An escaped TAB/LF/CR preceded by an even number of backslashes (so it is an escape, not a literal).
_ESCAPED_CONTROL = re.compile(r"(?<!\\)((?:\\\\)*)\\([tnr])")
_CONTROL = {"t": "\t", "n": "\n", "r": "\r"}
_SURROGATE = re.compile("[\ud800-\udfff]")
# Stands in for a RawJson value inside the dumped text until it is spliced in.
_RAW_TOKEN = re.compile('"@@standin-raw-(\\d+)@@"')


class RawJson:
    """JSON text put into an answer as it is: values `json.dumps` cannot write (the number 1E-20000,
    which a float would turn into 0.0) or would refuse to write (thousands of nested arrays)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"RawJson({self.text[:40]!r})"


def escape_surrogates(text: str) -> str:
    """Lone surrogates as JSON escapes (`\\ud800`): a buyer can type one, UTF-8 cannot carry it, and JSON
    text can only spell it as an escape. Apply only to JSON text, where they can only sit in strings."""
    if _SURROGATE.search(text) is None:
        return text
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def dump_json(body: Mapping[str, Any], raw_control_chars: bool) -> str:
    """JSON text as TOP sends it. With `raw_control_chars`, TAB/LF/CR inside strings go out unescaped,
    as real responses carrying buyer messages do (docs/top-api.md#http-request): clients must decode
    leniently. NUL always goes out as the escape `\\u0000` and lone surrogates as `\\udXXX`; RawJson
    values go out as their text."""
    raws: list[str] = []

    def raw_value(value: Any) -> str:
        if isinstance(value, RawJson):
            raws.append(value.text)
            return f"@@standin-raw-{len(raws) - 1}@@"
        raise TypeError(f"{type(value).__name__} is not JSON")

    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=raw_value)
    if raw_control_chars and ("\\t" in text or "\\n" in text or "\\r" in text):
        text = _ESCAPED_CONTROL.sub(lambda m: m.group(1) + _CONTROL[m.group(2)], text)
    text = escape_surrogates(text)
    if raws:
        text = _RAW_TOKEN.sub(lambda m: raws[int(m.group(1))], text)
    return text
