"""A replica frozen inside its commit: a daemon in its own process, its database path through the
fault proxy, is caught with the change feed's counter row taken and COMMIT not yet sent
(`PgProxy.stall()` on its connections, pg_stat_activity showing its last statement was the feed's),
then stopped with SIGSTOP for the test's duration, as a GC pause, a VM migration or a debugger would.

Wanted (docs/design.md#commit-ordered-feed, docs/operations.md#database-timeouts): the other replica
(the daemon in this process, straight to the database) waits for the frozen one's lock no longer than
DATABASE_IDLE_IN_TRANSACTION_SECONDS plus a margin, commits on while the frozen one stays stopped, and
once it is let go both catch up and the database ends equal to the truth. The full size (30 s):

    FAULT_SIGSTOP_SECONDS=30 pytest tests/faults/test_frozen_replica.py -s
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg

from tests.faults.conftest import database_of
from tests.faults.daemon import (
    FAST_DAEMON,
    WANTED_SETTINGS,
    Witness,
    fault_bench,
    market_running,
    watched_daemon,
)
from tests.faults.pgproxy import PgProxy
from tests.integration.harness import DaemonProcess, assert_in_sync, daemon_env, wait_for_async

IDLE_IN_TRANSACTION_SECONDS = float(WANTED_SETTINGS["database_idle_in_transaction_seconds"])
MARGIN_SECONDS = 3.0
STOPPED_SECONDS = float(os.environ.get("FAULT_SIGSTOP_SECONDS", "8"))
RATE = 20.0  # market changes per second
ATTEMPTS = 100  # stalls tried until one catches the replica between its feed statement and COMMIT


@contextlib.asynccontextmanager
async def replica_process(env: dict[str, str], log_path: Path) -> AsyncIterator[DaemonProcess]:
    """The daemon in its own process; continued and killed on the way out, whatever happened."""
    process = DaemonProcess(env, log_path)
    await process.start()
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.send(signal.SIGCONT)
        await process.stop()


async def frozen_in_commit(admin: asyncpg.Connection, proxy: PgProxy) -> bool:
    """Whether a backend behind the proxy sits idle inside a transaction whose last statement took
    feed positions (the counter row is then locked until its COMMIT)."""
    ports = [link.upstream_port for link in proxy.links]
    rows = await admin.fetch(
        "SELECT query FROM pg_stat_activity WHERE client_port = ANY($1::int[])"
        " AND state = 'idle in transaction'",
        ports,
    )
    return any("feed_counter" in str(row["query"]) for row in rows)


async def catch_in_commit(admin: asyncpg.Connection, proxy: PgProxy) -> None:
    """Stall the replica's next COMMIT on its way to the server, until one follows the feed
    statement (other transactions, the heartbeat's, commit too)."""
    for _ in range(ATTEMPTS):
        proxy.stall_when_sent(b"COMMIT")
        async with asyncio.timeout(10):
            link = await proxy.trapped.get()
        if await frozen_in_commit(admin, proxy):
            return
        link.resume()
    raise AssertionError(f"no stall out of {ATTEMPTS} caught the replica inside a feed commit")


def longest_wait_since(witness: Witness, since: float) -> float:
    """The longest store write of the other replica begun at or after `since` (one still running
    counts up to now)."""
    now = time.monotonic()
    waits = [(end or now) - start for start, end in witness.applies.values() if start >= since]
    return max(waits, default=0.0)


async def test_a_replica_stopped_inside_a_commit_holds_the_others_no_longer_than_the_idle_timeout(
    tmp_path: Path,
) -> None:
    witness = Witness()
    limit = IDLE_IN_TRANSACTION_SECONDS + MARGIN_SECONDS
    async with fault_bench(seed=67) as (standin, dsn, proxy):
        frozen_env = daemon_env(
            standin,
            proxy.dsn_for(database_of(dsn)),
            sync_replica_id="frozen-replica",
            **(FAST_DAEMON | WANTED_SETTINGS),
        )
        async with (
            watched_daemon(witness, standin, dsn, sync_replica_id="other", **WANTED_SETTINGS) as other,
            replica_process(frozen_env, tmp_path / "frozen.log") as frozen,
            market_running(other, standin.market, RATE),
        ):
            admin = await asyncpg.connect(dsn)
            try:
                try:
                    await wait_for_async(lambda: through_proxy(proxy), 30, "the frozen replica to commit")
                    await catch_in_commit(admin, proxy)
                except AssertionError:
                    print(frozen.log_tail())
                    raise
                caught = time.monotonic()
                frozen.send(signal.SIGSTOP)
                await asyncio.sleep(STOPPED_SECONDS)  # the replica stays stopped this long: the fault
                still_frozen = await frozen_in_commit(admin, proxy)
                waited = longest_wait_since(witness, caught - 0.5)
                committed_after = witness.confirms_between(caught + limit, time.monotonic())
                frozen.send(signal.SIGCONT)
                proxy.resume()
            finally:
                await admin.close()
        # (the market stopped with the block; the other replica and the continued one catch up)
        print(
            f"replica stopped {STOPPED_SECONDS:g} s inside a commit: the other replica's longest store write"
            f" {waited:.1f} s (idle-in-transaction timeout {IDLE_IN_TRANSACTION_SECONDS:g} s),"
            f" {committed_after} confirms after the timeout while it stayed stopped"
        )
        assert not still_frozen  # the server ended the frozen session, releasing the counter row
        assert waited <= limit
        assert committed_after > 0
        assert witness.early == []
        async with asyncpg.create_pool(dsn, min_size=1, max_size=2) as pool:
            await assert_in_sync(pool, standin, shops=2)


async def through_proxy(proxy: PgProxy) -> bool:
    return proxy.snapshot()["bytes_up"] > 0 and bool(proxy.links)
