"""How every connection of the service to PostgreSQL is opened: the server settings it asks for and
the limits that keep a stalled peer from holding it forever (docs/operations.md#database-timeouts).

`pool_options(limits)` is the one place that builds asyncpg's connect arguments; the store's pool and
the replica set's own connection both take theirs from here.
"""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass
from typing import Any

import asyncpg

from store.schema import DEFAULT_SCHEMA, connection_settings


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Seconds (and a probe count) after which a silent database or a silent client is given up."""

    # One round trip (a statement, COMMIT, a cancel request) unanswered this long fails with
    # TimeoutError, and the server ends a statement running this long (statement_timeout).
    command: float = 30.0
    # Waiting this long for a free pooled connection fails with TimeoutError.
    acquire: float = 30.0
    # The server ends a session idle inside a transaction this long, rolling it back and releasing its
    # locks (the change feed's counter row among them).
    idle_in_transaction: float = 10.0
    # TCP keepalive on both ends: first probe after `keepalive_idle` s of silence, then every
    # `keepalive_interval` s, `keepalive_count` unanswered probes end the connection. Data unacknowledged
    # for as long (TCP_USER_TIMEOUT) ends it too.
    keepalive_idle: float = 30.0
    keepalive_interval: float = 10.0
    keepalive_count: int = 3

    @property
    def dead_after(self) -> float:
        """How long a connection whose peer vanished lingers at most, by the keepalive settings."""
        return self.keepalive_idle + self.keepalive_interval * self.keepalive_count


def _ms(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def server_settings(limits: ConnectionLimits, schema: str = DEFAULT_SCHEMA) -> dict[str, str]:
    """What each session asks of the server at startup: UTC, the service's name and schema
    (store.schema), and the server's side of the limits."""
    return connection_settings(schema) | {
        "statement_timeout": _ms(limits.command),
        "idle_in_transaction_session_timeout": _ms(limits.idle_in_transaction),
        "tcp_keepalives_idle": str(max(1, round(limits.keepalive_idle))),
        "tcp_keepalives_interval": str(max(1, round(limits.keepalive_interval))),
        "tcp_keepalives_count": str(limits.keepalive_count),
    }


def set_keepalive(sock: Any, limits: ConnectionLimits) -> None:
    """The client's side of the keepalive, as libpq's keepalives_* and tcp_user_timeout set it. A
    Unix socket (or a platform without the options) is left as it is."""
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    options = [
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPIDLE", None), round(limits.keepalive_idle)),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPINTVL", None), round(limits.keepalive_interval)),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPCNT", None), limits.keepalive_count),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_USER_TIMEOUT", None), round(limits.dead_after * 1000)),
    ]
    for level, option, value in options:
        if option is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(level, option, max(1, value))


def connection_socket(conn: Any) -> Any:
    """The socket under an asyncpg connection or pooled connection (asyncio's socket wrapper; the
    driver has no public accessor for it), or None."""
    transport = getattr(conn, "_transport", None)
    return None if transport is None else transport.get_extra_info("socket")


class StoreConnection(asyncpg.Connection):
    """A pooled connection that knows when its session needs no reset on release."""

    # Not a slot of asyncpg's Connection: the subclass keeps it in its own __dict__.
    session_untouched = False

    def mark_session_untouched(self) -> None:
        """Only statements that leave no session state ran since it was acquired (no SET, LISTEN,
        session lock or open cursor): the pool may hand it on without a reset round trip."""
        self.session_untouched = True


async def _reset_on_release(conn: asyncpg.Connection) -> None:
    # asyncpg has already rolled back an open transaction and dropped local listeners; the reset
    # query (RESET ALL, UNLISTEN *, advisory unlocks, ...) is one more round trip, skipped for the
    # stream's commits, which change nothing in the session (docs/performance.md#steady-rates).
    if getattr(conn, "session_untouched", False):
        conn.session_untouched = False  # type: ignore[attr-defined]
        return
    query = conn.get_reset_query()
    if query:
        await conn.execute(query)


def mark_session_untouched(conn: Any) -> None:
    """Mark a pooled connection (or its proxy) as `StoreConnection.mark_session_untouched` says."""
    mark = getattr(conn, "mark_session_untouched", None)
    if mark is not None:
        mark()


def pool_options(limits: ConnectionLimits, schema: str = DEFAULT_SCHEMA) -> dict[str, Any]:
    """Keyword arguments for `asyncpg.create_pool`: server settings, the client's command timeout,
    keepalive on each new connection, and a reset on release only where one is needed."""

    async def on_new_connection(conn: asyncpg.Connection) -> None:
        set_keepalive(connection_socket(conn), limits)

    return {
        "server_settings": server_settings(limits, schema),
        "command_timeout": limits.command,
        "init": on_new_connection,
        "connection_class": StoreConnection,
        "reset": _reset_on_release,
    }


async def connect_one(dsn: str, limits: ConnectionLimits, schema: str = DEFAULT_SCHEMA) -> asyncpg.Connection:
    """A single connection (outside any pool) opened like the pool's."""
    options = pool_options(limits, schema)
    conn = await asyncpg.connect(
        dsn,
        server_settings=options["server_settings"],
        command_timeout=limits.command,
        timeout=limits.acquire,
    )
    set_keepalive(connection_socket(conn), limits)
    return conn
