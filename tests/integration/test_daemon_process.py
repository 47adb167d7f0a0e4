"""The daemon as an operator runs it (`python -m listener`, settings from the environment), killed
without warning in the middle of a stream and started again: nothing is lost, because whatever it had
not confirmed is redelivered by TMC and fetched again. The stand-in runs in this process."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from simulator.standin import StandIn, StandInConfig
from simulator.tmc_server import TmcServerConfig
from tests.integration.harness import (
    DaemonProcess,
    assert_in_sync,
    daemon_env,
    permit_every_shop,
    wait_for,
    wait_for_async,
)


@pytest.fixture(scope="module")
async def pool(fresh_database: str) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(fresh_database, min_size=1, max_size=2) as pool:
        yield pool


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    stand_in = StandIn(
        StandInConfig(
            seed=404,
            shops=3,
            market_rate=0,
            history_trades=300,
            # Short, so a message the killed daemon held but never answered comes back quickly even if
            # the server has not noticed the dead connection yet.
            tmc=TmcServerConfig(confirm_timeout=2.0, failed_redelivery_delay=1.0, seed=404),
        )
    )
    async with stand_in:
        await permit_every_shop(stand_in)  # the backlog below is queued before the daemon starts
        yield stand_in


async def test_sigkill_mid_stream_then_restart_loses_nothing(
    standin: StandIn, fresh_database: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    standin.faults.latency_ms = 40  # fetches are in flight at any instant, so the kill interrupts some
    market, tmc = standin.market, standin.tmc
    env = daemon_env(
        standin,
        fresh_database,
        log_level="INFO",
        log_format="json",
        sync_drain_seconds=5,
        # The stream is under test: no 90-day initial load of the stand-in's history first.
        sync_initial_load_days=0,
    )
    first = DaemonProcess(env, tmp_path / "first.log")
    second = DaemonProcess(env, tmp_path / "second.log")
    try:
        market.step(100)
        await first.start()
        market.start(150)
        await wait_for(lambda: tmc.stats.confirmed >= 200, 30, "the first daemon to confirm 200 messages")
        await wait_for(
            lambda: any(c.in_flight > 0 for c in tmc.connections()), 5, "messages in flight on the server"
        )
        first.send(signal.SIGKILL)
        assert await first.wait(10) == -signal.SIGKILL
        confirmed_by_first = tmc.stats.confirmed
        published_at_kill = tmc.stats.published

        # The market goes on while no daemon runs; the server keeps those messages too.
        await wait_for(lambda: tmc.stats.published >= published_at_kill + 100, 10, "changes while down")
        await second.start()
        await wait_for(lambda: tmc.stats.confirmed >= confirmed_by_first + 200, 30, "the second daemon")
        market.pause()

        async def caught_up() -> bool:
            if tmc.pending(standin.app_key) or tmc.stats.confirmed != tmc.stats.published:
                return False
            last = await pool.fetchval("SELECT count(*) FROM trade_changes")
            return int(last) > 0

        await wait_for_async(caught_up, 30, "every message confirmed")
        await assert_in_sync(pool, standin)
        # The kill really interrupted work: messages delivered to the first daemon came back.
        assert tmc.stats.redelivered > 0

        second.send(signal.SIGTERM)
        assert await second.wait(20) == 0, second.log_tail()
    except BaseException:
        print("first daemon:\n" + first.log_tail())
        print("second daemon:\n" + second.log_tail())
        raise
    finally:
        market.pause()
        await first.stop()
        await second.stop()
