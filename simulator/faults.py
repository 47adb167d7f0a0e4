"""Fault knobs of the TOP gateway (docs/top-api.md#stand-in). `FaultKnobs` is plain mutable state read on
every request, so tests and the admin endpoint can turn faults on and off while clients run. `FaultInjector`
draws the dice with a seeded RNG and keeps the rate-limit windows and bans.
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

    def update(self, patch: Mapping[str, Any]) -> None:
        """Apply a partial update (e.g. from the admin endpoint); unknown names or bad types raise."""
        known = {f.name: f for f in fields(self)}
        staged: dict[str, Any] = {}
        for name, value in patch.items():
            if name not in known:
                raise ValueError(f"unknown fault knob {name!r}")
            current = getattr(self, name)
            staged[name] = _coerce(name, value, current)
        if "rate_limit_scope" in staged and staged["rate_limit_scope"] not in RATE_LIMIT_SUB_CODES:
            raise ValueError(f"rate_limit_scope must be one of {sorted(RATE_LIMIT_SUB_CODES)}")
        for name, value in staged.items():
            setattr(self, name, value)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["isp_sub_codes"] = list(self.isp_sub_codes)
        data["methods"] = list(self.methods)
        return data

    def applies_to(self, method: str) -> bool:
        return not self.methods or method in self.methods


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
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ValueError(f"{name} must be a list of strings")
    if isinstance(current, str):
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a string")
        return value
    raise ValueError(f"{name} cannot be set")  # pragma: no cover - every knob has a type above


class FaultInjector:
    """Decides, per call, which fault (if any) hits it."""

    def __init__(self, knobs: FaultKnobs, seed: int, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.knobs = knobs
        self._rng = random.Random(seed)
        self.monotonic = monotonic
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
