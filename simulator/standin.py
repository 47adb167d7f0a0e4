"""The Taobao stand-in as one object: the order market, the TOP gateway, the TMC push server, and an
admin/truth surface on the gateway's aiohttp app. Every market change is published on the TMC queue of
the app's group, as Taobao pushes trade topics to a subscribed app.

    async with StandIn(StandInConfig(seed=7, history_trades=500)) as standin:
        standin.api_url, standin.app_key, standin.app_secret, standin.shops
        standin.faults.list_lag_seconds = 600
        standin.truth()
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web

from simulator.clock import Clock
from simulator.faults import FaultKnobs
from simulator.gateway import ROUTER_PATH, CallStats, Gateway, GatewayConfig
from simulator.lifecycle import full_topic
from simulator.market import ChangeListener, Market, MarketChange, MarketConfig
from simulator.odd_values import ODD_BUYER_TEXT
from simulator.tmc_faults import TmcFaults
from simulator.tmc_server import LostMessage, TmcServer, TmcServerConfig
from simulator.top_protocol import escape_surrogates
from simulator.topats import TopatsService, TopatsTimings
from simulator.truth import TruthSnapshot
from taobao.timefmt import format_top_time

ADMIN_PREFIX = "/__standin"
REFUND_TOPICS = ("taobao_refund_RefundCreated", "taobao_refund_RefundSuccess")
_REFUNDING_TOPICS = frozenset({full_topic("TradePartlyRefund"), full_topic("TradeClose")})


@dataclass(frozen=True, slots=True)
class ShopInfo:
    nick: str
    user_id: int
    session: str = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"nick": self.nick, "session": self.session, "user_id": self.user_id}


@dataclass
class StandInConfig:
    seed: int = 1
    shops: int = 3
    # Changes per second once started (0: the market only moves through step()).
    market_rate: float = 5.0
    history_trades: int = 200
    history_days: int = 90
    app_key: str = "12345678"
    # None: derived from the seed, so a seeded stand-in is reproducible end to end.
    app_secret: str | None = field(default=None, repr=False)
    faults: FaultKnobs = field(default_factory=FaultKnobs)
    topats: TopatsTimings = field(default_factory=TopatsTimings)
    version_retention_seconds: int = 3600
    change_log_limit: int | None = None
    call_log_limit: int = 100_000
    tmc: TmcServerConfig = field(default_factory=TmcServerConfig)
    tmc_faults: TmcFaults = field(default_factory=TmcFaults)
    # The TMC group market changes are published to (the app's `default` group unless told otherwise).
    tmc_group: str = "default"


class StandIn:
    def __init__(self, config: StandInConfig | None = None, clock: Clock | None = None) -> None:
        self.config = config or StandInConfig()
        cfg = self.config
        self.app_key = cfg.app_key
        self.app_secret = cfg.app_secret or f"{random.Random(cfg.seed ^ 0x5EC).getrandbits(128):032x}"
        self.market = Market(
            MarketConfig(
                seed=cfg.seed,
                shops=cfg.shops,
                history_trades=cfg.history_trades,
                history_days=cfg.history_days,
                rate=cfg.market_rate,
                version_retention_seconds=cfg.version_retention_seconds,
                change_log_limit=cfg.change_log_limit,
            ),
            clock=clock,
        )
        self.topats = TopatsService(self.market, cfg.topats, seed=cfg.seed)
        self.gateway = Gateway(
            self.market,
            GatewayConfig(
                app_key=self.app_key, app_secret=self.app_secret, call_log_limit=cfg.call_log_limit
            ),
            faults=cfg.faults,
            seed=cfg.seed,
            topats=self.topats,
        )
        self.tmc = TmcServer({self.app_key: self.app_secret}, cfg.tmc, cfg.tmc_faults)
        # Message id → market change seq of the messages the TMC server withheld (other messages, such
        # as refund topics, are not market changes and have none).
        self._withheld_seq: dict[int, int] = {}
        self.market.typed_buyer_message = self._typed_buyer_message
        self.market.add_change_listener(self._publish)
        # Routes may be added to `app` until start().
        self.app = web.Application()
        self.gateway.add_routes(self.app)
        self._add_admin_routes(self.app)
        self.tmc_url: str | None = None
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None

    # ----- lifecycle ---------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", api_port: int = 0, tmc_port: int = 0) -> None:
        if self._runner is not None:
            raise RuntimeError("stand-in already started")
        await self.tmc.start(host, tmc_port)
        self.tmc_url = self.tmc.url
        runner = web.AppRunner(self.app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, api_port)
        await site.start()
        self._runner = runner
        port = int(runner.addresses[0][1]) if runner.addresses else api_port
        url_host = f"[{host}]" if ":" in host else host
        self._base_url = f"http://{url_host}:{port}"
        if self.config.market_rate > 0:
            self.market.start(self.config.market_rate)

    async def stop(self) -> None:
        await self.market.stop()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        await self.tmc.stop()
        await self.topats.close()

    def _publish(self, change: MarketChange) -> None:
        withheld_before = len(self.tmc.stats.lost)
        message_id = self.tmc.publish(
            self.app_key,
            topic=change.topic,
            content=json.dumps(change.content, ensure_ascii=False),
            nick=change.seller_nick,
            user_id=change.seller_id,
            time=change.modified,
            group=self.config.tmc_group,
        )
        if len(self.tmc.stats.lost) > withheld_before:
            self._withheld_seq[message_id] = change.seq
        if self.tmc.faults.refund_topics and change.topic in _REFUNDING_TOPICS:
            self._publish_refund(change)

    def _publish_refund(self, change: MarketChange) -> None:
        """The refund topics of a refund the market just made: the market refunds in one step, so the
        refund is created and succeeds at the same instant (in production days can pass between)."""
        trade = self.market.trade(change.tid)
        oid = change.content.get("oid")
        order = next(
            (o for o in (trade or {}).get("orders", {}).get("order", []) if o.get("oid") == oid), None
        )
        if trade is None or order is None or order.get("refund_status") != "SUCCESS":
            return  # a close before payment, not a refund
        content = {
            "bill_type": "refund_bill",
            "buyer_nick": trade.get("buyer_nick"),
            "buyer_open_uid": trade.get("buyer_open_uid"),
            "modified": trade["modified"],
            "oid": oid,
            "refund_fee": order.get("payment"),
            "refund_id": order.get("refund_id"),
            "refund_phase": "onsale",  # the market refunds only before a trade finishes
            "seller_nick": change.seller_nick,
            "tid": change.tid,
        }
        for topic in REFUND_TOPICS:
            self.tmc.publish(
                self.app_key,
                topic=topic,
                content=json.dumps({k: v for k, v in content.items() if v is not None}, ensure_ascii=False),
                nick=change.seller_nick,
                user_id=change.seller_id,
                time=change.modified,
                group=self.config.tmc_group,
            )

    def _typed_buyer_message(self, tid: int) -> str | None:
        return ODD_BUYER_TEXT if self.gateway.injector.odd_text(tid) else None

    async def __aenter__(self) -> StandIn:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # ----- what clients need -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("stand-in not started")
        return self._base_url

    @property
    def api_url(self) -> str:
        return self.base_url + ROUTER_PATH

    @property
    def truth_url(self) -> str:
        return self.base_url + ADMIN_PREFIX + "/truth"

    @property
    def shops(self) -> list[ShopInfo]:
        return [ShopInfo(s.nick, s.user_id, s.session) for s in self.market.shops]

    def connection_info(self) -> dict[str, Any]:
        """The one-line description `simulate` prints (secrets included: it is for the local client)."""
        return {
            "api_url": self.api_url,
            "tmc_url": self.tmc_url,
            "app_key": self.app_key,
            "app_secret": self.app_secret,
            "shops": [s.to_json() for s in self.shops],
            "truth_url": self.truth_url,
        }

    # ----- knobs and truth ---------------------------------------------------------------------------

    @property
    def faults(self) -> FaultKnobs:
        return self.gateway.faults

    @property
    def stats(self) -> CallStats:
        return self.gateway.stats

    def add_change_listener(self, fn: ChangeListener) -> None:
        self.market.add_change_listener(fn)

    def truth(
        self, shop: str | None = None, digests: bool = True, tids: Iterable[int] | None = None
    ) -> TruthSnapshot:
        return self.market.truth(shop=shop, digests=digests, tids=tids)

    async def truth_async(
        self, shop: str | None = None, digests: bool = True, tids: Iterable[int] | None = None
    ) -> TruthSnapshot:
        """Like truth(), but digests are computed in a worker thread so a large snapshot (100k history
        trades take seconds the first time) does not stall the gateway and the push channel."""
        rows = self.market.truth_rows(shop, tids)
        if not digests or len(rows.rows) < 2000:
            return self.market.build_truth(rows, digests)
        return await asyncio.to_thread(self.market.build_truth, rows, digests)

    # ----- admin HTTP surface ------------------------------------------------------------------------

    def _add_admin_routes(self, app: web.Application) -> None:
        app.router.add_get(ADMIN_PREFIX + "/truth", self._get_truth)
        app.router.add_get(ADMIN_PREFIX + "/stats", self._get_stats)
        app.router.add_get(ADMIN_PREFIX + "/faults", self._get_faults)
        app.router.add_post(ADMIN_PREFIX + "/faults", self._post_faults)
        app.router.add_post(ADMIN_PREFIX + "/market", self._post_market)
        app.router.add_get(ADMIN_PREFIX + "/tmc", self._get_tmc)
        app.router.add_post(ADMIN_PREFIX + "/tmc", self._post_tmc)

    async def _get_truth(self, request: web.Request) -> web.Response:
        query = request.query
        try:
            tids = [int(t) for t in query["tids"].split(",") if t] if query.get("tids") else None
        except ValueError:
            return _json({"error": "tids must be comma-separated integers"}, status=400)
        snapshot = await self.truth_async(
            shop=query.get("shop") or None, digests=query.get("digest", "1") not in ("0", "false"), tids=tids
        )
        body = snapshot.to_json()
        wanted = [f for f in query.get("fields", "").split(",") if f]
        if wanted:
            # The current values of these fields, for checks beyond status and modified.
            for tid in snapshot.trades:
                raw = self.market.trade(tid) or {}
                body["trades"][str(tid)]["fields"] = {f: raw[f] for f in wanted if f in raw}
        if query.get("changes", "0") not in ("0", "false"):
            body["changes"] = [_change_json(c, with_content=False) for c in self.market.changes]
        return _json(body)

    async def _get_stats(self, request: web.Request) -> web.Response:
        try:
            recent = int(request.query.get("recent", "50"))
        except ValueError:
            return _json({"error": "recent must be an integer"}, status=400)
        return _json(self.stats.summary(recent))

    async def _get_faults(self, _request: web.Request) -> web.Response:
        return _json(self.faults.to_json())

    async def _post_faults(self, request: web.Request) -> web.Response:
        try:
            patch = await request.json()
            if not isinstance(patch, dict):
                raise ValueError("send a JSON object of knob names and values")
            self.faults.update(patch)
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            return _json({"error": str(exc)}, status=400)
        if "rate_limit_per_second" in patch or "ban_seconds" in patch:
            self.gateway.injector.clear_bans()
        return _json(self.faults.to_json())

    async def _post_market(self, request: web.Request) -> web.Response:
        try:
            command = await request.json()
            if not isinstance(command, dict):
                raise ValueError("send a JSON object")
            action = command.get("action")
            changes: list[MarketChange] = []
            if "rate" in command:
                self.market.set_rate(float(command["rate"]))
            if action == "pause":
                self.market.pause()
            elif action == "resume":
                self.market.resume()
                if not self.market.running and self.market.rate > 0:
                    self.market.start()
            elif action == "step":
                count = int(command.get("n", 1))
                if not 0 <= count <= 100_000:
                    raise ValueError("n must be between 0 and 100000")
                changes = self.market.step(count)
            elif action == "buyer_memo":
                # The buyer types a memo (by default one holding a NUL and a lone surrogate).
                text = command.get("text", ODD_BUYER_TEXT)
                if not isinstance(text, str):
                    raise ValueError("text must be a string")
                changes = [self.market.edit_buyer_memo(int(command["tid"]), text)]
            elif action is not None:
                raise ValueError("action must be pause, resume, step or buyer_memo")
        except (ValueError, TypeError, KeyError) as exc:
            return _json({"error": str(exc)}, status=400)
        return _json(
            {
                "paused": self.market.paused,
                "running": self.market.running,
                "rate": self.market.rate,
                "change_count": self.market.change_count,
                "changes": [_change_json(c, with_content=True) for c in changes],
            }
        )

    async def _get_tmc(self, _request: web.Request) -> web.Response:
        return _json(self.tmc_summary())

    def tmc_summary(self) -> dict[str, Any]:
        """Push-side counters and the messages the server withheld (only reconciliation recovers them)."""
        return {
            **self.tmc.stats.counters(),
            "pending": self.tmc.pending(self.app_key, self.config.tmc_group),
            # `seq`: the market change a withheld message announced (None: not a market change).
            "withheld": [self._withheld_json(m) for m in self.tmc.withheld],
            "faults": self.tmc.faults.to_json(),
        }

    def _withheld_json(self, message: LostMessage) -> dict[str, Any]:
        return {
            "id": message.id,
            "tid": message.tid,
            "topic": message.topic,
            "reason": message.reason,
            "seq": self._withheld_seq.get(message.id),
        }

    async def _post_tmc(self, request: web.Request) -> web.Response:
        """Patch the TMC fault knobs; `{"drop_now": true}` aborts every live connection at once,
        `{"close_now": true}` closes them with close_code and close_reason, and `{"refuse_for": S}`
        refuses connects for S seconds (an outage)."""
        try:
            patch = await request.json()
            if not isinstance(patch, dict):
                raise ValueError("send a JSON object of knob names and values")
            self.tmc.faults.update(patch)
        except (ValueError, TypeError) as exc:
            return _json({"error": str(exc)}, status=400)
        if patch.get("drop_now"):
            self.tmc.drop_connections()
        if patch.get("close_now"):
            await self.tmc.close_connections()
        return _json(self.tmc_summary())


def _change_json(change: MarketChange, with_content: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "seq": change.seq,
        "tid": change.tid,
        "seller_nick": change.seller_nick,
        "topic": change.topic,
        "modified": format_top_time(change.modified),
        "status": change.status,
    }
    if with_content:
        out["content"] = change.content
    return out


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        # Truth fields can hold lone surrogates a buyer typed: JSON text spells them as escapes.
        text=escape_surrogates(json.dumps(body, ensure_ascii=False)),
        status=status,
        content_type="application/json",
        charset="utf-8",
    )
