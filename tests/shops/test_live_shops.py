"""Shops added to and removed from a running daemon, over real sockets and PostgreSQL: an added shop's
history is loaded and its pushes streamed until the database equals the stand-in's truth for it; a
removed shop costs no more TOP calls, and its trades stay."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr

from common.backoff import BackoffPolicy
from daemon.app import Daemon, assemble, open_registry
from daemon.settings import load_settings
from listener.session import SessionTiming
from simulator.compare import compare_with_market
from simulator.standin import ShopInfo, StandIn, StandInConfig
from simulator.tmc_server import TmcServerConfig
from store.pg import PgStore
from store.pg_shops import PgShops
from store.secret_box import SecretBox, generate_key
from store.shop_book import ShopBook
from taobao.client import TopClient
from tests.reconciler.conftest import small_config, top_client, wait_for, wait_for_async

INCREMENT = "taobao.trades.sold.increment.get"
TIMING = SessionTiming(pull_interval=0.1, ping_interval=5.0, ping_timeout=5.0, close_timeout=0.5)
BACKOFF = BackoffPolicy(base=0.2, cap=0.5, reset_after=5.0, refusal_floor=0.2)


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    config = StandInConfig(
        seed=16,
        shops=3,
        market_rate=0,
        history_trades=90,
        history_days=2,
        tmc=TmcServerConfig(confirm_timeout=5.0, failed_redelivery_delay=1.0, seed=16),
    )
    async with StandIn(config) as stand_in:
        yield stand_in


@dataclass
class Running:
    daemon: Daemon
    task: asyncio.Task[None]
    client: TopClient
    registry: PgShops

    @property
    def book(self) -> ShopBook:
        shops = self.daemon.service.shops
        assert isinstance(shops, ShopBook)
        return shops

    async def stop(self) -> None:
        self.daemon.service.request_stop("test over")
        async with asyncio.timeout(15):
            await self.task
        await self.client.close()


@contextlib.asynccontextmanager
async def running_daemon(
    standin: StandIn, pg: PgStore, dsn: str, shops: list[ShopInfo], **overrides: Any
) -> AsyncIterator[Running]:
    """The daemon with a shop registry seeded with `shops`, running until the block ends."""
    key = SecretStr(generate_key())
    registry = PgShops(pg.pool, SecretBox(key))
    await registry.seed([(shop.nick, SecretStr(shop.session)) for shop in shops])
    settings = load_settings(
        env_file=None,
        database_url=dsn,
        sync_secret_key=key.get_secret_value(),
        taobao_app_key=standin.app_key,
        taobao_app_secret=standin.app_secret,
        taobao_api_url=standin.api_url,
        taobao_tmc_url=standin.tmc_url,
        sync_api_rate=2000,
        sync_shops_refresh_seconds=2,
        http_port=0,
        sync_drain_seconds=2,
        **overrides,
    )
    client = top_client(standin)
    source = await open_registry(settings, pg)
    config = small_config(
        initial_load_days=3, sweep_every=timedelta(seconds=1), safety_lag=timedelta(seconds=0.5)
    )
    daemon = assemble(
        settings,
        pg,
        client,
        session_timing=TIMING,
        session_backoff=BACKOFF,
        reconciler_config=config,
        registry=registry,
        book=source.book,
        streaming=source.streaming,
    )
    task = asyncio.create_task(daemon.service.run(), name="daemon-under-test")
    run = Running(daemon, task, client, registry)
    try:
        reconciler = daemon.reconciler
        assert reconciler is not None
        await wait_for(lambda: reconciler.watch.connected, 10, "the first connect")
        yield run
    finally:
        await run.stop()


@pytest.fixture
async def running(standin: StandIn, pg: PgStore, dsn: str) -> AsyncIterator[Running]:
    async with running_daemon(standin, pg, dsn, standin.shops[:2]) as run:
        yield run


async def loaded(running: Running, nick: str) -> None:
    reconciler = running.daemon.reconciler
    assert reconciler is not None

    async def done() -> bool:
        state = await reconciler.loader.state(nick)
        return state is not None and state.done

    await wait_for_async(done, 30, f"{nick}'s initial load")


async def in_sync(running: Running, standin: StandIn, pg: PgStore, nick: str) -> None:
    tids = list(standin.truth(shop=nick, digests=False).trades)
    assert tids

    async def equal() -> bool:
        return (await compare_with_market(pg.pool, standin.market, tids)).ok

    await wait_for_async(equal, 30, f"{nick}'s trades to equal the truth")


async def test_a_shop_added_while_running_is_loaded_streamed_and_ends_equal_to_the_truth(
    standin: StandIn, pg: PgStore, running: Running
) -> None:
    first, second, third = standin.shops
    await loaded(running, first.nick)
    await running.registry.add(third.nick, SecretStr(third.session))
    await wait_for(lambda: third.nick in running.book, 5, "the daemon to serve the added shop")
    await loaded(running, third.nick)

    made = standin.market.step(40)
    assert {c.seller_nick for c in made} == {first.nick, second.nick, third.nick}
    for shop in (first, second, third):
        await in_sync(running, standin, pg, shop.nick)
    fetched = {c.shop for c in standin.stats.calls_of("taobao.trade.fullinfo.get")}
    assert third.nick in fetched  # its pushes were fetched, not only its lists read


async def test_a_removed_shop_stops_costing_calls_and_keeps_its_trades(
    standin: StandIn, pg: PgStore, running: Running
) -> None:
    first, second, _ = standin.shops
    await loaded(running, first.nick)
    await loaded(running, second.nick)
    kept = await pg.pool.fetchval("SELECT count(*) FROM trades WHERE seller_nick = $1", first.nick)
    assert kept > 0
    await running.registry.remove(first.nick)
    await wait_for(lambda: first.nick not in running.book, 5, "the daemon to stop serving the shop")
    # A round that began before the removal may still read the shop; one that begins a sweep period
    # later (sweeps are due every second here) does not.
    quiet_from = datetime.now(UTC) + timedelta(seconds=1.5)
    standin.market.step(30)
    await in_sync(running, standin, pg, second.nick)

    def swept_since() -> bool:
        return any(c.at >= quiet_from for c in standin.stats.calls_of(INCREMENT, second.nick))

    await wait_for(swept_since, 15, "a sweep of the other shop after the removal")
    late = [c for c in standin.stats.log if c.shop == first.nick and c.at >= quiet_from]
    assert late == []
    # Its rows stay (a round under way at the removal may still have added some).
    assert await pg.pool.fetchval("SELECT count(*) FROM trades WHERE seller_nick = $1", first.nick) >= kept


async def test_a_shop_added_while_running_has_its_series_at_zero_before_anything_happens_to_it(
    standin: StandIn, running: Running
) -> None:
    nick = standin.shops[2].nick  # not served yet; the market makes no changes, so nothing is lost
    at_zero = [
        f'order_sync_push_lost_total{{shop="{nick}"}} 0.0',
        f'order_sync_reconciler_windows_failed_total{{shop="{nick}"}} 0.0',
        f'order_sync_reconciler_trades_recovered_total{{cause="sweep",shop="{nick}"}} 0.0',
    ]
    # Gauges whose value moves as soon as the reconciler looks at the shop: present is what counts.
    present = [f'order_sync_gaps_open{{shop="{nick}"}} ', f'order_sync_unresolved_trades{{shop="{nick}"}} ']

    def missing() -> list[str]:
        text = running.daemon.service.metrics_text()
        return [line for line in at_zero + present if line not in text]

    assert missing() == at_zero + present
    await running.registry.add(nick, SecretStr(standin.shops[2].session))
    await wait_for(lambda: not missing(), 5, "the added shop's series")
    assert standin.tmc.stats.published == 0
