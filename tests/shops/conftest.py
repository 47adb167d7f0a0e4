"""What the shop tests share: a migrated database per test and a store over it, and the whole daemon
run against the stand-in with a shop registry seeded from its shops."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from pydantic import SecretStr

from daemon.app import open_registry
from simulator.compare import compare_with_market
from simulator.standin import ShopInfo, StandIn, StandInConfig
from store.pg import PgStore
from store.pg_shops import PgShops
from store.secret_box import SecretBox, generate_key
from store.shop_book import ShopBook
from tests.reconciler.conftest import (
    Running as RunningDaemon,
)
from tests.reconciler.conftest import (
    daemon_settings,
    daemon_standin,
    daemon_under_test,
    dsn,
    pg,
    serving,
    small_config,
    top_client,
    wait_for_async,
)

__all__ = ["dsn", "pg"]


def shops_standin(seed: int, *, shops: int, history_trades: int, **changes: Any) -> StandInConfig:
    """A stand-in for the whole daemon whose shops have two days of history."""
    return daemon_standin(seed, shops=shops, history_trades=history_trades, history_days=2, **changes)


@dataclasses.dataclass
class Running(RunningDaemon):
    """A daemon under test and the shop registry it serves."""

    registry: PgShops

    @property
    def book(self) -> ShopBook:
        shops = self.daemon.service.shops
        assert isinstance(shops, ShopBook)
        return shops


@contextlib.asynccontextmanager
async def running_daemon(
    standin: StandIn, pg: PgStore, dsn: str, shops: list[ShopInfo], **overrides: Any
) -> AsyncIterator[Running]:
    """The daemon with a shop registry seeded with `shops`, running until the block ends."""
    key = SecretStr(generate_key())
    registry = PgShops(pg.pool, SecretBox(key))
    await registry.seed([(shop.nick, SecretStr(shop.session)) for shop in shops])
    settings = daemon_settings(
        standin, dsn, sync_secret_key=key.get_secret_value(), sync_shops_refresh_seconds=2, **overrides
    )
    client = top_client(standin)
    source = await open_registry(settings, pg)
    config = small_config(
        initial_load_days=3, sweep_every=timedelta(seconds=1), safety_lag=timedelta(seconds=0.5)
    )
    daemon = daemon_under_test(
        settings, pg, client, config, registry=registry, book=source.book, streaming=source.streaming
    )
    async with serving(Running(daemon, client, pg, registry)) as run:
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
