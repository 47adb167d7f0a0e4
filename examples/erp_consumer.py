"""An ERP-side consumer of the trade change feed: the pattern the ERP contract asks for, runnable.

It stands alone: one file that needs only asyncpg, nothing from order-sync. Copy it into the ERP's code
or run it as it is:

    pip install 'asyncpg>=0.29'
    python erp_consumer.py --database-url postgresql://... [--channel trade_changed] [--name erp]

It prints every change as one JSON line. How it stays exact:

* The feed table is the truth, NOTIFY only rings the bell. The consumer keeps its cursor (the last
  position it processed) in a table of its own, `erp_cursor`, and advances it in the SAME transaction
  in which `on_change` runs. Give `on_change` the connection it receives and the ERP's own writes commit
  atomically with the cursor: every change is applied exactly once, across crashes and disconnects.
* LISTEN runs on a dedicated connection (a pool connection would be UNLISTENed on release). LISTEN is
  issued BEFORE the catch-up read, so nothing committed in between goes unnoticed.
* On every doorbell and after every (re)connect it reads `position > cursor` until it is caught up.
* A termination listener notices a dropped connection at once; after `idle_probe_seconds` of silence a
  `SELECT 1` probes a connection that may have died without a word (NAT, failover).
* Reconnects back off exponentially with jitter, up to `backoff_max_seconds`; the backoff resets only
  after a connection stayed up `stable_after_seconds`, so a server that accepts and drops at once cannot
  cause a tight loop. A failing `on_change` is retried the same way: the cursor never skips a change.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import re
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Change:
    """One row of the change feed, `trade_changes`: trade `tid` reached `status`/`modified` at `position`."""

    position: int
    tid: int
    seller_nick: str | None
    status: str | None
    modified: datetime
    source: str
    kind: str
    committed_at: datetime


OnChange = Callable[[asyncpg.Connection, Change], Awaitable[None]]

CREATE_CURSOR_TABLE = """
CREATE TABLE IF NOT EXISTS erp_cursor (
    consumer    text PRIMARY KEY,
    position    bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
)
"""
LOAD_CURSOR = """
INSERT INTO erp_cursor (consumer, position) VALUES ($1, 0)
ON CONFLICT (consumer) DO UPDATE SET consumer = EXCLUDED.consumer
RETURNING position
"""
SAVE_CURSOR = "UPDATE erp_cursor SET position = $2, updated_at = now() WHERE consumer = $1"
# The service's schema (its DATABASE_SCHEMA): the feed is read schema-qualified, while the ERP's own
# tables above go wherever the ERP role's search_path puts them.
DEFAULT_SCHEMA = "order_sync"
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# The README's catch-up query.
READ_CHANGES = """
SELECT position, tid, seller_nick, status, modified, source, kind, committed_at
FROM {schema}.trade_changes
WHERE position > $1
ORDER BY position
LIMIT $2
"""


def check_schema(schema: str) -> str:
    if not _IDENTIFIER.match(schema):
        raise ValueError(f"schema must be a lower-case identifier: {schema!r}")
    return schema


async def read_changes(
    conn: asyncpg.Connection, after: int, limit: int, schema: str = DEFAULT_SCHEMA
) -> list[Change]:
    """Changes with position > `after`, oldest first, at most `limit` of them."""
    query = READ_CHANGES.format(schema=check_schema(schema))
    return [Change(**dict(row)) for row in await conn.fetch(query, after, limit)]


# What a lost or unusable connection looks like; anything else from on_change is retried too, logged
# with its traceback.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
)


class ConnectionLost(Exception):
    """The server closed the LISTEN connection (termination listener fired)."""


RECONNECT_ERRORS: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, ConnectionLost)


class ErpConsumer:
    """Follow the change feed from a saved cursor. `run()` until `stop()`; see the module docstring."""

    def __init__(
        self,
        dsn: str,
        channel: str,
        on_change: OnChange,
        *,
        name: str = "erp",
        batch_size: int = 500,
        idle_probe_seconds: float = 30.0,
        probe_timeout_seconds: float = 5.0,
        backoff_initial_seconds: float = 0.5,
        backoff_max_seconds: float = 30.0,
        stable_after_seconds: float = 30.0,
        schema: str = DEFAULT_SCHEMA,
    ) -> None:
        self._dsn = dsn
        self._schema = check_schema(schema)
        self._channel = channel
        self._on_change = on_change
        self.name = name
        self._batch_size = batch_size
        self._idle_probe = idle_probe_seconds
        self._probe_timeout = probe_timeout_seconds
        self._backoff_initial = backoff_initial_seconds
        self._backoff_max = backoff_max_seconds
        self._stable_after = stable_after_seconds
        self._stopping = False
        self._doorbell = False
        self._lost = False
        self._wake = asyncio.Event()
        self._progress = asyncio.Condition()
        # Observable state, for operators and tests.
        self.cursor = 0
        self.connections = 0
        self.probes = 0
        self.backend_pid: int | None = None

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def wait_for_position(self, position: int) -> None:
        """Return once the cursor has reached `position` (wrap in a timeout)."""
        async with self._progress:
            await self._progress.wait_for(lambda: self.cursor >= position)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        delay = self._backoff_initial
        while not self._stopping:
            started = loop.time()
            try:
                await self._session()
            except RECONNECT_ERRORS as exc:
                logger.warning(
                    "feed connection lost: %s",
                    exc or type(exc).__name__,
                    extra={"action": "erp_connection_lost", "attempt": self.connections},
                )
            except Exception:
                logger.exception(
                    "change handler failed; retrying from the saved cursor",
                    extra={"action": "erp_handler_failed", "attempt": self.connections},
                )
            if self._stopping:
                break
            if loop.time() - started >= self._stable_after:
                delay = self._backoff_initial
            pause = delay * random.uniform(0.5, 1.0)
            delay = min(delay * 2, self._backoff_max)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=pause)

    async def _session(self) -> None:
        self._lost = False
        conn = await asyncpg.connect(
            self._dsn, server_settings={"application_name": f"erp-consumer:{self.name}"}
        )
        conn.add_termination_listener(self._on_termination)
        try:
            await conn.execute(CREATE_CURSOR_TABLE)
            self.cursor = int(await conn.fetchval(LOAD_CURSOR, self.name))
            # LISTEN first, then catch up: a change committed in between rings the bell.
            await conn.add_listener(self._channel, self._on_doorbell)
            self.backend_pid = conn.get_server_pid()
            self.connections += 1
            logger.info(
                "following the feed from position %d",
                self.cursor,
                extra={"action": "erp_connected", "attempt": self.connections},
            )
            await self._drain(conn)
            while not self._stopping:
                self._wake.clear()
                if not (self._doorbell or self._lost or self._stopping):
                    try:
                        await asyncio.wait_for(self._wake.wait(), timeout=self._idle_probe)
                    except TimeoutError:
                        self.probes += 1
                        await conn.fetchval("SELECT 1", timeout=self._probe_timeout)
                        continue
                if self._lost:
                    raise ConnectionLost("server closed the connection")
                if self._doorbell:
                    self._doorbell = False
                    await self._drain(conn)
        finally:
            self.backend_pid = None
            if self._lost or conn.is_closed():
                conn.terminate()
            else:
                with contextlib.suppress(*CONNECTION_ERRORS):
                    await conn.close(timeout=self._probe_timeout)

    async def _drain(self, conn: asyncpg.Connection) -> None:
        """Read and hand on everything after the cursor; the cursor moves in each batch's transaction."""
        while True:
            async with conn.transaction():
                changes = await read_changes(conn, self.cursor, self._batch_size, self._schema)
                if not changes:
                    return
                expected = self.cursor + 1
                for change in changes:
                    if change.position != expected:
                        # Only a pruned feed does this; the positions in between are gone for good.
                        logger.warning(
                            "feed jumps from %d to %d",
                            expected - 1,
                            change.position,
                            extra={"action": "erp_feed_gap", "tid": change.tid},
                        )
                    await self._on_change(conn, change)
                    expected = change.position + 1
                await conn.execute(SAVE_CURSOR, self.name, changes[-1].position)
            async with self._progress:
                self.cursor = changes[-1].position
                self._progress.notify_all()
            if len(changes) < self._batch_size:
                return

    def _on_doorbell(self, conn: Any, pid: int, channel: str, payload: object) -> None:
        self._doorbell = True
        self._wake.set()

    def _on_termination(self, conn: Any) -> None:
        self._lost = True
        self._wake.set()


async def print_change(conn: asyncpg.Connection, change: Change) -> None:
    print(
        json.dumps(
            {
                "position": change.position,
                "tid": change.tid,
                "seller_nick": change.seller_nick,
                "status": change.status,
                "modified": change.modified.isoformat(),
                "source": change.source,
                "kind": change.kind,
            },
            ensure_ascii=False,
        ),
        flush=True,
    )


@contextlib.contextmanager
def stop_on_signals(consumer: ErpConsumer) -> Iterator[None]:
    """SIGINT/SIGTERM stop the consumer gracefully; the previous handlers come back afterwards."""
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, consumer.stop)
    try:
        yield
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


async def _main(args: argparse.Namespace) -> None:
    consumer = ErpConsumer(args.database_url, args.channel, print_change, name=args.name, schema=args.schema)
    with stop_on_signals(consumer):
        await consumer.run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print every trade change from the feed, exactly once.")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--channel", default=os.environ.get("NOTIFY_CHANNEL", "trade_changed"))
    parser.add_argument("--name", default="erp", help="cursor name in erp_cursor (one per consumer)")
    parser.add_argument(
        "--schema",
        default=os.environ.get("DATABASE_SCHEMA", DEFAULT_SCHEMA),
        help="the service's schema, where the feed is (default: DATABASE_SCHEMA or order_sync)",
    )
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("give --database-url or set DATABASE_URL")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    asyncio.run(_main(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
