"""The limits every connection of the service opens with (store/pg_connect.py): what the server was
asked for, as it reports it, and the client socket's keepalive, as the kernel reports it."""

from __future__ import annotations

import socket

import asyncpg
import pytest

from daemon.settings import load_settings
from store.pg import PgStore
from store.pg_connect import ConnectionLimits, connect_one, connection_socket
from store.upsert import AnyConnection
from tests.store.factory import make_trade

LIMITS = ConnectionLimits(
    command=7.0,
    acquire=3.0,
    idle_in_transaction=4.5,
    keepalive_idle=11.0,
    keepalive_interval=5.0,
    keepalive_count=2,
)


async def session_settings(conn: AnyConnection) -> dict[str, str]:
    rows = await conn.fetch(
        "SELECT name, setting FROM pg_settings WHERE name = ANY($1::text[])",
        ["statement_timeout", "idle_in_transaction_session_timeout", "TimeZone", "application_name"],
    )
    return {row["name"]: row["setting"] for row in rows}


def keepalive_of(conn: AnyConnection) -> tuple[int, int, int, int, int] | None:
    """The socket's keepalive options; None on a Unix socket (the embedded server's), which has none."""
    sock = connection_socket(conn)
    assert sock is not None
    if sock.family == socket.AF_UNIX:
        return None
    return (
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
    )


async def test_the_pool_asks_the_server_for_the_limits(migrated_database: str) -> None:
    store = await PgStore.connect(migrated_database, limits=LIMITS)
    async with store, store.pool.acquire() as conn:
        assert await session_settings(conn) == {
            "statement_timeout": "7000",
            "idle_in_transaction_session_timeout": "4500",
            "TimeZone": "UTC",
            "application_name": "order-sync",
        }
        assert keepalive_of(conn) in ((1, 11, 5, 2, 21_000), None)


async def test_a_single_connection_is_opened_alike(migrated_database: str) -> None:
    conn = await connect_one(migrated_database, LIMITS)
    try:
        assert (await session_settings(conn))["idle_in_transaction_session_timeout"] == "4500"
        keepalive = keepalive_of(conn)
        assert keepalive is None or keepalive[1:4] == (11, 5, 2)
    finally:
        await conn.close()


async def test_a_statement_longer_than_the_command_timeout_is_given_up(migrated_database: str) -> None:
    async with await PgStore.connect(migrated_database, limits=ConnectionLimits(command=0.5)) as store:
        with pytest.raises((TimeoutError, asyncpg.QueryCanceledError)):
            await store.pool.fetchval("SELECT pg_sleep(5)")
        assert await store.pool.fetchval("SELECT 1") == 1  # the pool goes on


def test_settings_map_onto_the_limits() -> None:
    settings = load_settings(
        env_file=None,
        database_url="postgresql://u@h/d",
        taobao_app_key="k",
        taobao_app_secret="s",
        taobao_shops=[{"nick": "a", "session": "x"}],
        database_timeout_seconds=7,
        database_acquire_timeout_seconds=3,
        database_idle_in_transaction_seconds=4.5,
        database_keepalive_idle_seconds=11,
        database_keepalive_interval_seconds=5,
        database_keepalive_count=2,
    )
    assert settings.connection_limits() == LIMITS


def test_the_defaults_give_up_within_a_minute() -> None:
    limits = ConnectionLimits()
    assert max(limits.command, limits.acquire, limits.idle_in_transaction, limits.dead_after) <= 60


async def test_a_stream_commit_hands_its_connection_on_without_a_reset_and_other_uses_are_reset(
    migrated_database: str,
) -> None:
    store = await PgStore.connect(migrated_database, min_size=1, max_size=1)
    try:
        queries: list[str] = []
        async with store.pool.acquire() as conn:
            # Registered on the pooled connection itself: the logger outlives this borrow.
            conn.add_query_logger(lambda record: queries.append(record.query))
            reset = conn.get_reset_query()
        queries.clear()
        await store.apply_trades([make_trade(9_100_001, 1)], source="stream")
        assert queries  # the commit's statement
        assert reset not in queries  # and no reset after it

        async with store.pool.acquire() as conn:
            await conn.execute("SET work_mem = '7MB'")
        assert queries[-1] == reset  # a borrow that was not marked is reset on release
        async with store.pool.acquire() as conn:
            assert await conn.fetchval("SHOW work_mem") != "7MB"
    finally:
        await store.close()
