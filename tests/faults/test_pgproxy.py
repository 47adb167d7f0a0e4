"""The fault proxy itself, with asyncpg over real sockets: what passes, what a stall holds, what a cut
breaks, and the same knobs driven from another process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.conftest import ADMIN_DSN
from tests.faults.conftest import database_of, upstream
from tests.faults.pgproxy import PgProxy, ProxyProcess
from tests.integration.harness import wait_for, wait_for_async

# What asyncpg raises on a connection the proxy reset: the first when the reset meets the query, the
# second when it arrived before the query was sent.
CONNECTION_GONE = (asyncpg.ConnectionDoesNotExistError, asyncpg.InterfaceError)


@pytest.fixture
async def admin() -> AsyncIterator[asyncpg.Connection]:
    """A direct connection, to see what the server sees."""
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def conn(proxy: PgProxy, fresh_database: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection through the proxy."""
    connection = await asyncpg.connect(proxy.dsn_for(database_of(fresh_database)))
    try:
        yield connection
    finally:
        proxy.resume()
        await connection.close(timeout=5)


async def still_pending(task: asyncio.Task[object], seconds: float) -> bool:
    """True when `task` has not finished `seconds` from now."""
    done, _ = await asyncio.wait({task}, timeout=seconds)
    return not done


async def backend_state(admin: asyncpg.Connection, client_port: int) -> str | None:
    """The state of the backend serving the proxy's upstream socket (None: no such backend)."""
    state: str | None = await admin.fetchval(
        "SELECT state FROM pg_stat_activity WHERE client_port = $1", client_port
    )
    return state


async def test_queries_pass_and_bytes_are_counted(proxy: PgProxy, conn: asyncpg.Connection) -> None:
    up, down = proxy.stats.bytes_up, proxy.stats.bytes_down
    assert await conn.fetchval("SELECT $1::int + 1", 41) == 42
    assert proxy.stats.bytes_up > up
    assert proxy.stats.bytes_down > down
    assert proxy.stats.connections == 1
    [link] = proxy.links
    assert (link.bytes_up, link.bytes_down) == (proxy.stats.bytes_up, proxy.stats.bytes_down)
    # PostgreSQL sees the proxy's upstream socket as its client.
    assert await conn.fetchval("SELECT client_port FROM pg_stat_activity WHERE pid = pg_backend_pid()") == (
        link.upstream_port
    )


async def test_stall_holds_a_query_until_resume(
    proxy: PgProxy, conn: asyncpg.Connection, admin: asyncpg.Connection
) -> None:
    [link] = proxy.links
    proxy.stall()
    up, down = proxy.stats.bytes_up, proxy.stats.bytes_down
    query = asyncio.create_task(conn.fetchval("SELECT 42"))
    assert await still_pending(query, 1.0)
    assert (proxy.stats.bytes_up, proxy.stats.bytes_down) == (up, down)
    # The query never reached the server, and the connection is still open there.
    assert await backend_state(admin, link.upstream_port) == "idle"

    proxy.resume()
    async with asyncio.timeout(5):
        assert await query == 42
    assert proxy.stats.bytes_up > up


async def test_stall_holds_new_connections_too(proxy: PgProxy, fresh_database: str) -> None:
    proxy.stall()
    connecting = asyncio.create_task(asyncpg.connect(proxy.dsn_for(database_of(fresh_database))))
    assert await still_pending(connecting, 1.0)
    assert proxy.stats.bytes_down == 0
    proxy.resume()
    async with asyncio.timeout(5):
        conn = await connecting
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()


async def test_one_link_stalls_while_the_others_flow(proxy: PgProxy, fresh_database: str) -> None:
    dsn = proxy.dsn_for(database_of(fresh_database))
    first, second = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        stalled, flowing = proxy.links
        stalled.stall()
        held = asyncio.create_task(first.fetchval("SELECT 1"))
        assert await second.fetchval("SELECT 2") == 2
        assert await still_pending(held, 0.5)
        assert (stalled.stalled, flowing.stalled) == (True, False)
        stalled.resume()
        async with asyncio.timeout(5):
            assert await held == 1
    finally:
        await first.close(timeout=5)
        await second.close(timeout=5)


async def test_cut_resets_the_client_and_ends_the_backend(
    proxy: PgProxy, conn: asyncpg.Connection, admin: asyncpg.Connection
) -> None:
    [link] = proxy.links
    assert await backend_state(admin, link.upstream_port) == "idle"
    assert proxy.cut() == 1
    with pytest.raises(asyncpg.ConnectionDoesNotExistError):
        await conn.fetchval("SELECT 1")
    assert proxy.stats.resets == 1

    async def backend_gone() -> bool:
        return await backend_state(admin, link.upstream_port) is None

    await wait_for_async(backend_gone, 5, "the server to end the backend behind the reset socket")
    await wait_for(lambda: not proxy.links, 5, "the proxy to forget the link")


async def test_cut_is_a_reset_not_an_orderly_close(proxy: PgProxy) -> None:
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    try:
        await wait_for(lambda: len(proxy.links) == 1, 5, "the link to the server")
        proxy.cut()
        with pytest.raises(ConnectionResetError):
            async with asyncio.timeout(5):
                await reader.read(1)
    finally:
        writer.close()


async def test_cut_of_a_stalled_link_loses_what_it_held(proxy: PgProxy, conn: asyncpg.Connection) -> None:
    proxy.stall()
    query = asyncio.create_task(conn.fetchval("SELECT 1"))
    assert await still_pending(query, 0.3)
    proxy.cut()
    with pytest.raises(asyncpg.ConnectionDoesNotExistError):
        async with asyncio.timeout(5):
            await query


async def test_refused_connections_fail_at_once_and_open_ones_go_on(
    proxy: PgProxy, conn: asyncpg.Connection, fresh_database: str
) -> None:
    dsn = proxy.dsn_for(database_of(fresh_database))
    proxy.refuse_new(True)
    with pytest.raises(ConnectionResetError):
        async with asyncio.timeout(5):
            await asyncpg.connect(dsn)
    assert proxy.stats.refused == 1
    assert await conn.fetchval("SELECT 3") == 3

    proxy.refuse_new(False)
    other = await asyncpg.connect(dsn)
    try:
        assert await other.fetchval("SELECT 4") == 4
    finally:
        await other.close()


async def test_delay_adds_latency_to_each_chunk(proxy: PgProxy, conn: asyncpg.Connection) -> None:
    proxy.delay(0.25)
    started = time.perf_counter()
    assert await conn.fetchval("SELECT 5") == 5
    # At least one chunk each way, each forwarded a quarter second late.
    assert time.perf_counter() - started >= 0.5
    proxy.delay(0)
    with pytest.raises(ValueError, match="negative"):
        proxy.delay(-1)


async def test_another_process_drives_the_proxy_over_its_stdin(fresh_database: str) -> None:
    async with ProxyProcess(*upstream()) as process:
        conn = await asyncpg.connect(process.dsn_for(database_of(fresh_database)))
        try:
            assert await conn.fetchval("SELECT 6") == 6
            stats = await process.command("stats")
            assert stats["connections"] == 1
            assert stats["bytes_down"] > 0

            assert (await process.command("stall"))["stalled"] is True
            query = asyncio.create_task(conn.fetchval("SELECT 7"))
            assert await still_pending(query, 1.0)
            await process.command("resume")
            async with asyncio.timeout(5):
                assert await query == 7

            # Only the connections open now: a new one goes through.
            [link] = (await process.command("stall open"))["links"]
            assert link["stalled"] is True
            query = asyncio.create_task(conn.fetchval("SELECT 8"))
            assert await still_pending(query, 0.5)
            other = await asyncpg.connect(process.dsn_for(database_of(fresh_database)))
            try:
                assert await other.fetchval("SELECT 9") == 9
            finally:
                await other.close()
            await process.command("resume")
            async with asyncio.timeout(5):
                assert await query == 8

            assert (await process.command("delay 0.1"))["delay"] == 0.1
            assert (await process.command("refuse on"))["refusing"] is True
            with pytest.raises(ValueError, match="unknown command"):
                await process.command("explode")

            assert (await process.command("cut"))["resets"] == 1
            with pytest.raises(CONNECTION_GONE):
                await conn.fetchval("SELECT 10")
        finally:
            await conn.close(timeout=5)
        assert await process.close() == 0
