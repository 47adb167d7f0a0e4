"""Decoding TOP response bodies (docs/top-api.md#http-request, docs/top-api.md#response-envelope,
docs/top-api.md#error-envelope). Pure: bytes in, the payload dict or a `TopError` out.

Shapes handled: `{"<method>_response": {...}}` (the documented default; the client never asks for
simplified JSON), `{"error_response": {...}}` with or without sub-code, and raw control characters
inside strings (buyer messages and memos carry unescaped tabs and newlines). A 200 answer that is not
TOP's (an object without any `*_response` wrapper, an HTML page) comes from something between us and
TOP, a proxy or a captive portal: it is app-wide (docs/top-api.md#error-scopes), never the message's
fault and never an empty answer.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from taobao.errors import AppWideTopError, MalformedResponse, RetryableTopError, TopError, error_from_response

logger = logging.getLogger(__name__)

# How much of an unusable body a dead-letter row keeps.
_PAYLOAD_CHARS = 64 * 1024


def response_key(method: str) -> str:
    """`taobao.trades.sold.get` → `trades_sold_get_response`; other prefixes are kept
    (`alibaba.aliqin.fc.sms.num.send` → `alibaba_aliqin_fc_sms_num_send_response`)."""
    name = method.removeprefix("taobao.")
    return name.replace(".", "_") + "_response"


def decode_body(body: bytes | str, *, method: str | None = None) -> dict[str, Any]:
    """The JSON object in `body`. Control characters inside strings are accepted; anything that still
    does not decode to an object is a garbled body, which is worth retrying."""
    if isinstance(body, bytes):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            # One bad byte in a memo must not turn a whole trade into an endless retry.
            logger.warning(
                "TOP body is not valid UTF-8; decoding with replacement characters",
                extra={"action": "top_body_not_utf8", "method": method},
            )
            text = body.decode("utf-8", errors="replace")
    else:
        text = body
    text = text.lstrip("\ufeff")
    if text.lstrip()[:9].lower().startswith(("<html", "<!doctype")):
        # A captive portal's or a proxy's page: every call gets it until someone fixes the network.
        raise AppWideTopError("HTTP 200 with an HTML page, not a TOP answer", method=method)
    try:
        decoded = json.loads(text, strict=False)
    except ValueError as exc:
        raise RetryableTopError(
            f"garbled body ({exc.msg if isinstance(exc, json.JSONDecodeError) else 'not JSON'}; "
            f"{len(text)} chars)",
            method=method,
        ) from None
    if not isinstance(decoded, dict):
        kind = type(decoded).__name__
        raise RetryableTopError(f"garbled body (a JSON {kind}, not an object)", method=method)
    return decoded


def unwrap_response(document: dict[str, Any], method: str, *, tid: int | None = None) -> dict[str, Any]:
    """The payload of a decoded response: the object under `<method>_response`. An `error_response`
    raises the matching `TopError`; a document without any wrapper raises `AppWideTopError`."""
    error = document.get("error_response")
    if error is not None:
        if not isinstance(error, dict):
            raise RetryableTopError("garbled body (error_response is not an object)", method=method, tid=tid)
        raise error_from_response(error, method=method, tid=tid)
    payload = document.get(response_key(method))
    if isinstance(payload, dict):
        return payload
    wrappers = [key for key, val in document.items() if key.endswith("_response") and isinstance(val, dict)]
    if len(wrappers) == 1:
        # Like the Java SDK, take the one wrapper there is even if its name is not the expected one.
        logger.warning(
            "TOP response root %s does not match method %s",
            wrappers[0],
            method,
            extra={"action": "top_unexpected_root", "method": method},
        )
        inner: dict[str, Any] = document[wrappers[0]]
        return inner
    raise AppWideTopError(
        f"HTTP 200 without a {response_key(method)} wrapper ({len(wrappers)} candidates)",
        method=method,
        tid=tid,
    )


def parse_response(body: bytes | str, method: str, *, tid: int | None = None) -> dict[str, Any]:
    """decode_body then unwrap_response."""
    try:
        document = decode_body(body, method=method)
    except RecursionError:
        raise _too_deep(body, method, tid) from None
    return unwrap_response(document, method, tid=tid)


def _too_deep(body: bytes | str, method: str, tid: int | None) -> TopError:
    """JSON nested deeper than the parser goes: one trade's broken content when the call was about one
    trade (it becomes unresolved and is read again later), else a garbled answer worth retrying."""
    reason = "body nested deeper than the JSON parser goes"
    if tid is None:
        return RetryableTopError(f"garbled body ({reason})", method=method)
    payload = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    return MalformedResponse(reason, payload=payload[:_PAYLOAD_CHARS], method=method, tid=tid)
