"""Several replicas on one database, against a stand-in that delivers TMC messages only for permitted
sellers: each shop is permitted by the replica that leads it, once (not once per replica, nor again as
the lead moves to replicas started later), and when its leader stops, the replica that takes the shop
over knows it permitted (its registry record) and says it is ready."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from pydantic import SecretStr

from daemon.app import Daemon, assemble, open_registry
from daemon.settings import load_settings
from simulator.standin import StandIn, StandInConfig
from simulator.tmc_server import TmcServerConfig
from store.pg import PgStore
from store.pg_shops import PgShops
from store.secret_box import SecretBox, generate_key
from taobao.client import TopClient
from taobao.shop_calls import TMC_USER_PERMIT
from tests.reconciler.conftest import DAEMON_BACKOFF as BACKOFF
from tests.reconciler.conftest import DAEMON_TIMING as TIMING
from tests.reconciler.conftest import small_config, top_client, wait_for, wait_for_async

REPLICAS = ("r1", "r2", "r3")


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    config = StandInConfig(
        seed=73,
        shops=6,
        market_rate=0,
        history_trades=30,
        history_days=1,
        require_permits=True,
        tmc=TmcServerConfig(confirm_timeout=5.0, failed_redelivery_delay=1.0, seed=73),
    )
    async with StandIn(config) as stand_in:
        yield stand_in


@dataclass
class Replica:
    name: str
    daemon: Daemon
    task: asyncio.Task[None]
    store: PgStore
    client: TopClient

    def leads(self, shop: str) -> bool:
        assert self.daemon.replicas is not None
        return self.daemon.replicas.leads(shop)

    async def stop(self) -> None:
        if not self.task.done():
            self.daemon.service.request_stop("test over")
            async with asyncio.timeout(15):
                await self.task
        await self.client.close()
        await self.store.close()


@contextlib.asynccontextmanager
async def replica(standin: StandIn, dsn: str, key: str, name: str) -> AsyncIterator[Replica]:
    settings = load_settings(
        env_file=None,
        database_url=dsn,
        sync_secret_key=key,
        sync_replica_id=name,
        taobao_app_key=standin.app_key,
        taobao_app_secret=standin.app_secret,
        taobao_api_url=standin.api_url,
        taobao_tmc_url=standin.tmc_url,
        sync_api_rate=2000,
        sync_shops_refresh_seconds=2,
        sync_heartbeat_seconds=0.3,
        http_port=0,
        sync_drain_seconds=2,
    )
    store = await PgStore.connect(dsn, max_size=4)
    client = top_client(standin)
    registry = PgShops(store.pool, SecretBox(SecretStr(key)))
    source = await open_registry(settings, store)
    daemon = assemble(
        settings,
        store,
        client,
        session_timing=TIMING,
        session_backoff=BACKOFF,
        reconciler_config=small_config(replica=name, stream_settle=timedelta(seconds=1.5)),
        registry=registry,
        book=source.book,
        streaming=source.streaming,
    )
    running = Replica(
        name, daemon, asyncio.create_task(daemon.service.run(), name=f"replica-{name}"), store, client
    )
    try:
        yield running
    finally:
        await running.stop()


async def test_each_shop_is_permitted_once_by_its_leader_and_again_by_the_replica_taking_it_over(
    standin: StandIn, pg: PgStore, dsn: str
) -> None:
    key = generate_key()
    registry = PgShops(pg.pool, SecretBox(SecretStr(key)))
    await registry.seed([(shop.nick, SecretStr(shop.session)) for shop in standin.shops])
    nicks = {shop.nick for shop in standin.shops}

    def permits() -> Counter[str]:
        return Counter(str(c.shop) for c in standin.stats.calls_of(TMC_USER_PERMIT) if c.code == 0)

    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(replica(standin, dsn, key, REPLICAS[0]))
        await wait_for(lambda: standin.permits.users == nicks, 30, "every shop permitted by the first")

        async def recorded() -> bool:
            return all(r.permitted_at is not None for r in await registry.records())

        await wait_for_async(recorded, 10, "every permit recorded")
        replicas = [first] + [
            await stack.enter_async_context(replica(standin, dsn, key, name)) for name in REPLICAS[1:]
        ]

        def spread() -> bool:
            once = all(sum(r.leads(nick) for r in replicas) == 1 for nick in nicks)
            return once and all(any(r.leads(nick) for nick in nicks) for r in replicas)

        await wait_for(spread, 30, "the shops spread over the replicas")
        await wait_for(
            lambda: all(r.daemon.shops is not None and r.daemon.shops.reads >= 2 for r in replicas),
            30,
            "two registry reads on every replica",
        )

        def ready(r: Replica) -> bool:
            keeper = r.daemon.permits
            return keeper is not None and all(nick in keeper.permitted for nick in nicks if r.leads(nick))

        await wait_for(lambda: all(ready(r) for r in replicas), 30, "each replica's led shops permitted")
        assert permits() == Counter(dict.fromkeys(nicks, 1)), permits()
        for r in replicas:
            _, details = await r.daemon.service.readiness()
            assert details["checks"]["permits"]["ok"], details

        # A leader stops; the replicas taking its shops over have them permitted, with no new call.
        leader = replicas[1]
        taken = {nick for nick in nicks if leader.leads(nick)}
        assert taken
        await leader.stop()
        others = [r for r in replicas if r is not leader]

        def taken_over() -> bool:
            return all(any(r.leads(nick) for r in others) for nick in taken)

        await wait_for(taken_over, 30, "the stopped leader's shops taken over")
        await wait_for(
            lambda: all(ready(r) for r in others), 30, "the taken shops permitted by their new leader"
        )
        assert permits() == Counter(dict.fromkeys(nicks, 1)), permits()
        for r in others:
            _, details = await r.daemon.service.readiness()
            assert details["checks"]["permits"]["ok"], details
