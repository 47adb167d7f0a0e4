"""TOP request signing (docs/top-api.md#signature). Pure functions, no I/O.

The same rule, restricted to three parameters and md5, signs a TMC CONNECT
(docs/tmc-protocol.md#connect-signing).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Literal

SignMethod = Literal["md5", "hmac", "hmac-sha256"]
SIGN_METHODS: tuple[SignMethod, ...] = ("md5", "hmac", "hmac-sha256")


def canonical_string(params: Mapping[str, str]) -> str:
    """`name1value1name2value2…` sorted by name; `sign` and empty values are left out."""
    return "".join(f"{k}{params[k]}" for k in sorted(params) if k != "sign" and params[k] != "")


def sign(params: Mapping[str, str], secret: str, method: SignMethod) -> str:
    """Upper-case hex signature of `params` with `secret` by `method`."""
    message = canonical_string(params).encode("utf-8")
    key = secret.encode("utf-8")
    if method == "md5":
        return hashlib.md5(key + message + key).hexdigest().upper()
    if method == "hmac":
        return hmac.new(key, message, hashlib.md5).hexdigest().upper()
    if method == "hmac-sha256":
        return hmac.new(key, message, hashlib.sha256).hexdigest().upper()
    raise ValueError(f"unsupported sign_method {method!r}")


def verify(params: Mapping[str, str], secret: str) -> bool:
    """True when `params['sign']` matches; the method comes from `params['sign_method']` (default md5)."""
    method = params.get("sign_method") or "md5"
    given = params.get("sign", "")
    if method not in SIGN_METHODS or not given:
        return False
    expected = sign(params, secret, method)
    return hmac.compare_digest(expected, given.upper())
