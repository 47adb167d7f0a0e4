"""The TOP gateway stand-in: `/router/rest` over GET and POST (docs/top-api.md#http-request,
docs/top-api.md#response-envelope, docs/top-api.md#stand-in).

A request goes through the same gates as on TOP: system parameters, timestamp within ±10 minutes
(GMT+8 string or epoch milliseconds), signature (md5, hmac, hmac-sha256), session, then the fault
knobs, then the method. Answers are HTTP 200 JSON, errors in `error_response`.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from simulator.clock import whole_seconds
from simulator.faults import LIST_METHODS, FaultInjector, FaultKnobs
from simulator.lifecycle import full_topic
from simulator.market import Market, MarketChange
from simulator.odd_values import break_trade
from simulator.shop_auth import CANCEL, PERMIT, REFRESH, SESSIONLESS, ShopAuth
from simulator.tmc_permits import TmcPermits
from simulator.top_protocol import FieldSelection, TopError, dump_json, envelope, new_request_id
from simulator.topats import TopatsService
from simulator.trade_methods import (
    CallContext,
    parse_paging,
    trade_fullinfo_get,
    trade_not_exist,
    trades_sold_get,
    trades_sold_increment_get,
)
from taobao.signing import verify
from taobao.timefmt import from_epoch_ms, parse_top_time

ROUTER_PATH = "/router/rest"
DOWNLOAD_PATH = "/__standin/topats/download/{token}"
TIMESTAMP_TOLERANCE_SECONDS = 600
ONLINE_WINDOW_DAYS = 90
# Request parameters worth keeping in the call log.
LOGGED_PARAMS = (
    "tid", "fields", "start_created", "end_created", "start_modified", "end_modified", "status", "type",
    "page_no", "page_size", "use_has_next", "task_id", "start_time", "end_time", "timestamp", "sign_method",
    "partner_id",  # the caller's tag: a replica's name (daemon/app.py), so calls can be attributed
)  # fmt: skip

Handler = Callable[[CallContext, Mapping[str, str], web.Request], dict[str, Any]]
FULLINFO = "taobao.trade.fullinfo.get"
CREATE_TOPIC = full_topic("TradeCreate")
# How long the gateway remembers when a trade's creation was published (the longest detail lag).
DETAIL_LAG_MEMORY = timedelta(hours=1)
# What a proxy or captive portal answers with HTTP 200 instead of TOP's JSON.
UNWRAPPED_JSON = '{"result":"ok"}'
CAPTIVE_PAGE = (
    "<!DOCTYPE html><html><head><title>Network login</title></head>"
    "<body><h1>Please sign in to continue</h1></body></html>"
)


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One call as the gateway saw it. `code` 0 means success; `http_status` is what went out."""

    at: datetime
    method: str
    shop: str | None
    params: dict[str, str]
    code: int
    sub_code: str | None
    http_status: int
    garbled: bool = False
    # The fault that shaped the answer besides `garbled` (e.g. "detail_lag", "malformed_page:short_page").
    fault: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "method": self.method,
            "shop": self.shop,
            "params": self.params,
            "code": self.code,
            "sub_code": self.sub_code,
            "http_status": self.http_status,
            "garbled": self.garbled,
            "fault": self.fault,
        }


@dataclass
class CallStats:
    """Call counters per method (every call that named a method) and a bounded call log."""

    log_limit: int = 100_000
    calls: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    log: deque[CallRecord] = field(default_factory=deque)

    def add(self, record: CallRecord) -> None:
        self.calls[record.method or "<none>"] += 1
        if record.fault:
            self.faults[record.fault] += 1
        if record.http_status != 200:
            self.errors[f"http:{record.http_status}"] += 1
        elif record.code:
            self.errors[f"{record.code}:{record.sub_code or ''}"] += 1
        self.log.append(record)
        while len(self.log) > self.log_limit:
            self.log.popleft()

    def calls_of(self, method: str, shop: str | None = None) -> list[CallRecord]:
        return [r for r in self.log if r.method == method and (shop is None or r.shop == shop)]

    def reset(self) -> None:
        self.calls.clear()
        self.errors.clear()
        self.faults.clear()
        self.log.clear()

    def summary(self, recent: int = 50) -> dict[str, Any]:
        tail = list(self.log)[-recent:] if recent > 0 else []
        return {
            "calls": dict(self.calls),
            "errors": dict(self.errors),
            "faults": dict(self.faults),
            "total_calls": sum(self.calls.values()),
            "log_size": len(self.log),
            "recent": [r.to_json() for r in tail],
        }


@dataclass(frozen=True, slots=True)
class _Call:
    """One request to the router, as read before any gate."""

    method: str
    params: dict[str, str]
    http: web.Request
    now: datetime
    logged: dict[str, str]  # the parameters the call log keeps
    request_id: str

    def record(
        self,
        shop: str | None,
        code: int,
        sub_code: str | None,
        garbled: bool = False,
        fault: str | None = None,
    ) -> CallRecord:
        """The call log's record of an HTTP 200 answer."""
        return CallRecord(self.now, self.method, shop, self.logged, code, sub_code, 200, garbled, fault)


@dataclass
class GatewayConfig:
    app_key: str = "12345678"
    app_secret: str = field(default="standin-secret", repr=False)
    timestamp_tolerance_seconds: int = TIMESTAMP_TOLERANCE_SECONDS
    online_window_days: int = ONLINE_WINDOW_DAYS
    call_log_limit: int = 100_000


class Gateway:
    def __init__(
        self,
        market: Market,
        config: GatewayConfig | None = None,
        faults: FaultKnobs | None = None,
        seed: int = 0,
        topats: TopatsService | None = None,
        permits: TmcPermits | None = None,
    ) -> None:
        self.market = market
        self.config = config or GatewayConfig()
        self.faults = faults or FaultKnobs()
        self.injector = FaultInjector(self.faults, seed)
        self.topats = topats or TopatsService(market, seed=seed)
        self.stats = CallStats(log_limit=self.config.call_log_limit)
        self._ids = random.Random(seed ^ 0x1D)
        self._sessions = {shop.session: i for i, shop in enumerate(market.shops)}
        self.auth = ShopAuth(market, self._sessions, permits or TmcPermits(), seed=seed)
        # When each recent trade's TradeCreate was published, for the detail lag.
        self._created_at: dict[int, datetime] = {}
        self._created_order: deque[tuple[datetime, int]] = deque()
        market.add_change_listener(self._on_market_change)
        self._methods: dict[str, Handler] = {
            FULLINFO: lambda ctx, p, _r: trade_fullinfo_get(self.market, ctx, p),
            "taobao.trades.sold.get": lambda ctx, p, _r: trades_sold_get(self.market, ctx, p),
            "taobao.trades.sold.increment.get": (
                lambda ctx, p, _r: trades_sold_increment_get(self.market, ctx, p)
            ),
            "taobao.topats.trades.sold.get": lambda ctx, p, _r: self.topats.create(ctx.shop, ctx.now, p),
            "taobao.topats.result.get": lambda ctx, p, r: self.topats.result(ctx.shop, p, _origin(r)),
            PERMIT: lambda ctx, p, _r: self.auth.permit(ctx.shop, p),
            CANCEL: lambda _ctx, p, _r: self.auth.cancel(p),
            REFRESH: lambda _ctx, p, _r: self.auth.refresh(p),
        }

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(self._methods)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_route("GET", ROUTER_PATH, self.handle)
        app.router.add_route("POST", ROUTER_PATH, self.handle)
        app.router.add_route("GET", DOWNLOAD_PATH, self.download)

    # ----- /router/rest ------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        params: dict[str, str] = dict(request.query)
        if request.method == "POST" and request.body_exists:
            form = await request.post()
            # File parts are neither signed nor used by these methods.
            params.update({k: v for k, v in form.items() if isinstance(v, str)})
        method = params.get("method", "")
        injector = self.injector
        delay = injector.latency_seconds(method)
        if delay:
            await asyncio.sleep(delay)  # simulated server time, not a wait for something
        now = self.market.clock.now()
        logged = {k: params[k] for k in LOGGED_PARAMS if k in params}

        status = injector.non_200_status(method)
        if status is not None:
            self.stats.add(CallRecord(now, method, None, logged, 0, None, status))
            return web.Response(
                status=status, text="<html><body>Bad Gateway</body></html>", content_type="text/html"
            )

        call = _Call(method, params, request, now, logged, new_request_id(self._ids))
        window = injector.error_window(method)
        if window is not None:
            return self._window_answer(window, call)
        return self._answer(call)

    def _answer(self, call: _Call) -> web.Response:
        """TOP's JSON answer: the method's, or the error of the first gate it fails."""
        method, now = call.method, call.now
        simplify = call.params.get("simplify", "").lower() == "true"
        shop_nick: str | None = None
        code, sub_code = 0, None
        fault: list[str] = []
        try:
            shop = self._check_request(call.params, method, now)
            shop_nick = self.market.shops[shop].nick if shop >= 0 else None
            body, unwrapped = self._call(shop, call, fault)
            payload = envelope(method, body, call.request_id, unwrapped or simplify)
        except TopError as exc:
            code, sub_code = exc.code, exc.sub_code
            payload = exc.body(call.request_id)
        text = dump_json(payload, self.faults.raw_control_chars)
        garbled = self.injector.garble(method, text)
        shaped = fault[0] if fault else None
        self.stats.add(call.record(shop_nick, code, sub_code, garbled is not None, shaped))
        return web.Response(
            text=garbled if garbled is not None else text, content_type="application/json", charset="utf-8"
        )

    def _call(self, shop: int, call: _Call, fault: list[str]) -> tuple[dict[str, Any], bool]:
        """The method's answer body, shaped by the faults that act on it (named in `fault`); True when
        it must also go out unwrapped. Raises the TopError of an injected error."""
        method, params, injector = call.method, call.params, self.injector
        error = injector.rate_limit(params["app_key"], method) or injector.isp_error(method)
        error = error or injector.trade_service_rejection(method)
        if error is not None:
            raise error
        ctx = CallContext(
            shop=shop,
            now=whole_seconds(call.now),
            online_window_seconds=self.config.online_window_days * 86400,
            list_lag_seconds=self.faults.list_lag_seconds,
            peak_mode=self.faults.peak_mode,
        )
        body = self._methods[method](ctx, params, call.http)
        if method == FULLINFO:
            self._fullinfo_faults(body, params, fault)
        malformed = injector.malformed_page(method) if method in LIST_METHODS else None
        if malformed is None:
            return body, False
        fault.append(f"malformed_page:{malformed}")
        return body, self._malform(malformed, body, params)

    # ----- faults that shape an answer ---------------------------------------------------------------

    def _on_market_change(self, change: MarketChange) -> None:
        if change.topic != CREATE_TOPIC:
            return
        now = self.market.clock.now()
        self._created_at[change.tid] = now
        self._created_order.append((now, change.tid))
        horizon = now - DETAIL_LAG_MEMORY
        while self._created_order and self._created_order[0][0] < horizon:
            at, tid = self._created_order.popleft()
            if self._created_at.get(tid) == at:
                del self._created_at[tid]

    def _fullinfo_faults(self, body: dict[str, Any], params: Mapping[str, str], fault: list[str]) -> None:
        """Detail lag and broken values on a fullinfo answer (`body` is the answer's own copy)."""
        knobs = self.faults
        trade = body["trade"]
        tid = int(params["tid"])  # the method has checked it
        lag = knobs.detail_lag_seconds
        if lag > 0:
            created = self._created_at.get(tid)
            if created is not None and (self.market.clock.now() - created).total_seconds() < lag:
                fault.append("detail_lag")
                raise trade_not_exist()
        if self.injector.odd_values(tid):
            fault.append("odd_values")
            break_trade(
                trade, knobs.odd_values_kinds, FieldSelection(params["fields"]).trade_fields,
                date_field=knobs.odd_date_field, number_field=knobs.odd_number_field,
                money_field=knobs.odd_money_field, nested_field=knobs.odd_nested_field,
                nesting_depth=knobs.odd_nesting_depth,
            )  # fmt: skip

    def _malform(self, kind: str, body: dict[str, Any], params: Mapping[str, str]) -> bool:
        """Malform a list answer's body in place; True when it must also go out unwrapped."""
        if kind == "unwrapped":
            return True
        if kind == "missing_total":
            body.pop("total_results", None)
            body.pop("has_next", None)
            return False
        if kind == "garbled_has_next":
            body["has_next"] = "maybe"
            return False
        trades: list[Any] = body.get("trades", [])
        if kind == "short_page" and trades:
            body["trades"] = trades[: self.injector.short_page_keep(len(trades))]
        else:  # an empty page, or a short page of a page that had nothing to leave out
            body["trades"] = []
        # Either way the counts promise more pages than this one.
        page_no, page_size = parse_paging(params)
        if "has_next" in body:
            body["has_next"] = True
        if "total_results" in body:
            body["total_results"] = max(int(body["total_results"]), page_no * page_size + 1)
        return False

    def _window_answer(self, kind: str, call: _Call) -> web.Response:
        params = call.params
        shop = self._sessions.get(params.get("session", ""))
        nick = None if shop is None else self.market.shops[shop].nick
        fault = f"error_window:{kind}"
        if kind in ("unwrapped-json", "html-200"):
            self.stats.add(call.record(nick, 0, None, fault=fault))
            if kind == "html-200":
                return web.Response(text=CAPTIVE_PAGE, content_type="text/html", charset="utf-8")
            return web.Response(text=UNWRAPPED_JSON, content_type="application/json", charset="utf-8")
        error = self.injector.window_error(kind, params.get("app_key", ""), call.http.remote or "127.0.0.1")
        self.stats.add(call.record(nick, error.code, error.sub_code, fault=fault))
        text = dump_json(error.body(call.request_id), self.faults.raw_control_chars)
        return web.Response(text=text, content_type="application/json", charset="utf-8")

    def _check_request(self, params: Mapping[str, str], method: str, now: datetime) -> int:
        """System parameters, timestamp, signature and session; returns the shop index (-1: a call
        that names no seller)."""
        if not method:
            raise TopError(21, "Missing Method")
        app_key = params.get("app_key", "")
        if not app_key:
            raise TopError(28, "Missing App Key")
        if app_key != self.config.app_key:
            raise TopError(29, "Invalid App Key", "isv.appkey-not-exists")
        if not params.get("sign"):
            raise TopError(24, "Missing Signature")
        timestamp = params.get("timestamp", "")
        if not timestamp:
            raise TopError(30, "Missing Timestamp")
        sent = _parse_timestamp(timestamp)
        if sent is None or abs((now - sent).total_seconds()) > self.config.timestamp_tolerance_seconds:
            raise TopError(31, "Invalid Timestamp", sub_msg="时间戳错误，与服务器时间相差不能超过10分钟")
        version = params.get("v", "")
        if not version:
            raise TopError(32, "Missing Version")
        if version != "2.0":
            raise TopError(34, "Unsupported Version")
        if params.get("format", "xml").lower() != "json":
            # TOP defaults to xml; this stand-in speaks JSON only.
            raise TopError(23, "Invalid Format", sub_msg="only format=json is supported here")
        if not verify(params, self.config.app_secret):
            raise TopError(25, "Invalid signature")
        if method not in self._methods:
            raise TopError(22, "Invalid Method")
        if method in SESSIONLESS:
            return -1  # the app's own call: no seller
        session = params.get("session", "")
        if not session:
            raise TopError(26, "Missing Session")
        shop = self._sessions.get(session)
        if shop is None:
            raise TopError(27, "Invalid session", "invalid-sessionkey", "SessionKey非法")
        return shop

    # ----- topats download ---------------------------------------------------------------------------

    async def download(self, request: web.Request) -> web.StreamResponse:
        task = self.topats.claim_download(request.match_info["token"])
        if task is None or task.path is None:
            body = TopError(15, "Remote Service Error", "isv.invalid-download-url", "下载链接已失效").body(
                new_request_id(self._ids)
            )
            return web.json_response(body, status=404)
        response = web.FileResponse(
            task.path,
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Disposition": f'attachment;filename="{task.task_id}.zip"',
            },
        )
        return response


def _parse_timestamp(value: str) -> datetime | None:
    """Both forms TOP accepts: `yyyy-MM-dd HH:mm:ss` (GMT+8) and epoch milliseconds."""
    try:
        if value.isdigit():
            return from_epoch_ms(int(value))
        return parse_top_time(value)
    except (ValueError, OverflowError, OSError):
        return None


def _origin(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"
