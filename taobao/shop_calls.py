"""The calls that onboard and keep a shop (docs/top-api.md#shop-onboarding): subscribe its messages
(`taobao.tmc.user.permit`), unsubscribe them (`taobao.tmc.user.cancel`) and renew its session
(`taobao.top.auth.token.refresh`). Each goes through the transport's retries and error taxonomy like
every TOP call; an answer that does not say the call succeeded is a `MalformedResponse`.

The permit names no topics: `topics` would overwrite the seller's list, while leaving it out keeps every
topic the app subscribed in the console.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import SecretStr

from taobao.errors import MalformedResponse
from taobao.limiter import Priority
from taobao.transport import TopTransport

TMC_USER_PERMIT = "taobao.tmc.user.permit"
TMC_USER_CANCEL = "taobao.tmc.user.cancel"
TOKEN_REFRESH = "taobao.top.auth.token.refresh"


@dataclass(frozen=True, slots=True)
class RenewedSession:
    session: SecretStr = field(repr=False)
    refresh_token: SecretStr | None = field(repr=False)
    expires_at: datetime | None


async def permit(client: TopTransport, session: SecretStr) -> None:
    """Turn on TMC delivery of the seller's messages (idempotent: calling again re-opens)."""
    secret = session.get_secret_value()
    payload = await client.call(TMC_USER_PERMIT, {}, session=secret, priority=Priority.STREAM)
    _require_success(TMC_USER_PERMIT, payload)


async def cancel(client: TopTransport, nick: str) -> None:
    """Stop TMC delivery for the seller (messages already queued stay queued)."""
    payload = await client.call(TMC_USER_CANCEL, {"nick": nick}, session=None, priority=Priority.STREAM)
    _require_success(TMC_USER_CANCEL, payload)


async def refresh(client: TopTransport, refresh_token: SecretStr, now: datetime) -> RenewedSession:
    """A new session from the refresh token. `token_result` is a JSON string holding the new tokens and
    the expiry in seconds (`expires_in`) or as epoch milliseconds (`expire_time`)."""
    params = {"refresh_token": refresh_token.get_secret_value()}
    payload = await client.call(TOKEN_REFRESH, params, session=None, priority=Priority.STREAM)
    try:
        result = json.loads(payload["token_result"])
        access = str(result["access_token"])
    except (KeyError, TypeError, ValueError):
        # Never the payload itself: it may hold tokens.
        raise MalformedResponse("no usable token_result in the answer", method=TOKEN_REFRESH) from None
    renewed = result.get("refresh_token")
    return RenewedSession(
        session=SecretStr(access),
        refresh_token=SecretStr(str(renewed)) if renewed else refresh_token,
        expires_at=_expiry(result, now),
    )


def _expiry(result: dict[str, Any], now: datetime) -> datetime | None:
    expire_time = result.get("expire_time")
    if isinstance(expire_time, int | float) or (isinstance(expire_time, str) and expire_time.isdigit()):
        return datetime.fromtimestamp(int(expire_time) / 1000, tz=UTC)
    expires_in = result.get("expires_in")
    if isinstance(expires_in, int | float) or (isinstance(expires_in, str) and expires_in.isdigit()):
        return now + timedelta(seconds=int(expires_in))
    return None


def _require_success(method: str, payload: dict[str, Any]) -> None:
    if payload.get("is_success") is not True:
        text = json.dumps(payload)[:512]
        raise MalformedResponse("the answer does not say it succeeded", payload=text, method=method)
