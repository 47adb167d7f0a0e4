"""A writer frozen inside its commit: a replica that took the change feed's counter row (the last
statement of every store transaction, store/upsert.py) and then went silent before COMMIT reached the
server (`PgProxy.stall()` on its connection). PostgreSQL sees an idle session inside a transaction
holding the row lock, and every other writer of the feed queues behind it
(docs/design.md#commit-ordered-feed).

Wanted: no other writer waits longer than the configured idle-in-transaction timeout (plus a margin)
for a frozen one, and the feed stays dense. The frozen writer is opened the way the daemon opens its
store (`daemon.app.open_parts`), so whatever the service sets on its connections applies to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest

from daemon.app import open_parts
from daemon.settings import Settings, load_settings
from store.migrate import migrate
from store.types import ApplyResult
from store.upsert import apply_batch
from tests.conftest import create_database, drop_database
from tests.faults.conftest import database_of
from tests.faults.daemon import WANTED_SETTINGS
from tests.faults.pgproxy import PgProxy
from tests.integration.harness import wait_for_async
from tests.store.factory import fresh_tids, make_trade

IDLE_IN_TRANSACTION_SECONDS = float(WANTED_SETTINGS["database_idle_in_transaction_seconds"])
MARGIN_SECONDS = 3.0


def store_settings(dsn: str) -> Settings:
    return load_settings(
        env_file=None,
        database_url=dsn,
        taobao_app_key="fault-tests",
        taobao_app_secret="not-used",
        taobao_shops=[{"nick": "shop-a", "session": "not-used"}],
        **WANTED_SETTINGS,
    )


@dataclass
class Standoff:
    waited: float  # how long the other writer waited (up to the limit)
    other: ApplyResult | None  # None: still waiting at the limit
    frozen_commit_error: BaseException | None  # what the frozen writer's COMMIT raised once heard
    sessions: dict[str, int]  # the database's sessions by state, at the limit if the other still waited
    other_tid: int
    frozen_tid: int


async def session_states(admin: asyncpg.Connection) -> dict[str, int]:
    """Backends of the database by what they are doing: 'idle in transaction', 'waiting on a lock'."""
    rows = await admin.fetch(
        "SELECT CASE WHEN wait_event_type = 'Lock' THEN 'waiting on a lock' ELSE state END AS what,"
        " count(*) AS n FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid() GROUP BY 1"
    )
    return {str(row["what"]): int(row["n"]) for row in rows}


async def frozen_writer_standoff(proxy: PgProxy, dsn: str, limit: float) -> Standoff:
    """One writer through `proxy` freezes holding the counter row; another writes directly. Waits at
    most `limit` seconds for the other, then lets the frozen one go on."""
    frozen_tid, other_tid = fresh_tids(2)
    admin = await asyncpg.connect(dsn)
    try:
        async with (
            open_parts(store_settings(proxy.dsn_for(database_of(dsn)))) as (frozen_store, _),
            open_parts(store_settings(dsn)) as (store, _),
            frozen_store.pool.acquire() as conn,
        ):
            transaction = conn.transaction()
            await transaction.start()
            await apply_batch(conn, [make_trade(frozen_tid, 1)], source="stream", channel="trade_changed")
            proxy.stall()
            commit = asyncio.create_task(transaction.commit())

            async def idle_in_transaction() -> bool:
                return (await session_states(admin)).get("idle in transaction", 0) == 1

            await wait_for_async(idle_in_transaction, 5, "the frozen writer to hold the counter row")
            started = time.monotonic()
            other = asyncio.create_task(store.apply_trades([make_trade(other_tid, 1)], source="stream"))
            done, _ = await asyncio.wait({other}, timeout=limit)
            waited = time.monotonic() - started
            sessions = await session_states(admin)
            if not done:
                other.cancel()
            proxy.resume()
            frozen_error: BaseException | None = None
            try:
                async with asyncio.timeout(10):
                    await commit
            except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                frozen_error = exc
            with contextlib.suppress(asyncio.CancelledError):
                await other
            result = other.result() if done else None
            return Standoff(waited, result, frozen_error, sessions, other_tid, frozen_tid)
    finally:
        await admin.close()


async def feed_tids(dsn: str) -> list[int]:
    """The feed's tids in position order, after checking that the positions are 1..n."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT position, tid FROM trade_changes ORDER BY position")
    finally:
        await conn.close()
    assert [row["position"] for row in rows] == list(range(1, len(rows) + 1))
    return [int(row["tid"]) for row in rows]


async def test_a_frozen_writer_holds_the_others_no_longer_than_the_idle_timeout(
    proxy: PgProxy, migrated_database: str
) -> None:
    limit = IDLE_IN_TRANSACTION_SECONDS + MARGIN_SECONDS
    standoff = await frozen_writer_standoff(proxy, migrated_database, limit)
    assert standoff.other is not None, (
        f"the other writer was still waiting after {standoff.waited:.1f} s; sessions: {standoff.sessions}"
    )
    assert standoff.other.changed == (standoff.other_tid,)
    # The server ended the frozen session: its transaction rolled back, its client heard an error.
    assert standoff.frozen_commit_error is not None
    assert await feed_tids(migrated_database) == [standoff.other_tid]


@pytest.fixture
async def database_with_idle_timeout() -> AsyncIterator[str]:
    """A migrated database whose server ends sessions idle in a transaction after the wanted timeout."""
    dsn = await create_database()
    try:
        admin = await asyncpg.connect(dsn)
        try:
            await admin.execute(
                f'ALTER DATABASE "{database_of(dsn)}" SET idle_in_transaction_session_timeout'
                f" = '{int(IDLE_IN_TRANSACTION_SECONDS * 1000)}ms'"
            )
        finally:
            await admin.close()
        await migrate(dsn)
        yield dsn
    finally:
        await drop_database(dsn)


async def test_with_the_timeout_set_on_the_server_the_frozen_writer_is_ended(
    proxy: PgProxy, database_with_idle_timeout: str
) -> None:
    """The same standoff with the timeout set by the database's owner: what the service should do for
    itself, and proof that the scenario above can pass."""
    dsn = database_with_idle_timeout
    standoff = await frozen_writer_standoff(proxy, dsn, IDLE_IN_TRANSACTION_SECONDS + MARGIN_SECONDS)
    assert standoff.other is not None, f"the other writer was still waiting after {standoff.waited:.1f} s"
    assert standoff.waited >= IDLE_IN_TRANSACTION_SECONDS / 2  # it did wait for the frozen one
    assert standoff.other.changed == (standoff.other_tid,)
    assert isinstance(standoff.frozen_commit_error, asyncpg.ConnectionDoesNotExistError)
    assert "idle-in-transaction timeout" in str(standoff.frozen_commit_error)
    assert await feed_tids(dsn) == [standoff.other_tid]
