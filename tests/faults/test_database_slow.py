"""A slow database under a steady stream (`PgProxy.delay()`: every chunk each way arrives 0.2 s late),
so commits fall behind and the daemon's intake fills up.

Wanted (docs/design.md#capacity-before-work): the messages held never exceed SYNC_MAX_EVENTS, whatever
the database's pace; nothing is confirmed before its commit; once the database is quick again the
daemon catches up and the database ends equal to the truth.
"""

from __future__ import annotations

import asyncio
import os
import time

import asyncpg

from listener.dispatcher import Dispatcher
from listener.session import SessionTiming
from tests.faults.conftest import database_of
from tests.faults.daemon import (
    WANTED_SETTINGS,
    Witness,
    fault_bench,
    market_running,
    market_runs_for,
    watched_daemon,
)
from tests.integration.harness import assert_in_sync

RATE = 20.0  # market changes per second
SLOW_SECONDS = 10.0
CHUNK_DELAY = 0.2
MAX_EVENTS = 50


async def most_held(dispatcher: Dispatcher, until: asyncio.Event) -> int:
    """The largest number of messages the dispatcher held, looked at every 20 ms until `until` is set."""
    most = 0
    while not until.is_set():
        most = max(most, dispatcher.held_count)
        await asyncio.sleep(0.02)  # the sampling period
    return max(most, dispatcher.held_count)


async def test_a_slow_database_fills_the_intake_only_up_to_its_bound() -> None:
    witness = Witness()
    async with fault_bench(seed=64) as (standin, dsn, proxy):
        async with watched_daemon(
            witness,
            standin,
            proxy.dsn_for(database_of(dsn)),
            sync_max_events=MAX_EVENTS,
            sync_batch_size=2,  # so that commits, not fetches, are what falls behind
            **WANTED_SETTINGS,
        ) as daemon:
            async with market_running(daemon, standin.market, RATE):
                slow_from = time.monotonic()
                proxy.delay(CHUNK_DELAY)
                stop_sampling = asyncio.Event()
                dispatcher = daemon.daemon.service.pipeline.dispatcher
                sampler = asyncio.create_task(most_held(dispatcher, stop_sampling))
                await market_runs_for(standin.market, SLOW_SECONDS)
                stop_sampling.set()
                held = await sampler
                slow_until = time.monotonic()
                proxy.delay(0)
            assert await daemon.caught_up(standin, 30)
        print(
            f"slow database {slow_until - slow_from:.1f} s: at most {held} messages held"
            f" (SYNC_MAX_EVENTS {MAX_EVENTS}), {witness.confirms_between(slow_from, slow_until)} confirms,"
            f" longest store write {witness.longest_apply():.1f} s,"
            f" {standin.tmc.stats.connections} TMC connection(s);"
            f" /readyz: {daemon.readiness.timeline(slow_from, slow_from - 1, slow_until)}"
        )
        assert held == MAX_EVENTS  # the intake did fill up, and no further
        assert witness.confirms_between(slow_from, slow_until) > 0
        assert witness.early == []
        async with asyncpg.create_pool(dsn, min_size=1, max_size=2) as pool:
            await assert_in_sync(pool, standin, shops=2)


# The session's keepalive scaled down: a ping every second, its pong due within two. The read loop of
# a session whose intake is full must still read the pongs, or the connection ends after 3 s here
# (45 s with the defaults). Full size, two minutes behind a slow database:
#     FAULT_SLOW_SECONDS=120 pytest tests/faults/test_database_slow.py -k disconnect -s
QUICK_PINGS = SessionTiming(ping_interval=1.0, ping_timeout=2.0)
BACKLOG_SECONDS = float(os.environ.get("FAULT_SLOW_SECONDS", "15"))
BACKLOG_RATE = 100.0  # market changes per second


async def test_a_backlog_behind_a_slow_database_does_not_disconnect_the_stream() -> None:
    witness = Witness()
    async with fault_bench(seed=65) as (standin, dsn, proxy):
        async with watched_daemon(
            witness,
            standin,
            proxy.dsn_for(database_of(dsn)),
            session_timing=QUICK_PINGS,
            sync_max_events=MAX_EVENTS,
            sync_batch_size=5,
            **WANTED_SETTINGS,
        ) as daemon:
            async with market_running(daemon, standin.market, BACKLOG_RATE):
                proxy.delay(CHUNK_DELAY)
                stop_sampling = asyncio.Event()
                dispatcher = daemon.daemon.service.pipeline.dispatcher
                sampler = asyncio.create_task(most_held(dispatcher, stop_sampling))
                await market_runs_for(standin.market, BACKLOG_SECONDS)
                stop_sampling.set()
                held = await sampler
                connections = standin.tmc.stats.connections
                proxy.delay(0)
            assert await daemon.caught_up(standin, 60)
        print(
            f"{BACKLOG_SECONDS:g} s behind a slow database: at most {held} messages held"
            f" (SYNC_MAX_EVENTS {MAX_EVENTS}), {connections} TMC connection(s)"
        )
        assert held == MAX_EVENTS  # the intake was full: the session's handler waited
        assert connections == 1
        async with asyncpg.create_pool(dsn, min_size=1, max_size=2) as pool:
            await assert_in_sync(pool, standin, shops=2)
