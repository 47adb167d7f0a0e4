"""A tiny signed TOP caller for the stand-in tests: plain aiohttp, taobao.signing, lenient JSON."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from simulator.market import MarketChange
from simulator.standin import StandIn
from taobao.signing import SignMethod, sign
from taobao.timefmt import epoch_ms, format_top_time

LENIENT = json.JSONDecoder(strict=False)
ALL_TYPES = (
    "fixed,auction,step,auto_delivery,ec,cod,fenxiao,o2o_offlinetrade,nopaid,tmall_i18n,eticket,"
    "pre_auth_type,instant_trade"
)


@dataclass
class Answer:
    status: int
    text: str

    @property
    def json(self) -> dict[str, Any]:
        value = LENIENT.decode(self.text)
        assert isinstance(value, dict)
        return value

    def body(self, method: str) -> dict[str, Any]:
        """The inner object of a success answer."""
        key = method.removeprefix("taobao.").replace(".", "_") + "_response"
        data = self.json
        assert key in data, data
        inner = data[key]
        assert isinstance(inner, dict)
        return inner

    @property
    def error(self) -> dict[str, Any]:
        data = self.json
        assert "error_response" in data, data
        inner = data["error_response"]
        assert isinstance(inner, dict)
        return inner


def top_time(value: datetime) -> str:
    return format_top_time(value)


def now_minus(seconds: float) -> datetime:
    return datetime.now(UTC) - timedelta(seconds=seconds)


class TopCaller:
    """Signs and sends TOP calls for one shop's session."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        api_url: str,
        app_key: str,
        app_secret: str,
        session_key: str,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.http = http
        self.api_url = api_url
        self.app_key = app_key
        self.app_secret = app_secret
        self.session_key = session_key
        self.now = now

    @classmethod
    def of(cls, http: aiohttp.ClientSession, standin: StandIn, shop: int = 0) -> TopCaller:
        return cls(
            http,
            standin.api_url,
            standin.app_key,
            standin.app_secret,
            standin.shops[shop].session,
            standin.market.clock.now,
        )

    def system_params(
        self, method: str, sign_method: SignMethod = "md5", epoch_timestamp: bool = False
    ) -> dict[str, str]:
        now = self.now()
        return {
            "method": method,
            "app_key": self.app_key,
            "timestamp": str(epoch_ms(now)) if epoch_timestamp else format_top_time(now),
            "v": "2.0",
            "format": "json",
            "sign_method": sign_method,
            "session": self.session_key,
        }

    async def call(self, method: str, /, **business: str) -> Answer:
        return await self.request(method, business)

    async def request(
        self,
        method: str,
        business: Mapping[str, str],
        *,
        sign_method: SignMethod = "md5",
        epoch_timestamp: bool = False,
        http_method: str = "POST",
        overrides: Mapping[str, str] | None = None,
        secret: str | None = None,
    ) -> Answer:
        """Sign and send; `overrides` replace system parameters before signing ("" removes one)."""
        params = self.system_params(method, sign_method, epoch_timestamp)
        params.update(business)
        params.update(overrides or {})
        params = {k: v for k, v in params.items() if v != ""}
        params["sign"] = sign(params, secret or self.app_secret, sign_method)
        return await self.send(params, http_method)

    async def send(self, params: Mapping[str, str], http_method: str = "POST") -> Answer:
        if http_method == "GET":
            async with self.http.get(self.api_url, params=params) as response:
                return Answer(response.status, await response.text())
        # System parameters in the query, business ones in the form body, as the Java SDK sends them.
        system = {"method", "app_key", "timestamp", "v", "format", "sign_method", "session", "sign"}
        query = {k: v for k, v in params.items() if k in system}
        form = {k: v for k, v in params.items() if k not in system}
        async with self.http.post(self.api_url, params=query, data=form) as response:
            return Answer(response.status, await response.text())

    async def ok(self, method: str, /, **business: str) -> dict[str, Any]:
        answer = await self.request(method, business)
        assert answer.status == 200
        return answer.body(method)


def trades_of(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    trades = body.get("trades")
    if trades is None:
        return []
    items = trades["trade"]
    assert isinstance(items, list)
    return items


def create_in_shop(standin: StandIn, shop: int = 0, within: int = 500) -> MarketChange:
    """Step the market until shop `shop` gets a new trade; that change."""
    nick = standin.shops[shop].nick
    for _ in range(within):
        (change,) = standin.market.step(1)
        if change.topic == "taobao_trade_TradeCreate" and change.seller_nick == nick:
            return change
    raise AssertionError(f"no TradeCreate in shop {shop} within {within} changes")


async def permit_every_shop(standin: StandIn) -> None:
    """`taobao.tmc.user.permit` with each shop's session, as the daemon does at start: the stand-in, like
    the platform, pushes a seller's messages only once the app permitted it."""
    async with aiohttp.ClientSession() as http:
        for shop in range(len(standin.shops)):
            body = await TopCaller.of(http, standin, shop).ok("taobao.tmc.user.permit")
            assert body["is_success"] is True
    assert standin.permits.users == {shop.nick for shop in standin.shops}
