"""The TOP error classes (docs/design.md#one-error-taxonomy-three-scopes).

Every class of `taobao.taxonomy.ErrorKind` has one exception class here; `error_from_response` builds the
right one from an `error_response` object, and every error's `scope` (trade, shop, app, or transient)
comes from `taobao.taxonomy.scope_of`, the one table callers act on. No exception carries a session
key, the app secret or a request URL: callers log them freely.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from common.errors import OrderSyncError
from common.text import sanitize
from taobao.taxonomy import ErrorKind, Scope, classify, parse_ban_seconds, scope_of


class TopError(OrderSyncError):
    """A TOP call failed. Fields mirror `error_response` (docs/top-api.md#error-envelope); `method` and `tid`
    say what was being called. Transport failures have no `code`."""

    kind: ClassVar[ErrorKind] = ErrorKind.PERMANENT

    def __init__(
        self,
        msg: str,
        *,
        code: int | None = None,
        sub_code: str | None = None,
        sub_msg: str | None = None,
        request_id: str | None = None,
        method: str | None = None,
        tid: int | None = None,
    ) -> None:
        self.msg = msg
        self.code = code
        self.sub_code = sub_code
        self.sub_msg = sub_msg
        self.request_id = request_id
        self.method = method
        self.tid = tid
        super().__init__(self._describe())

    @property
    def scope(self) -> Scope:
        """Whom this failure is about: what must stop (`taobao.taxonomy.scope_of`)."""
        return scope_of(self.kind)

    def _describe(self) -> str:
        parts = [f"{self.method or 'TOP call'}: {self.msg}"]
        for name in ("code", "sub_code", "sub_msg", "tid", "request_id"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}={value}")
        return " ".join(parts)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._describe()!r})"

    def redact(self, *secrets: str) -> None:
        """Mask any of `secrets` that the server echoed back into the text fields."""
        for name in ("msg", "sub_code", "sub_msg"):
            value = getattr(self, name)
            if not value:
                continue
            for secret in secrets:
                if secret:
                    value = value.replace(secret, "***")
            setattr(self, name, value)
        self.args = (self._describe(),)


class RetryableTopError(TopError):
    """Network failure, HTTP non-200, garbled body, `isp.*`, code 10, 15/520 without a sub-code:
    back off and try again."""

    kind = ErrorKind.RETRYABLE


class RateLimited(TopError):
    """Code 7 (or another throttle signal): the whole app is banned for `ban_seconds`."""

    kind = ErrorKind.RATE_LIMITED
    # The ban length is not always stated (`isp.call-limited`, legacy codes); taobaopy waits 1 s there.
    DEFAULT_BAN_SECONDS: ClassVar[float] = 1.0

    def __init__(self, msg: str, *, ban_seconds: float | None = None, **fields: Any) -> None:
        super().__init__(msg, **fields)
        if ban_seconds is None:
            parsed = parse_ban_seconds(self.sub_msg)
            if parsed is None:
                parsed = parse_ban_seconds(self.msg)
            ban_seconds = float(parsed) if parsed is not None else self.DEFAULT_BAN_SECONDS
        self.ban_seconds = ban_seconds


class SessionExpired(TopError):
    """The shop's session key is invalid or expired (26/27/44/53, `invalid-sessionkey`,
    `session-expired`): pause the shop and alert; retrying cannot help."""

    kind = ErrorKind.SESSION_EXPIRED


class ServiceRejection(TopError):
    """`isv.trade-service-rejection`: too many slow queries; narrow the window and retry after
    `retry_after` seconds (the platform says 3 minutes)."""

    kind = ErrorKind.SERVICE_REJECTION
    retry_after: ClassVar[float] = 180.0


class PermanentTopError(TopError):
    """This call alone cannot succeed (a parameter refused, a trade failing validation): retrying the
    same call cannot help; for a fullinfo call the trade becomes unresolved and is tried again later."""

    kind = ErrorKind.PERMANENT


class AppWideTopError(TopError):
    """No call of the app can succeed now: permissions (11, 13), signature, app key, timestamp (31),
    method or version (9, 21-34), forbidden (42), `accesscontrol.*` other than a ban, an unknown code or
    sub-code, a 200 answer without the `*_response` wrapper. Never the message's fault: all fetching
    pauses behind one probe (`taobao.pause`) until a call succeeds again."""

    kind = ErrorKind.APP_WIDE


class TradeNotFound(PermanentTopError):
    """`isv.trade-not-exist`: the tid is unknown or outside the three-month window."""

    kind = ErrorKind.TRADE_NOT_FOUND


class MalformedResponse(PermanentTopError):
    """A well-formed success envelope whose content is unusable (a trade that fails validation, a
    missing object). `payload` holds the offending JSON text for the dead-letter row."""

    def __init__(self, msg: str, *, payload: str = "", **fields: Any) -> None:
        super().__init__(msg, **fields)
        self.payload = payload


class MalformedPage(RetryableTopError):
    """A list page whose shape or counts do not add up (a missing or garbled count or flag, a short or
    empty page where more were promised, content that does not parse): the window it belongs to fails
    for now and is read again later; it is never proven (docs/design.md#lists-are-checked-before-proof)."""


class TopatsDownloadError(RetryableTopError):
    """A TOPATS result file could not be fetched or failed its check code. The download URL is single
    use: retrying means asking `taobao.topats.result.get` for a fresh one."""


_CLASS_BY_KIND: dict[ErrorKind, type[TopError]] = {
    ErrorKind.RETRYABLE: RetryableTopError,
    ErrorKind.RATE_LIMITED: RateLimited,
    ErrorKind.SESSION_EXPIRED: SessionExpired,
    ErrorKind.SERVICE_REJECTION: ServiceRejection,
    ErrorKind.TRADE_NOT_FOUND: TradeNotFound,
    ErrorKind.PERMANENT: PermanentTopError,
    ErrorKind.APP_WIDE: AppWideTopError,
}


def _optional_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def _optional_str(value: Any) -> str | None:
    if value is None or value == "":
        return None
    # The server's words reach logs and columns: one sanitizer for all text from outside.
    return sanitize(str(value))


def error_from_response(
    error: Mapping[str, Any], *, method: str | None = None, tid: int | None = None
) -> TopError:
    """The exception for one `error_response` object; tolerant of missing fields and of codes sent as
    strings."""
    code = _optional_int(error.get("code"))
    sub_code = _optional_str(error.get("sub_code"))
    sub_msg = _optional_str(error.get("sub_msg"))
    kind = classify(code, sub_code, sub_msg)
    return _CLASS_BY_KIND[kind](
        _optional_str(error.get("msg")) or "error_response",
        code=code,
        sub_code=sub_code,
        sub_msg=sub_msg,
        request_id=_optional_str(error.get("request_id")),
        method=method,
        tid=tid,
    )
