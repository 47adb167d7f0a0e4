"""A one-shop stand-in on a manual clock the reconciler shares (within the gateway's timestamp
tolerance), and the stream played by hand: a delivered change is fetched and applied with source
"stream". Test modules import the fixtures (`clock`, `standin`, `client`) by name."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta

import pytest

from simulator.clock import ManualClock
from simulator.standin import StandIn, StandInConfig
from store.pg import PgStore
from taobao.client import TopClient
from tests.reconciler.conftest import top_client

# The sweep reads up to now - max(safety lag, overlap); the stream claims up to now - 1.5 s (settle).
OVERLAP = timedelta(seconds=3)


@pytest.fixture
async def clock() -> ManualClock:
    return ManualClock(datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2))


@pytest.fixture
async def standin(clock: ManualClock) -> AsyncIterator[StandIn]:
    config = StandInConfig(seed=23, shops=1, market_rate=0, history_trades=0)
    async with StandIn(config, clock=clock) as stand_in:
        yield stand_in


@pytest.fixture
async def client(standin: StandIn) -> AsyncIterator[TopClient]:
    async with top_client(standin) as top:
        yield top


async def deliver(standin: StandIn, pg: PgStore, client: TopClient, tids: Iterable[int]) -> None:
    """The stream brought these trades in as they are now (through fullinfo, as it does)."""
    session = standin.shops[0].session
    trades = [await client.trade_fullinfo(session, tid) for tid in set(tids)]
    await pg.apply_trades(trades, source="stream")


async def lose_a_change(standin: StandIn, pg: PgStore, client: TopClient, stored: set[int]) -> int:
    """Change the market until one change hits a stored trade, whose push is lost (the others are
    delivered); returns that trade."""
    for _ in range(200):
        change = standin.market.step(1)[0]
        if change.tid in stored:
            return change.tid
        await deliver(standin, pg, client, [change.tid])
    raise AssertionError("no change hit a stored trade")
