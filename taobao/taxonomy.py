"""The one "retry or not?" decision for TOP errors (docs/design.md#one-error-taxonomy-three-scopes,
docs/top-api.md#error-codes, docs/top-api.md#sub-codes).

Pure: a code, a sub-code and a sub-message in, an `ErrorKind` out. `taobao.errors` turns the kind into
an exception; the client acts on it. Rules are checked in the order written below, and anything no rule
recognises is permanent (docs/top-api.md#sub-codes).
"""

from __future__ import annotations

import enum
import re


class ErrorKind(enum.Enum):
    RETRYABLE = "retryable"  # network, HTTP non-200, garbled body, isp.*: back off and retry
    RATE_LIMITED = "rate_limited"  # code 7: pause every caller for the ban, then retry
    SESSION_EXPIRED = "session_expired"  # the shop must re-authorise: pause the shop, alert, no retry
    SERVICE_REJECTION = "service_rejection"  # isv.trade-service-rejection: narrow the window, wait 3 min
    TRADE_NOT_FOUND = "trade_not_found"  # isv.trade-not-exist: permanent for this tid
    PERMANENT = "permanent"  # isv.*, bad request, permissions, unknown: log, quarantine, no retry


# "This ban will last for 71 more seconds" (docs/top-api.md#bans).
_BAN_RE = re.compile(r"This ban will last for (\d+) more seconds")

# Legacy per-user / per-session / per-partner / frequency limits (docs/top-api.md#error-codes); today folded
# into code 7. They say "too many calls", never "bad request", so they wait like code 7.
_RATE_LIMIT_CODES = frozenset({4, 5, 6, 7, 8})

# 26/27 missing/invalid session; 44 invalid access token (the session is the access token);
# 53 insufficient security level, whose documented fix is to refresh the authorisation.
_SESSION_CODES = frozenset({26, 27, 44, 53})
_SESSION_SUB_CODES = frozenset({"invalid-sessionkey", "session-expired"})

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
    if (
        code in _RATE_LIMIT_CODES
        or lowered.startswith("accesscontrol.limited-by-")
        # taobaopy waits 1 s and retries on it; a throttle signal should slow everyone, not one caller.
        or lowered == "isp.call-limited"
        or parse_ban_seconds(sub_msg) is not None
    ):
        return ErrorKind.RATE_LIMITED
    if code in _SESSION_CODES:
        return ErrorKind.SESSION_EXPIRED
    if lowered.startswith("isp."):
        return ErrorKind.RETRYABLE
    if lowered.startswith("isv."):
        return ErrorKind.PERMANENT
    if code in _RETRYABLE_CODES:
        return ErrorKind.RETRYABLE
    if code in _REMOTE_WRAPPER_CODES and not sub:
        return ErrorKind.RETRYABLE
    return ErrorKind.PERMANENT
