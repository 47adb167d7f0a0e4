"""A failover that drops packets instead of resetting them: every connection the daemon holds goes
silent for good (`Link.stall()` on each, and the server ends their sessions, as a dead primary takes
them with it), while new connections reach a working server at once. In production the old sockets
fail only when the kernel gives up retransmitting (about 15 minutes with Linux defaults); here they
fail when the test resets them, after the observation window.

Wanted: the stream commits again within 15 s on new connections (WANTED_SETTINGS' database timeout is
3 s), `/readyz` is never green while a store write has hung for more than 5 s, nothing is confirmed
before its commit (docs/design.md#confirm-after-commit), and the database ends equal to the truth.

The scenario runs once for the module; each test checks one of those. `-s` prints what was measured.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest

from simulator.standin import StandIn
from tests.faults.conftest import database_of
from tests.faults.daemon import (
    WANTED_SETTINGS,
    ReadinessLog,
    Witness,
    fault_bench,
    market_running,
    market_runs_for,
    terminate_backends,
    watched_daemon,
)
from tests.faults.pgproxy import PgProxy
from tests.integration.harness import assert_in_sync, wait_for

RATE = 20.0  # market changes per second
MARKET_SECONDS = 8.0  # how long the market goes on after the failover
OBSERVE_SECONDS = 20.0  # how long the old connections stay silent
RECOVERY_SECONDS = 15.0
STUCK_SECONDS = 5.0


@dataclass
class Failover:
    standin: StandIn
    dsn: str
    witness: Witness
    readiness: ReadinessLog
    failover_at: float
    reset_at: float  # when the old connections were reset (the kernel giving up)
    old_connections: int
    ended_sessions: int
    held_at_reset: int
    caught_up: bool

    @property
    def recovered_after(self) -> float | None:
        """Seconds from the failover to the first confirm of a message received after it."""
        first = self.witness.first_confirm_of_news(self.failover_at)
        return None if first is None else first - self.failover_at

    def green_while_stuck(self) -> list[float]:
        """When (seconds after the failover) /readyz said ready while a write had hung > STUCK_SECONDS."""
        return [
            round(s.at - self.failover_at, 1)
            for s in self.readiness.asked_between(self.failover_at, self.reset_at)
            if s.ready and self.witness.stuck_at(s.at, STUCK_SECONDS)
        ]

    def summary(self) -> str:
        recovered = self.recovered_after
        return (
            f"failover: {self.old_connections} old connections silent, {self.ended_sessions} sessions ended;"
            f" stream committing again after {'never' if recovered is None else f'{recovered:.1f} s'}"
            f" (observed {self.reset_at - self.failover_at:.1f} s);"
            f" longest store write {self.witness.longest_apply(self.reset_at):.1f} s;"
            f" {self.held_at_reset} messages held at reset;"
            f" {len(self.witness.early)} confirmed before their commit;"
            f" /readyz: {self.readiness.timeline(self.failover_at, self.failover_at - 1, self.reset_at)};"
            f" caught up after the reset: {self.caught_up}"
        )


async def run_failover(standin: StandIn, dsn: str, proxy: PgProxy) -> Failover:
    witness = Witness()
    async with watched_daemon(witness, standin, proxy.dsn_for(database_of(dsn)), **WANTED_SETTINGS) as daemon:
        async with market_running(daemon, standin.market, RATE):
            # Fail over in the middle of a write, as a primary that dies under load does.
            await wait_for(witness.writing, 10, "a store write in progress")
            failover_at = time.monotonic()
            old = proxy.links
            for link in old:
                link.stall()
            ended = await terminate_backends(dsn, [link.upstream_port for link in old])
            await market_runs_for(standin.market, MARKET_SECONDS)
        await daemon.caught_up(standin, failover_at + OBSERVE_SECONDS - time.monotonic())
        reset_at = time.monotonic()
        held = daemon.daemon.service.pipeline.dispatcher.held_count
        for link in old:
            link.cut()
        caught_up = await daemon.caught_up(standin, 30)
    return Failover(
        standin, dsn, witness, daemon.readiness, failover_at, reset_at, len(old), ended, held, caught_up
    )


@pytest.fixture(scope="module")
async def failover() -> AsyncIterator[Failover]:
    async with fault_bench(seed=62) as (standin, dsn, proxy):
        outcome = await run_failover(standin, dsn, proxy)
        print(outcome.summary())
        yield outcome


def test_the_failover_took_the_daemons_connections(failover: Failover) -> None:
    assert failover.old_connections > 0
    assert failover.ended_sessions == failover.old_connections


def test_the_stream_commits_again_within_15_s_of_a_failover(failover: Failover) -> None:
    recovered = failover.recovered_after
    assert recovered is not None, "nothing received after the failover was ever confirmed"
    reset_after = failover.reset_at - failover.failover_at
    assert recovered <= RECOVERY_SECONDS, (
        f"committing again {recovered:.1f} s after the failover"
        f" (the old connections were reset at {reset_after:.1f} s)"
    )


def test_readiness_is_not_green_while_a_store_write_hangs(failover: Failover) -> None:
    assert failover.green_while_stuck() == []


def test_nothing_is_confirmed_before_its_commit(failover: Failover) -> None:
    assert failover.witness.confirms_between(0, failover.failover_at) > 0
    assert failover.witness.confirms_between(failover.failover_at, time.monotonic()) > 0
    assert failover.witness.early == []


async def test_the_database_ends_equal_to_the_truth(failover: Failover) -> None:
    assert failover.caught_up
    async with asyncpg.create_pool(failover.dsn, min_size=1, max_size=2) as pool:
        await assert_in_sync(pool, failover.standin, shops=2)
