"""Stand-in fixtures: a frozen market (rate 0) on a real socket, a client session, and knob resets."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from simulator.faults import FaultKnobs
from simulator.standin import StandIn, StandInConfig
from tests.simulator.toputil import TopCaller


@pytest.fixture(scope="module")
async def standin() -> AsyncIterator[StandIn]:
    """One stand-in per module; the market moves only when a test steps it."""
    stand_in = StandIn(StandInConfig(seed=21, shops=3, market_rate=0, history_trades=3000, history_days=100))
    async with stand_in:
        yield stand_in


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def top(standin: StandIn, http: aiohttp.ClientSession) -> TopCaller:
    return TopCaller.of(http, standin, shop=0)


@pytest.fixture(autouse=True)
def _reset_knobs(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each test starts and ends with every fault knob off."""
    yield
    stand_in = request.node.funcargs.get("standin")
    if isinstance(stand_in, StandIn):
        stand_in.faults.update(FaultKnobs().to_json())
        stand_in.gateway.injector.clear_bans()
