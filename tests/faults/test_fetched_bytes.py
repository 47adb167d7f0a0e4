"""PostgreSQL blackholed under a steady stream (`PgProxy.stall()`): commits stop, fetches would go on.

Wanted (docs/design.md#capacity-before-work): the trades fetched and not yet committed stay within
SYNC_MAX_FETCHED_BYTES (fetching pauses, the tids wait in the dispatcher), exceeded only by what a trade
larger than any seen before its fetch began adds; once the database answers again the daemon catches up
and the database ends equal to the truth.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import asyncpg

from listener.capacity import FetchBudget
from listener.dispatcher import Dispatcher
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
STALL_SECONDS = 8.0
# Tens of the stand-in's trades (up to ~25 KB each here): without the pause, the stall holds ~160.
MAX_FETCHED_BYTES = 128 * 1024
WORKERS = 2


@dataclass
class Peak:
    bytes: int = 0  # the most fetched bytes held at once
    largest_before: int = 0  # the largest trade seen when sampling began
    largest_after: int = 0
    queued_after: int = 0  # tids waiting for a worker when the stall ended


async def sample(budget: FetchBudget, dispatcher: Dispatcher, until: asyncio.Event, peak: Peak) -> None:
    """The most bytes held, looked at every 20 ms until `until` is set."""
    peak.largest_before = budget.largest
    while not until.is_set():
        peak.bytes = max(peak.bytes, budget.bytes)
        await asyncio.sleep(0.02)  # the sampling period
    peak.bytes = max(peak.bytes, budget.bytes)
    peak.largest_after = budget.largest
    peak.queued_after = dispatcher.queued_count


async def test_a_blackholed_database_pauses_fetching_at_the_byte_budget() -> None:
    witness = Witness()
    peak = Peak()
    async with fault_bench(seed=66) as (standin, dsn, proxy):
        async with watched_daemon(
            witness,
            standin,
            proxy.dsn_for(database_of(dsn)),
            sync_max_fetched_bytes=MAX_FETCHED_BYTES,
            sync_workers=WORKERS,
            **WANTED_SETTINGS,
        ) as daemon:
            stream = daemon.daemon.service.pipeline
            async with market_running(daemon, standin.market, RATE):
                stall_from = time.monotonic()
                proxy.stall()
                stop_sampling = asyncio.Event()
                budget = stream.batcher.budget
                sampler = asyncio.create_task(sample(budget, stream.dispatcher, stop_sampling, peak))
                await market_runs_for(standin.market, STALL_SECONDS)
                stop_sampling.set()
                await sampler
                stall_until = time.monotonic()
                proxy.resume()
            assert await daemon.caught_up(standin, 60)
        print(
            f"blackhole {stall_until - stall_from:.1f} s at {RATE:g} changes/s: at most {peak.bytes} fetched"
            f" bytes held (SYNC_MAX_FETCHED_BYTES {MAX_FETCHED_BYTES}, largest trade {peak.largest_after}),"
            f" {peak.queued_after} tids waiting for a worker"
        )
        # Each worker's fetch reserved the largest trade seen when it began; one larger than that adds
        # its excess once per worker at most.
        allowance = WORKERS * (peak.largest_after - peak.largest_before)
        assert peak.bytes <= MAX_FETCHED_BYTES + allowance
        # The budget did fill (no worker could reserve the largest trade more) and tids waited for it.
        assert peak.bytes >= MAX_FETCHED_BYTES - (WORKERS + 1) * peak.largest_after
        assert peak.queued_after > 0
        assert witness.early == []
        async with asyncpg.create_pool(dsn, min_size=1, max_size=2) as pool:
            await assert_in_sync(pool, standin, shops=2)
