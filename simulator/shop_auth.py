"""The gateway's onboarding calls (docs/top-api.md#shop-onboarding): `taobao.tmc.user.permit` and
`taobao.tmc.user.cancel` switch TMC delivery for a seller (`simulator.tmc_permits`), and
`taobao.top.auth.token.refresh` trades a refresh token for a new session. Knobs: `refresh_token_for`
hands out a seller's refresh token, `expire` makes a seller's sessions answer code 27 (expired), and
`refresh_allowed` off answers the refresh as for an app not sold through the service market."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from typing import Any

from simulator.market import Market
from simulator.tmc_permits import TmcPermits
from simulator.top_protocol import TopError, invalid, require

PERMIT = "taobao.tmc.user.permit"
CANCEL = "taobao.tmc.user.cancel"
REFRESH = "taobao.top.auth.token.refresh"
# Methods called with the app's signature alone, no seller session.
SESSIONLESS = frozenset({CANCEL, REFRESH})


class ShopAuth:
    def __init__(
        self, market: Market, sessions: dict[str, int], permits: TmcPermits, *, seed: int = 0
    ) -> None:
        self._market = market
        self._sessions = sessions  # the gateway's own: session → shop index
        self.permits = permits
        self._rng = random.Random(seed ^ 0xA07)
        self._refresh: dict[str, int] = {}  # refresh token → shop index
        self.session_seconds = 86400  # how long a refreshed session lasts (`expires_in`)
        self.refresh_allowed = True
        self.refresh_calls = 0

    def refresh_token_for(self, nick: str) -> str:
        token = f"6102{self._rng.getrandbits(128):032x}"
        self._refresh[token] = self._index(nick)
        return token

    def expire(self, nick: str) -> None:
        """Every session of the seller is rejected from now on (code 27)."""
        index = self._index(nick)
        for session in [s for s, i in self._sessions.items() if i == index]:
            del self._sessions[session]

    def revoke(self, session: str) -> None:
        """That one session is rejected from now on (code 27), the seller's others still work."""
        self._sessions.pop(session, None)

    def new_session(self, nick: str) -> str:
        """A fresh authorisation by the seller (what the operator adds after an expiry)."""
        session = f"6100{self._rng.getrandbits(208):052x}"
        self._sessions[session] = self._index(nick)
        return session

    def permit(self, shop: int, params: Mapping[str, str]) -> dict[str, Any]:
        self.permits.permit(self._market.shops[shop].nick)
        return {"is_success": True}

    def cancel(self, params: Mapping[str, str]) -> dict[str, Any]:
        self.permits.cancel(require(params, "nick"))
        return {"is_success": True}

    def refresh(self, params: Mapping[str, str]) -> dict[str, Any]:
        self.refresh_calls += 1
        if not self.refresh_allowed:
            raise TopError(11, "Insufficient isv permissions", "isv.permission-api-package-empty")
        shop = self._refresh.pop(require(params, "refresh_token"), None)
        if shop is None:
            raise invalid("refresh_token", "refresh_token非法或已过期")
        nick = self._market.shops[shop].nick
        result = {
            "access_token": self.new_session(nick),
            "refresh_token": self.refresh_token_for(nick),
            "expires_in": self.session_seconds,
            "taobao_user_nick": nick,
        }
        return {"token_result": json.dumps(result)}

    def _index(self, nick: str) -> int:
        for index, shop in enumerate(self._market.shops):
            if shop.nick == nick:
                return index
        raise KeyError(nick)
