"""The one "retry or not, and whose fault?" decision for TOP errors
(docs/design.md#one-error-taxonomy-three-scopes, docs/top-api.md#error-codes, docs/top-api.md#sub-codes).

Pure: a code, a sub-code and a sub-message in, an `ErrorKind` out; `scope_of` says whom a kind is about.
`taobao.errors` turns the kind into an exception; callers act on its scope. Rules are checked in the
order written below. Anything no rule recognises is app-wide: an answer nobody understands might be the
platform's fault or ours, and it is never taken as the message's fault (docs/top-api.md#sub-codes).
"""

from __future__ import annotations

import enum
import re


class ErrorKind(enum.Enum):
    RETRYABLE = "retryable"  # network, HTTP non-200, garbled body, isp.*: back off and retry
    RATE_LIMITED = "rate_limited"  # code 7: pause every caller for the ban, then retry
    SERVICE_REJECTION = "service_rejection"  # isv.trade-service-rejection: narrow the window, wait 3 min
    SESSION_EXPIRED = "session_expired"  # the shop must re-authorise: pause the shop, alert, no retry
    TRADE_NOT_FOUND = "trade_not_found"  # isv.trade-not-exist: this tid (after a lag allowance)
    PERMANENT = "permanent"  # this call alone: a parameter refused, a trade failing validation
    APP_WIDE = "app_wide"  # permissions, signature, app key, clock, unknown: pause all fetching


class Scope(enum.Enum):
    """Whom a failure is about, which decides what stops (docs/design.md#one-error-taxonomy-three-scopes)."""

    TRANSIENT = "transient"  # nobody: the same call later will do
    TRADE = "trade"  # one trade (one call): it becomes unresolved, the rest goes on
    SHOP = "shop"  # one shop: its work pauses until it is re-authorised
    APP = "app"  # every call of the app: all fetching pauses behind one probe


_SCOPES = {
    ErrorKind.RETRYABLE: Scope.TRANSIENT,
    ErrorKind.RATE_LIMITED: Scope.TRANSIENT,
    ErrorKind.SERVICE_REJECTION: Scope.TRANSIENT,
    ErrorKind.SESSION_EXPIRED: Scope.SHOP,
    ErrorKind.TRADE_NOT_FOUND: Scope.TRADE,
    ErrorKind.PERMANENT: Scope.TRADE,
    ErrorKind.APP_WIDE: Scope.APP,
}


def scope_of(kind: ErrorKind) -> Scope:
    return _SCOPES[kind]


# "This ban will last for 71 more seconds" (docs/top-api.md#bans).
_BAN_RE = re.compile(r"This ban will last for (\d+) more seconds")

# Legacy per-user / per-session / per-partner / frequency limits (docs/top-api.md#error-codes); today folded
# into code 7. They say "too many calls", never "bad request", so they wait like code 7.
_RATE_LIMIT_CODES = frozenset({4, 5, 6, 7, 8})

# 26/27 missing/invalid session; 44 invalid access token (the session is the access token);
# 53 insufficient security level, whose documented fix is to refresh the authorisation.
_SESSION_CODES = frozenset({26, 27, 44, 53})
_SESSION_SUB_CODES = frozenset({"invalid-sessionkey", "session-expired"})

# The request could not have worked for any trade or shop: HTTP verb (9), the app's permission
# package (11), user or partner permissions (12, 13), method, format, signature, app key, timestamp
# (31: the host clock is over 10 minutes off), version (21-34 less the session codes), forbidden (42).
APP_WIDE_CODES = frozenset({9, 11, 12, 13, 42, *range(21, 35)}) - _SESSION_CODES

# A parameter of this one call was refused (40/41 missing/invalid arguments, 43 parameter error).
_PARAMETER_CODES = frozenset({40, 41, 43})
_PARAMETER_SUB_PREFIXES = ("isv.invalid-parameter", "isv.missing-parameter")
# A TOPATS task or its single-use download link is gone: start that one task again.
_CALL_SUB_CODES = frozenset({"isv.task-not-exist", "isv.invalid-download-url"})

# 10 "Service Currently Unavailable": the platform's own "retry later".
_RETRYABLE_CODES = frozenset({10})
# 15 and its older numeric form 520 wrap backend errors; the sub-code decides (docs/top-api.md#error-codes).
# With no sub-code at all nothing says the request was wrong, so a bounded retry is the cheaper mistake.
_REMOTE_WRAPPER_CODES = frozenset({15, 520})


def parse_ban_seconds(text: str | None) -> int | None:
    """N from "This ban will last for N more seconds", or None when the text does not say."""
    if not text:
        return None
    match = _BAN_RE.search(text)
    return int(match.group(1)) if match else None


def _is_rate_limit(code: int | None, lowered: str, sub_msg: str | None) -> bool:
    return (
        code in _RATE_LIMIT_CODES
        or lowered.startswith("accesscontrol.limited-by-")
        # taobaopy waits 1 s and retries on it; a throttle signal should slow everyone, not one caller.
        or lowered == "isp.call-limited"
        or parse_ban_seconds(sub_msg) is not None
    )


def classify(code: int | None, sub_code: str | None, sub_msg: str | None = None) -> ErrorKind:
    """Kind of a TOP `error_response` with these fields (any of them may be absent)."""
    sub = (sub_code or "").strip()
    lowered = sub.lower()

    if lowered == "isv.trade-service-rejection":
        return ErrorKind.SERVICE_REJECTION
    if lowered == "isv.trade-not-exist":
        return ErrorKind.TRADE_NOT_FOUND
    if lowered in _SESSION_SUB_CODES or lowered.endswith((".invalid-sessionkey", ".session-expired")):
        return ErrorKind.SESSION_EXPIRED
    if _is_rate_limit(code, lowered, sub_msg):
        return ErrorKind.RATE_LIMITED
    if code in _SESSION_CODES:
        return ErrorKind.SESSION_EXPIRED
    if code in APP_WIDE_CODES or lowered.startswith("accesscontrol."):
        return ErrorKind.APP_WIDE
    if lowered in _CALL_SUB_CODES or lowered.startswith(_PARAMETER_SUB_PREFIXES):
        return ErrorKind.PERMANENT
    if code in _PARAMETER_CODES and not sub:
        return ErrorKind.PERMANENT
    if lowered.startswith("isp."):
        return ErrorKind.RETRYABLE
    if code in _RETRYABLE_CODES:
        return ErrorKind.RETRYABLE
    if code in _REMOTE_WRAPPER_CODES and not sub:
        return ErrorKind.RETRYABLE
    return ErrorKind.APP_WIDE
