"""PostgreSQL blackholed for eight seconds under a steady stream, then back (`PgProxy.stall()`, every
connection and every new one, then `resume()`): what a network partition shorter than TCP's
retransmission timeout looks like to the daemon.

Wanted: no message confirmed before its commit (docs/design.md#confirm-after-commit); `/readyz`
answering "not ready" during the fault, within the probe's timeout; ready again within ten seconds of
the database coming back; and at the end the database equal to the stand-in's truth
(docs/design.md#bad-input-never-crashes: nothing that could be stored is dropped).

The scenario runs once for the module; each test checks one of those. `-s` prints what was measured.
The full size of the scenario (a minute at 100 changes a second) is too long for every run:

    FAULT_BLACKHOLE_SECONDS=60 FAULT_RATE=100 pytest tests/faults/test_database_blackhole.py -s
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest

from daemon.health import check_postgres, ping_pool
from simulator.standin import StandIn
from store.pg import PgStore
from tests.faults.conftest import database_of
from tests.faults.daemon import (
    PROBE_TIMEOUT,
    WANTED_SETTINGS,
    ReadinessLog,
    Witness,
    fault_bench,
    market_running,
    market_runs_for,
    settle,
    watched_daemon,
)
from tests.faults.pgproxy import PgProxy
from tests.integration.harness import assert_in_sync

RATE = float(os.environ.get("FAULT_RATE", "20"))  # market changes per second
STALL_SECONDS = float(os.environ.get("FAULT_BLACKHOLE_SECONDS", "8"))
CATCH_UP_SECONDS = max(30.0, STALL_SECONDS)
READY_AGAIN_SECONDS = 10.0
PING_BUDGET = 2.0  # READY_DB_TIMEOUT_SECONDS' default


@dataclass
class Blackhole:
    standin: StandIn
    dsn: str
    witness: Witness
    readiness: ReadinessLog
    stall_at: float
    resume_at: float
    write_hang: float  # how long the store write in progress at resume had been waiting
    held_at_resume: int  # messages received and not yet settled
    caught_up: bool

    def summary(self) -> str:
        ready = self.readiness.first_ready_after(self.resume_at)
        return (
            f"blackhole {self.resume_at - self.stall_at:.1f} s: store write hung {self.write_hang:.1f} s,"
            f" {self.held_at_resume} messages held at resume,"
            f" {self.witness.confirms_between(self.stall_at, self.resume_at)} confirms during the fault,"
            f" {len(self.witness.early)} before their commit;"
            f" /readyz: {self.readiness.timeline(self.stall_at, self.stall_at - 1, self.resume_at + 3)};"
            f" ready {'never' if ready is None else f'{ready.at - self.resume_at:.1f} s'} after resume;"
            f" caught up: {self.caught_up}"
        )


async def run_blackhole(standin: StandIn, dsn: str, proxy: PgProxy) -> Blackhole:
    witness = Witness()
    async with watched_daemon(witness, standin, proxy.dsn_for(database_of(dsn)), **WANTED_SETTINGS) as daemon:
        async with market_running(daemon, standin.market, RATE):
            stall_at = time.monotonic()
            proxy.stall()
            await market_runs_for(standin.market, STALL_SECONDS)
            resume_at = time.monotonic()
            write_hang = max(
                (resume_at - start for start, end in witness.applies.values() if end is None), default=0.0
            )
            held = daemon.daemon.service.pipeline.dispatcher.held_count
            proxy.resume()
            await settle(lambda: daemon.readiness.first_ready_after(resume_at) is not None, 30)
        caught_up = await daemon.caught_up(standin, CATCH_UP_SECONDS)
    return Blackhole(
        standin, dsn, witness, daemon.readiness, stall_at, resume_at, write_hang, held, caught_up
    )


@pytest.fixture(scope="module")
async def blackhole() -> AsyncIterator[Blackhole]:
    async with fault_bench(seed=61) as (standin, dsn, proxy):
        outcome = await run_blackhole(standin, dsn, proxy)
        print(outcome.summary())
        yield outcome


def test_the_fault_held_the_stream(blackhole: Blackhole) -> None:
    """The scenario did what it says: store writes were tried during the blackhole and none got
    through (each gives up after the database timeout and is tried again), so nothing was confirmed
    and messages piled up."""
    stall_at, resume_at = blackhole.stall_at, blackhole.resume_at
    assert any(stall_at < start < resume_at for start, _ in blackhole.witness.applies.values())
    assert blackhole.witness.confirms_between(stall_at + 1, resume_at) == 0
    assert blackhole.held_at_resume > 0


def test_nothing_is_confirmed_before_its_commit(blackhole: Blackhole) -> None:
    witness = blackhole.witness
    assert witness.confirms_between(0, blackhole.stall_at) > 0
    assert witness.confirms_between(blackhole.resume_at, time.monotonic()) > 0
    assert witness.early == []


def test_readiness_is_not_green_during_the_blackhole(blackhole: Blackhole) -> None:
    # A probe that gets no answer within its timeout counts as "not ready", as a load balancer's does;
    # that /readyz should answer at all is test_readyz_answers_within_its_budget_on_a_blackholed_pool.
    probes = blackhole.readiness.asked_between(blackhole.stall_at + PROBE_TIMEOUT, blackhole.resume_at)
    assert probes, "no probe fell inside the fault"
    assert not any(s.ready for s in probes)


def test_ready_again_within_ten_seconds_of_the_database(blackhole: Blackhole) -> None:
    ready = blackhole.readiness.first_ready_after(blackhole.resume_at)
    assert ready is not None
    assert ready.at - blackhole.resume_at <= READY_AGAIN_SECONDS


async def test_the_database_ends_equal_to_the_truth(blackhole: Blackhole) -> None:
    assert blackhole.caught_up
    async with asyncpg.create_pool(blackhole.dsn, min_size=1, max_size=2) as pool:
        await assert_in_sync(pool, blackhole.standin, shops=2)


async def test_readyz_answers_within_its_budget_on_a_blackholed_pool(
    proxy: PgProxy, migrated_database: str
) -> None:
    store = await PgStore.connect(proxy.dsn_for(database_of(migrated_database)))
    try:
        await store.last_position()  # the pool now holds an open, idle connection
        proxy.stall()
        check = asyncio.create_task(check_postgres(functools.partial(ping_pool, store.pool), PING_BUDGET))
        done, _ = await asyncio.wait({check}, timeout=PING_BUDGET + 1)
        proxy.resume()
        async with asyncio.timeout(10):
            result = await check
        assert done, f"the readiness ping took more than {PING_BUDGET + 1:g} s"
        assert not result.ok
    finally:
        proxy.resume()
        await store.close()
