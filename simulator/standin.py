"""The Taobao stand-in as one object: the order market, the TOP gateway, the TMC push server, and an
admin/truth surface on the gateway's aiohttp app (standin_admin). Every market change is published on
the TMC queue of the app's group (change_publisher), as Taobao pushes trade topics to a subscribed app.

    async with StandIn(StandInConfig(seed=7, history_trades=500)) as standin:
        standin.api_url, standin.app_key, standin.app_secret, standin.shops
        standin.faults.list_lag_seconds = 600
        standin.truth()
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web

from simulator.change_publisher import ChangePublisher
from simulator.clock import Clock
from simulator.faults import FaultKnobs
from simulator.gateway import ROUTER_PATH, CallStats, Gateway, GatewayConfig
from simulator.market import ChangeListener, Market, MarketConfig
from simulator.odd_values import ODD_BUYER_TEXT
from simulator.standin_admin import ADMIN_PREFIX, AdminRoutes
from simulator.tmc_faults import TmcFaults
from simulator.tmc_permits import TmcPermits
from simulator.tmc_server import TmcServer, TmcServerConfig
from simulator.topats import TopatsService, TopatsTimings
from simulator.truth import TruthSnapshot


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
    # TMC delivers messages only for sellers the app permitted (taobao.tmc.user.permit), as the
    # platform does. Off: every seller's messages are delivered (for a client that never permits,
    # e.g. a test of the TMC protocol alone).
    require_permits: bool = True
    # Every trade's buyer's message this many bytes long (0: off): fullinfo answers of that size.
    trade_text_bytes: int = 0

    def market_config(self) -> MarketConfig:
        return MarketConfig(
            seed=self.seed,
            shops=self.shops,
            history_trades=self.history_trades,
            history_days=self.history_days,
            rate=self.market_rate,
            version_retention_seconds=self.version_retention_seconds,
            change_log_limit=self.change_log_limit,
            trade_text_bytes=self.trade_text_bytes,
        )


class StandIn:
    def __init__(self, config: StandInConfig | None = None, clock: Clock | None = None) -> None:
        self.config = config or StandInConfig()
        cfg = self.config
        self.app_key = cfg.app_key
        self.app_secret = cfg.app_secret or f"{random.Random(cfg.seed ^ 0x5EC).getrandbits(128):032x}"
        self.market = Market(cfg.market_config(), clock=clock)
        self.topats = TopatsService(self.market, cfg.topats, seed=cfg.seed)
        self.permits = TmcPermits(required=cfg.require_permits)
        self.gateway = Gateway(
            self.market,
            GatewayConfig(
                app_key=self.app_key, app_secret=self.app_secret, call_log_limit=cfg.call_log_limit
            ),
            faults=cfg.faults,
            seed=cfg.seed,
            topats=self.topats,
            permits=self.permits,
        )
        self.tmc = TmcServer({self.app_key: self.app_secret}, cfg.tmc, cfg.tmc_faults, self.permits)
        self._pushes = ChangePublisher(self.market, self.tmc, self.app_key, cfg.tmc_group)
        self.market.typed_buyer_message = self._typed_buyer_message
        self.market.add_change_listener(self._pushes)
        # Routes may be added to `app` until start().
        self.app = web.Application()
        self.gateway.add_routes(self.app)
        AdminRoutes(self.market, self.gateway, self.tmc, self._pushes).add_to(self.app)
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
        """See Market.truth_async."""
        return await self.market.truth_async(shop=shop, digests=digests, tids=tids)

    def tmc_summary(self) -> dict[str, Any]:
        """Push-side counters and the messages the server withheld (only reconciliation recovers them)."""
        return self._pushes.summary()
