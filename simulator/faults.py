"""Fault knobs of the TOP gateway (docs/top-api.md#stand-in). `FaultKnobs` is plain mutable state read on
every request, so tests and the admin endpoint can turn faults on and off while clients run. `FaultInjector`
draws the dice with a seeded RNG and keeps the rate-limit windows and bans.

Two kinds of odd data are kept apart: what a trade really holds (a buyer typed a NUL: the market's
truth holds it too, see `odd_text_rate`) and answers that are broken on the way out (`odd_values_*`,
malformed pages, error windows): the truth stays clean and the answers are right again once the knob
is off.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from simulator.top_protocol import TopError

RATE_LIMIT_SUB_CODES: dict[str, str] = {
    "app": "accesscontrol.limited-by-app-access-count",
    "api": "accesscontrol.limited-by-api-access-count",
    "app-api": "accesscontrol.limited-by-app-api-access-count",
}
DEFAULT_ISP_SUB_CODES: tuple[str, ...] = (
    "isp.top-remote-connection-timeout",
    "isp.top-remote-service-unavailable",
    "isp.remote-service-timeout",
    "isp.top-remote-unknown-error",
)
LIST_METHODS = frozenset({"taobao.trades.sold.get", "taobao.trades.sold.increment.get"})
TRADE_SERVICE_REJECTION_MSG = "超时请求过多，请将查询时间间隔缩短,3分钟后再查询！"

# What an app-wide error window answers (see FaultKnobs.error_window).
ERROR_WINDOW_KINDS = (
    "permission",  # code 11 isv.permission-api-package-limit: the app's permission package lapsed
    "ip-not-allowed",  # code 11 with the IP whitelist sub_code: the caller's address is not allowed
    "invalid-signature",  # code 25: the app secret was rotated under the client
    "timestamp",  # code 31: the client's clock is more than 10 minutes off
    "unknown-code",  # a code and sub_code no client knows (error_window_code / error_window_sub_code)
    "unwrapped-json",  # HTTP 200, JSON without any *_response or error_response key (a proxy's answer)
    "html-200",  # HTTP 200, an HTML page (a captive portal or a proxy's error page)
)
# How a list page can be malformed (see FaultKnobs.malformed_page_rate).
MALFORMED_PAGE_KINDS = (
    "missing_total",  # neither total_results nor has_next
    "garbled_has_next",  # has_next is the string "maybe"
    "short_page",  # some trades of a full page left out, while the counts still promise them
    "empty_page",  # no trades at all, while the counts still promise them
    "unwrapped",  # the body without its *_response wrapper (the simplify=true shape, unasked)
)
# Broken values fullinfo can answer with (see FaultKnobs.odd_values_rate).
ODD_VALUE_KINDS = (
    "date",  # `0001-01-01 00:00:00` (GMT+8) in an optional time field: before year 1 in UTC
    "number",  # the JSON number 1E-20000 in a money field (money is a string everywhere else)
    "money",  # the money string "N/A"
    "nested",  # thousands of nested JSON arrays in an extension field
)


@dataclass
class FaultKnobs:
    """Every knob off by default except raw control characters, which real responses carry."""

    # Calls per second allowed (0: unlimited). Over it the caller is banned for `ban_seconds`; calls
    # during a ban are refused too. Scope: "app" (all calls of the app), "api" (per method, all apps)
    # or "app-api" (per app and method).
    rate_limit_per_second: int = 0
    rate_limit_scope: str = "app"
    ban_seconds: int = 1
    # Share of calls answered with an isp.* error (code 15 or the older 520).
    isp_error_rate: float = 0.0
    isp_error_code: int = 15
    isp_sub_codes: tuple[str, ...] = DEFAULT_ISP_SUB_CODES
    # Share of list calls answered code 520 isv.trade-service-rejection.
    trade_service_rejection_rate: float = 0.0
    # A change shows in sold.get / increment.get only this many seconds after its `modified`
    # (Double 11 lag, docs/top-api.md#data-delay). fullinfo always shows the current trade.
    list_lag_seconds: float = 0.0
    # Big-sale mode: list calls return no `orders` node and drop a few heavy fields
    # (docs/top-api.md#data-delay).
    peak_mode: bool = False
    # Share of calls answered with a non-200 HTTP status, and the status used.
    non_200_rate: float = 0.0
    non_200_status: int = 502
    # Share of calls whose JSON body is cut short and followed by junk.
    garbled_rate: float = 0.0
    # Added to every call, in milliseconds.
    latency_ms: float = 0.0
    # Send TAB/LF/CR inside strings unescaped, as TOP does (docs/top-api.md#http-request).
    raw_control_chars: bool = True
    # When not empty, the random faults and latency only hit these methods.
    methods: tuple[str, ...] = field(default_factory=tuple)

    # fullinfo answers isv.trade-not-exist (the same answer as for an unknown tid) until this many
    # seconds after the trade's TradeCreate was published: the detail store lags the message channel.
    # Lists and older trades are not affected.
    detail_lag_seconds: float = 0.0
    # Broken values in fullinfo answers, for a share of trades (picked by tid: a trade is hit on every
    # call or on none) and for the named tids. The truth keeps the real values.
    odd_values_rate: float = 0.0
    odd_values_tids: tuple[str, ...] = field(default_factory=tuple)
    odd_values_kinds: tuple[str, ...] = ODD_VALUE_KINDS
    # Which field each kind lands in. The extension field is sent even when `fields` did not ask for it,
    # as broken upstream data would be (an assumption: which field real answers carry it in is unknown).
    odd_date_field: str = "end_time"
    odd_number_field: str = "post_fee"
    odd_money_field: str = "total_fee"
    odd_nested_field: str = "trade_ext"
    odd_nesting_depth: int = 5000
    # Share of new trades whose buyer really typed a NUL and a lone surrogate into the buyer message:
    # the market's truth holds those characters, and turning this off does not clean existing trades.
    odd_text_rate: float = 0.0
    # An app-wide error window: every call of `error_window_methods` (empty: every method) answers
    # with the kind named (one of ERROR_WINDOW_KINDS; "" is off) until `error_window_until` (epoch
    # seconds; 0: until turned off). Setting the pseudo-knob `error_window_seconds` sets the end that
    # many seconds from now. It hits before any other check: a lapsed permission or a rotated secret
    # refuses a correct request too.
    error_window: str = ""
    error_window_methods: tuple[str, ...] = field(default_factory=tuple)
    error_window_until: float = 0.0
    error_window_code: int = 99999
    error_window_sub_code: str = "isv.unknown-error-99999"
    # Answers seen in public client code use this sub_code for a caller outside the IP whitelist.
    ip_not_allowed_sub_code: str = "isv.permission-ip-whitelist-limit"
    # Share of successful list calls (sold.get, increment.get) answered with a malformed page; 1.0
    # malforms every page until turned off. The kind is drawn from `malformed_page_kinds`.
    malformed_page_rate: float = 0.0
    malformed_page_kinds: tuple[str, ...] = MALFORMED_PAGE_KINDS

    def update(self, patch: Mapping[str, Any], now: Callable[[], float] = time.time) -> None:
        """Apply a partial update (e.g. from the admin endpoint); unknown names or bad types raise.

        `error_window_seconds` is not a field: it sets `error_window_until` that many seconds from
        `now()` (0: until turned off)."""
        known = {f.name: f for f in fields(self)}
        staged: dict[str, Any] = {}
        for name, value in patch.items():
            if name == "error_window_seconds":
                seconds = _coerce(name, value, 0.0)
                staged["error_window_until"] = now() + seconds if seconds > 0 else 0.0
                continue
            if name not in known:
                raise ValueError(f"unknown fault knob {name!r}")
            current = getattr(self, name)
            staged[name] = _coerce(name, value, current)
        if "error_window" in staged and not {"error_window_seconds", "error_window_until"} & set(patch):
            staged["error_window_until"] = 0.0  # a window opened without an end lasts until turned off
        _check_choices(staged)
        for name, value in staged.items():
            setattr(self, name, value)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["isp_sub_codes"] = list(self.isp_sub_codes)
        data["methods"] = list(self.methods)
        return data

    def applies_to(self, method: str) -> bool:
        return not self.methods or method in self.methods


def _check_choices(staged: Mapping[str, Any]) -> None:
    if "rate_limit_scope" in staged and staged["rate_limit_scope"] not in RATE_LIMIT_SUB_CODES:
        raise ValueError(f"rate_limit_scope must be one of {sorted(RATE_LIMIT_SUB_CODES)}")
    if staged.get("error_window", "") not in ("", *ERROR_WINDOW_KINDS):
        raise ValueError(f"error_window must be empty or one of {list(ERROR_WINDOW_KINDS)}")
    choices = (("malformed_page_kinds", MALFORMED_PAGE_KINDS), ("odd_values_kinds", ODD_VALUE_KINDS))
    for name, allowed in choices:
        unknown = set(staged.get(name, ())) - set(allowed)
        if unknown:
            raise ValueError(f"{name}: unknown {sorted(unknown)}; known: {list(allowed)}")
    for tid in staged.get("odd_values_tids", ()):
        if not tid.isdigit():
            raise ValueError(f"odd_values_tids must be trade ids, not {tid!r}")
    if staged.get("odd_nesting_depth", 1) < 1:
        raise ValueError("odd_nesting_depth must be at least 1")


def _coerce(name: str, value: Any, current: Any) -> Any:
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
        raise ValueError(f"{name} must be a boolean")
    if isinstance(current, int):
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError(f"{name} must be an integer")
        return int(value)
    if isinstance(current, float):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"{name} must be a number")
        number = float(value)
        if name.endswith("_rate") and not 0.0 <= number <= 1.0:
            raise ValueError(f"{name} must be between 0 and 1")
        if number < 0:
            raise ValueError(f"{name} must not be negative")
        return number
    if isinstance(current, tuple):
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        if isinstance(value, (list, tuple)) and all(
            isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool)) for v in value
        ):
            return tuple(str(v) for v in value)
        raise ValueError(f"{name} must be a list of strings")
    if isinstance(current, str):
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a string")
        return value
    raise ValueError(f"{name} cannot be set")  # pragma: no cover - every knob has a type above


def tid_share(seed: int, tid: int) -> float:
    """A number in [0, 1) fixed by (seed, tid) (splitmix64): a per-trade fault hits the same trades on
    every call and whatever order the calls come in."""
    x = (tid * 0x9E3779B97F4A7C15 + seed * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    x ^= x >> 31
    return (x >> 11) / float(1 << 53)


_MASK64 = (1 << 64) - 1


class FaultInjector:
    """Decides, per call, which fault (if any) hits it."""

    def __init__(
        self,
        knobs: FaultKnobs,
        seed: int,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.knobs = knobs
        self.seed = seed
        self._rng = random.Random(seed)
        self.monotonic = monotonic
        self.wall = wall
        self._windows: dict[tuple[str, ...], tuple[int, int]] = {}
        self._bans: dict[tuple[str, ...], float] = {}

    def _scope_key(self, app_key: str, method: str) -> tuple[str, ...]:
        scope = self.knobs.rate_limit_scope
        if scope == "api":
            return ("api", method)
        if scope == "app-api":
            return ("app-api", app_key, method)
        return ("app", app_key)

    def rate_limit(self, app_key: str, method: str) -> TopError | None:
        """Code 7 when the caller is over its per-second allowance or still banned."""
        knobs = self.knobs
        key = self._scope_key(app_key, method)
        now = self.monotonic()
        banned_until = self._bans.get(key)
        if banned_until is not None:
            if now < banned_until:
                return self._ban_error(banned_until - now)
            del self._bans[key]
        if knobs.rate_limit_per_second <= 0:
            return None
        second = int(now)
        window, count = self._windows.get(key, (second, 0))
        if window != second:
            window, count = second, 0
        count += 1
        self._windows[key] = (window, count)
        if count <= knobs.rate_limit_per_second:
            return None
        ban = max(knobs.ban_seconds, 0)
        if ban == 0:
            return self._ban_error(1.0 - (now - second))
        self._bans[key] = now + ban
        return self._ban_error(float(ban))

    def _ban_error(self, remaining: float) -> TopError:
        seconds = max(1, math.ceil(remaining))
        sub_code = RATE_LIMIT_SUB_CODES.get(self.knobs.rate_limit_scope, RATE_LIMIT_SUB_CODES["app"])
        return TopError(7, "App Call Limited", sub_code, f"This ban will last for {seconds} more seconds")

    def clear_bans(self) -> None:
        self._bans.clear()
        self._windows.clear()

    def _roll(self, rate: float, method: str) -> bool:
        return rate > 0 and self.knobs.applies_to(method) and self._rng.random() < rate

    def isp_error(self, method: str) -> TopError | None:
        knobs = self.knobs
        if not self._roll(knobs.isp_error_rate, method):
            return None
        sub_code = self._rng.choice(knobs.isp_sub_codes) if knobs.isp_sub_codes else "isp.service-error"
        msg = "Remote Service Error" if knobs.isp_error_code in (15, 520) else "Service Currently Unavailable"
        return TopError(knobs.isp_error_code, msg, sub_code, "服务暂时不可用，请稍后重试")

    def trade_service_rejection(self, method: str) -> TopError | None:
        if method not in LIST_METHODS or not self._roll(self.knobs.trade_service_rejection_rate, method):
            return None
        return TopError(
            520, "Remote service error", "isv.trade-service-rejection", TRADE_SERVICE_REJECTION_MSG
        )

    def non_200_status(self, method: str) -> int | None:
        return self.knobs.non_200_status if self._roll(self.knobs.non_200_rate, method) else None

    def garble(self, method: str, text: str) -> str | None:
        """A damaged copy of `text`, or None when this call is not hit."""
        if not self._roll(self.knobs.garbled_rate, method):
            return None
        cut = self._rng.randrange(1, max(len(text) // 2, 2))
        return text[:cut] + "\x00<html>upstream reset"

    def latency_seconds(self, method: str) -> float:
        knobs = self.knobs
        if knobs.latency_ms <= 0 or not knobs.applies_to(method):
            return 0.0
        return knobs.latency_ms / 1000.0

    # ----- app-wide error windows, malformed pages, odd values ---------------------------------------

    def error_window(self, method: str) -> str | None:
        """The kind of the error window this call falls in, or None."""
        knobs = self.knobs
        if not knobs.error_window:
            return None
        if knobs.error_window_until and self.wall() >= knobs.error_window_until:
            return None
        if knobs.error_window_methods and method not in knobs.error_window_methods:
            return None
        return knobs.error_window

    def window_error(self, kind: str, app_key: str, peer: str) -> TopError:
        """The error answer of an error window of `kind` (not the unwrapped kinds)."""
        knobs = self.knobs
        if kind == "permission":
            # The real sub_msg lists the permission scopes the app holds.
            return TopError(11, "Insufficient isv permissions", "isv.permission-api-package-limit",
                            "scope ids is 289 378 381 386")  # fmt: skip
        if kind == "ip-not-allowed":
            return TopError(
                11, "Insufficient isv permissions", knobs.ip_not_allowed_sub_code,
                f"The appkey {app_key} is only allowed to call from 10.8.*.*, but your ip is {peer}",
            )  # fmt: skip
        if kind == "invalid-signature":
            return TopError(25, "Invalid signature")
        if kind == "timestamp":
            return TopError(31, "Invalid Timestamp", sub_msg="时间戳错误，与服务器时间相差不能超过10分钟")
        return TopError(knobs.error_window_code, "Unknown Error", knobs.error_window_sub_code, "未知错误")

    def malformed_page(self, method: str) -> str | None:
        """The kind of malformation for this list call, or None."""
        knobs = self.knobs
        if method not in LIST_METHODS or not knobs.malformed_page_kinds:
            return None
        if knobs.malformed_page_rate <= 0 or self._rng.random() >= knobs.malformed_page_rate:
            return None
        return self._rng.choice(knobs.malformed_page_kinds)

    def short_page_keep(self, size: int) -> int:
        """How many trades of a page of `size` a short page keeps (at least one is left out)."""
        return self._rng.randrange(0, size) if size > 1 else 0

    def odd_values(self, tid: int) -> bool:
        """Whether fullinfo answers for `tid` carry broken values."""
        knobs = self.knobs
        if not knobs.odd_values_kinds:
            return False
        if str(tid) in knobs.odd_values_tids:
            return True
        return knobs.odd_values_rate > 0 and tid_share(self.seed, tid) < knobs.odd_values_rate

    def odd_text(self, tid: int) -> bool:
        """Whether the buyer of a new trade `tid` typed a NUL and a lone surrogate."""
        rate = self.knobs.odd_text_rate
        # Another stream than odd_values, so the two pick different trades.
        return rate > 0 and tid_share(self.seed ^ 0x0DD7E47, tid) < rate
