"""The readiness checks on their own: the stream's grace rule, the database ping's bounds, and what a
channel must report to be checked."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import asyncpg

from daemon.health import check_channel, check_postgres, check_stream, ping_pool


def test_stream_connected_is_ready() -> None:
    assert check_stream(connected=True, connects=3, refusals=0, down_for=0, grace=10).ok


def test_stream_that_never_connected_is_not_ready_and_says_why() -> None:
    check = check_stream(connected=False, connects=0, refusals=2, down_for=4.2, grace=120)
    assert not check.ok
    assert check.detail == "not connected yet (4 s since start, 2 CONNECT(s) refused)"


def test_stream_reconnecting_within_grace_is_ready_beyond_it_not() -> None:
    within = check_stream(connected=False, connects=1, refusals=0, down_for=3.0, grace=5)
    beyond = check_stream(connected=False, connects=1, refusals=0, down_for=6.0, grace=5)
    assert within.ok
    assert within.detail == "reconnecting for 3.0 s (grace 5 s)"
    assert not beyond.ok
    assert beyond.detail == "disconnected for 6 s (grace 5 s)"


@dataclass
class Counts:
    connects: int = 0
    refusals: int = 0


@dataclass
class ReportingChannel:
    connected: bool
    down_since: float
    counters: Counts


@dataclass
class PlainChannel:
    connected: bool


def test_channel_checks_depend_on_what_the_channel_reports() -> None:
    long_ago = time.monotonic() - 600
    down = check_channel(ReportingChannel(False, long_ago, Counts(connects=1)), grace=120)
    assert down is not None
    assert not down.ok
    assert down.detail.startswith("disconnected for 6")
    plain = check_channel(PlainChannel(False), grace=120)
    assert plain is not None
    assert (plain.ok, plain.detail) == (False, "TMC channel is not connected")
    assert check_channel(object(), grace=120) is None


async def test_postgres_check_reports_failures_by_type_and_bounds_a_hang() -> None:
    async def refused() -> None:
        raise ConnectionRefusedError(111, "Connect call failed ('10.0.0.1', 5432)")

    never = asyncio.Event()

    async def hangs() -> None:
        await never.wait()

    failed = await check_postgres(refused, limit_seconds=1)
    assert (failed.ok, failed.detail) == (False, "unreachable (ConnectionRefusedError)")
    hung = await check_postgres(hangs, limit_seconds=0.05)
    assert (hung.ok, hung.detail) == (False, "no answer within 0.05 s")


async def test_ping_pool_against_a_real_database(fresh_database: str) -> None:
    async with asyncpg.create_pool(fresh_database, min_size=1, max_size=1) as pool:
        check = await check_postgres(lambda: ping_pool(pool), limit_seconds=5)
    assert check.ok
    assert check.detail.startswith("reachable (")
