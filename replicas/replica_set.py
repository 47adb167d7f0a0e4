"""Several replicas of the daemon on one database and one TMC group: who is alive, who leads which
shop, how the TOP quota is split, and how far any replica may call the stream proven.

Each replica keeps one connection of its own to PostgreSQL (`CoordinationLink`, never pooled). Every
SYNC_HEARTBEAT_SECONDS it writes its row in `replicas` over that connection and reads everyone's
(`ReplicaSet.run`, a side task of the daemon); from that round follow:

* the quota share (`replicas.quota`): SYNC_API_RATE ÷ live replicas, and bans shared;
* shop leadership (`replicas.leadership`): advisory locks held on this very connection, so a replica
  whose connection dies loses its shops at that instant, and one that cannot heartbeat stops claiming
  them;
* the stream's proof across replicas. TMC spreads a group's messages over every connection, so a
  replica may call a moment proven (docs/design.md#coverage-ledger) only when no replica still holds an older
  message uncommitted. Each replica publishes its oldest uncommitted message time (`stream_hold`), and
  every replica's stream proof stops at the oldest hold of the others. That is sound while a hold is
  published and read within the settle margin: keep SYNC_STREAM_SETTLE_SECONDS above twice
  SYNC_HEARTBEAT_SECONDS plus the pushes' transit time. A dead replica's hold keeps counting for a
  while (TMC redelivers what it held after about a minute, docs/tmc-protocol.md#redelivery); when the rounds
  fail, the proof stops where the last good round left it.

A replica is live while its row is fresh (3 heartbeats) *and* its connection exists in
pg_stat_activity: a SIGKILLed replica is out of the count, and its shops free, within one round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg

from common.errors import OrderSyncError
from common.health import Check
from common.metrics import Registry
from replicas.leadership import STOPPING, ShopLeadership
from replicas.quota import SharedQuota
from store import replica_sql
from store.errors import DATABASE_ERRORS, StoreError
from store.pg_connect import ConnectionLimits, connection_socket, server_settings, set_keepalive
from store.schema import DEFAULT_SCHEMA
from taobao.limiter import TopRateLimiter

logger = logging.getLogger(__name__)


class ReplicaIdInUse(OrderSyncError):
    """Another running process uses this SYNC_REPLICA_ID: each replica needs a name of its own."""


class CoordinationError(StoreError):
    """The coordination connection failed; it is closed (its locks with it) and opened again."""


class StreamHolds(Protocol):
    """What the replica set reads from and tells the stream watch (`reconciler.stream_watch`)."""

    @property
    def connected(self) -> bool: ...

    def hold(self) -> datetime | None: ...

    def bound_by_peers(self, bound: datetime | None) -> None: ...


@dataclass(frozen=True, slots=True)
class ReplicaConfig:
    replica: str
    app_key: str
    api_rate: float
    heartbeat_seconds: float = 1.0
    # A dead replica's stream hold keeps counting this long after its last heartbeat.
    dead_hold_seconds: float = 120.0
    # What a stopped replica handed back unconfirmed holds the others' proof this long (Failed → ~6 min).
    stopped_hold_seconds: float = 600.0
    connect_timeout: float = 10.0
    # A replica silent this long with its connection still open is ended by the others (None: ten
    # liveness timeouts).
    frozen_after_seconds: float | None = None
    # The service's schema (DATABASE_SCHEMA): the coordination connection's search_path.
    schema: str = DEFAULT_SCHEMA
    # The server settings and keepalive of its own connection, as the store's pool has them.
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)

    @property
    def liveness_seconds(self) -> float:
        """A heartbeat older than this means the replica is gone."""
        return max(3 * self.heartbeat_seconds, 2.0)

    @property
    def frozen_seconds(self) -> float:
        if self.frozen_after_seconds is not None:
            return self.frozen_after_seconds
        return 10 * self.liveness_seconds

    @property
    def query_timeout(self) -> float:
        return max(2 * self.heartbeat_seconds, 2.0)


@dataclass(frozen=True, slots=True)
class Member:
    replica: str
    live: bool
    stream_connected: bool
    leads: tuple[str, ...]
    api_rate: float | None
    hold: datetime | None


@dataclass(slots=True)
class RoundView:
    """What the last good round saw."""

    members: list[Member] = field(default_factory=list)
    at: datetime | None = None  # wall clock of that round
    ok_at: float = 0.0  # its time.monotonic()

    @property
    def live(self) -> list[str]:
        return [m.replica for m in self.members if m.live]


class CoordinationLink:
    """This replica's own PostgreSQL connection: heartbeats, leadership locks, ban notifications.
    One query at a time; any failure closes it (PostgreSQL releases its locks) and the next use opens
    a new one."""

    def __init__(
        self,
        dsn: str,
        *,
        timeout: float,
        on_ban: Callable[[], None],
        limits: ConnectionLimits | None = None,
        schema: str = DEFAULT_SCHEMA,
    ) -> None:
        self._dsn = dsn
        self._timeout = timeout
        self._limits = limits or ConnectionLimits()
        self._server_settings = server_settings(self._limits, schema)
        self._on_ban = on_ban
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()

    @property
    def pid(self) -> int | None:
        conn = self._conn
        return None if conn is None or conn.is_closed() else conn.get_server_pid()

    async def ensure(self) -> None:
        if self.pid is not None:
            return
        await self.close()
        try:
            async with asyncio.timeout(self._timeout):
                conn = await asyncpg.connect(self._dsn, server_settings=self._server_settings)
            set_keepalive(connection_socket(conn), self._limits)
        except DATABASE_ERRORS as exc:
            raise CoordinationError(f"cannot open the coordination connection: {type(exc).__name__}") from exc
        try:
            await conn.add_listener(replica_sql.BAN_CHANNEL, self._notified)
        except DATABASE_ERRORS as exc:
            await _abort(conn)
            raise CoordinationError(f"cannot LISTEN for bans: {type(exc).__name__}") from exc
        self._conn = conn

    def _notified(self, *_args: object) -> None:
        self._on_ban()

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        return list(await self._run("fetch", query, args))

    async def fetchrow(self, query: str, *args: Any) -> Any:
        return await self._run("fetchrow", query, args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        return await self._run("fetchval", query, args)

    async def _run(self, how: str, query: str, args: Sequence[Any]) -> Any:
        async with self._lock:
            conn = self._conn
            if conn is None or conn.is_closed():
                raise CoordinationError("the coordination connection is not open")
            try:
                async with asyncio.timeout(self._timeout):
                    return await getattr(conn, how)(query, *args)
            except DATABASE_ERRORS as exc:
                # A half-finished query leaves the connection unusable; a new one is opened next round.
                self._conn = None
                await _abort(conn)
                raise CoordinationError(f"coordination query failed: {type(exc).__name__}") from exc

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                async with asyncio.timeout(self._timeout):
                    await conn.close()
            except DATABASE_ERRORS:
                conn.terminate()


async def _abort(conn: asyncpg.Connection) -> None:
    with contextlib.suppress(Exception):
        conn.terminate()


class ReplicaSet:
    """This replica among the others: the side task that keeps the heartbeat, the quota share and shop
    leadership current, and the `Coordination` the reconciler asks (see `reconciler.coordination`)."""

    def __init__(
        self,
        config: ReplicaConfig,
        *,
        dsn: str,
        shops: Collection[str],
        limiter: TopRateLimiter,
        registry: Registry | None = None,
    ) -> None:
        self.config = config
        self.replica = config.replica
        self._wake = asyncio.Event()
        self.link = CoordinationLink(
            dsn,
            timeout=config.query_timeout,
            on_ban=self._wake.set,
            limits=config.limits,
            schema=config.schema,
        )
        self.leadership = ShopLeadership(shops, config.replica, on_change=self._count_change)
        self.quota = SharedQuota(
            limiter, app_key=config.app_key, replica=config.replica, rate=config.api_rate
        )
        self.quota.on_local_ban(self._wake.set)
        self.view = RoundView()
        self._stream: StreamHolds | None = None
        self._ready = asyncio.Event()
        self._good_rounds = 0
        self._holder_seen: datetime | None = None  # the last heartbeat of whoever held this name
        self._changes: dict[tuple[str, str], int] = {}
        self._leadership_listeners: list[Callable[[str, str], None]] = []
        self.failures = 0
        if registry is not None:
            self._register(registry)

    # ---- the Coordination the reconciler asks ----------------------------------------------------------

    def attach(self, stream: StreamHolds, busy: Callable[[str], bool]) -> None:
        """The reconciler's stream watch (holds published and bounded) and its per-shop busy test."""
        self._stream = stream
        self.leadership.watch_busy(busy)

    def leads(self, shop: str) -> bool:
        return self.leadership.leads(shop)

    def holds(self, shop: str) -> bool:
        return self.leadership.holds(shop)

    def peer_connected(self) -> bool:
        """Another live replica consumes the TMC group's queue right now."""
        return any(m.live and m.stream_connected for m in self.view.members if m.replica != self.replica)

    async def ready(self) -> None:
        """Until this replica has its quota share and its shops (and the others have made room)."""
        await self._ready.wait()

    async def changed(self, within: float) -> None:
        await self.leadership.changed(within)

    async def fence(self, conn: Any, shop: str) -> None:
        await self.leadership.fence(conn, shop)

    # ---- the side task ------------------------------------------------------------------------------

    async def run(self) -> None:
        """A round every SYNC_HEARTBEAT_SECONDS (at once when a ban is to be shared or was announced);
        on the way out the replica leaves the share and the leadership to the others."""
        try:
            while True:
                await self.round()
                try:
                    async with asyncio.timeout(self.config.heartbeat_seconds):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                self._wake.clear()
        finally:
            leaving = asyncio.ensure_future(self._leave())
            try:
                await asyncio.shield(leaving)
            except asyncio.CancelledError:
                await leaving
                raise

    async def round(self) -> None:
        """One heartbeat round; a database failure is logged and counted, never raised."""
        try:
            await self._round()
        except CoordinationError as exc:
            self.failures += 1
            self.leadership.lose_all("coordination connection lost")
            logger.warning(
                "replica heartbeat failed: %s; retrying", exc, extra={"action": "replica_heartbeat_failed"}
            )
            self._on_stale()

    async def _claim_name(self, connected: bool, hold: datetime | None) -> None:
        """Write this replica's heartbeat row. A name whose holder fell silent (a restart meeting its
        predecessor's lingering connection) is taken over once the holder's lease of
        `liveness_seconds` expires, its connection ended; until then the round fails and is retried.
        A holder whose heartbeat moves on is another running process: ReplicaIdInUse."""
        link, lease = self.link, self.config.liveness_seconds
        for row in await link.fetch(replica_sql.END_PREDECESSOR, self.replica, lease):
            logger.warning(
                "replica id %s was held by a silent connection: ended it (ended=%s) to take the id over",
                self.replica,
                row["ended"],
                extra={"action": "replica_id_taken_over"},
            )
        registered = await link.fetchval(
            replica_sql.HEARTBEAT, self.replica, connected, hold, self.leadership.led, self.quota.share, lease
        )
        if registered is not None:
            self._holder_seen = None
            return
        seen = await link.fetchval(replica_sql.LAST_SEEN, self.replica)
        if self._holder_seen is not None and seen != self._holder_seen:
            raise ReplicaIdInUse(
                f"replica id {self.replica!r} is in use by another running process; give each replica "
                "its own SYNC_REPLICA_ID (or leave it empty for host name and process id)"
            )
        self._holder_seen = seen
        raise CoordinationError(
            f"replica id {self.replica!r} is held by another connection; taken over if its heartbeat"
            f" stays {lease:g} s old"
        )

    async def _round(self) -> None:
        link, config = self.link, self.config
        await link.ensure()
        await self.quota.announce(link)
        stream = self._stream
        hold = stream.hold() if stream is not None else None
        connected = stream.connected if stream is not None else False
        await self._claim_name(connected, hold)
        rows = await link.fetch(replica_sql.MEMBERS, config.liveness_seconds, config.dead_hold_seconds)
        members = [
            Member(
                r["replica"], r["live"], r["stream_connected"], tuple(r["leads"]), r["api_rate"], r["hold"]
            )
            for r in rows
        ]
        live = [m.replica for m in members if m.live] or [self.replica]
        await self.quota.apply_share(len(live))
        await self.quota.follow(link)
        await self.leadership.round(link, live, trust_for=config.liveness_seconds)
        for row in await link.fetch(replica_sql.END_FROZEN, self.replica, config.frozen_seconds):
            logger.warning(
                "replica %s stopped heartbeating but kept its connection: ended it to free its shops",
                row["replica"],
                extra={"action": "replica_frozen_ended"},
            )
        self.view = RoundView(members, datetime.now(UTC), time.monotonic())
        if stream is not None:
            holds = [m.hold for m in members if m.replica != self.replica and m.hold is not None]
            stream.bound_by_peers(min(holds) if holds else None)
        self._good_rounds += 1
        # Joining others: their shares shrink on their next round, so this one waits a round before
        # its first call; the app never goes above SYNC_API_RATE, not even while a replica joins.
        if not self._ready.is_set() and (len(live) == 1 or self._good_rounds >= 2):
            await link.fetch(replica_sql.FORGET_OLD)
            self._ready.set()
            logger.info(
                "replica %s joined: %d live, leads %d of %d shops, %.2f TOP calls/s",
                self.replica,
                len(live),
                len(self.leadership.led),
                len(self.leadership.shops),
                self.quota.share,
                extra={"action": "replica_joined"},
            )

    def _on_stale(self) -> None:
        """Rounds are failing. After the liveness timeout the others count this replica out (and take
        its quota share): stop calling TOP, and stop proving the stream past the last good round."""
        view = self.view
        if self._stream is not None and view.at is not None:
            holds = [m.hold for m in view.members if m.replica != self.replica and m.hold is not None]
            self._stream.bound_by_peers(min([*holds, view.at]))
        if time.monotonic() - view.ok_at > self.config.liveness_seconds:
            self.quota.stop_calls(2 * self.config.heartbeat_seconds)

    async def _leave(self) -> None:
        """A graceful stop: out of the share and the leadership now, not after the liveness timeout."""
        self.leadership.lose_all(STOPPING)
        stream = self._stream
        hold = stream.hold() if stream is not None else None
        try:
            if self.link.pid is not None:
                await self.link.fetch(
                    replica_sql.STOPPED, self.replica, hold, self.config.stopped_hold_seconds
                )
        except CoordinationError as exc:
            logger.warning("could not record the stop: %s", exc, extra={"action": "replica_leave_failed"})
        finally:
            await self.link.close()

    # ---- readiness and metrics ----------------------------------------------------------------------

    def readiness(self) -> tuple[Check, dict[str, Any]]:
        """The `replica` check (heartbeats going through) and what /readyz shows about the replica set."""
        view = self.view
        age = time.monotonic() - view.ok_at if view.ok_at else math.inf
        led = self.leadership.led
        summary = (
            f"{self.replica}: {len(view.live)} live replica(s), leads {len(led)} of "
            f"{len(self.leadership.shops)} shops, {self.quota.share:.2f} TOP calls/s"
        )
        if age <= self.config.liveness_seconds:
            check = Check(True, summary)
        elif view.ok_at:
            check = Check(False, f"no heartbeat for {age:.0f} s (the others count this replica out)")
        else:
            check = Check(False, "not joined yet (no heartbeat written)")
        leaders = {shop: m.replica for m in view.members if m.live for shop in m.leads}
        details = {
            "id": self.replica,
            "live_replicas": view.live,
            "leads": led,
            "shop_leaders": {shop: leaders.get(shop) for shop in self.leadership.shops},
            "api_rate": round(self.quota.share, 3),
            "peer_connected": self.peer_connected(),
        }
        return check, details

    def on_leadership(self, listener: Callable[[str, str], None]) -> None:
        """`listener(change, shop)` hears each shop this replica acquires, releases or loses."""
        self._leadership_listeners.append(listener)

    def _count_change(self, change: str, shop: str) -> None:
        key = (change, shop)
        self._changes[key] = self._changes.get(key, 0) + 1
        for listener in self._leadership_listeners:
            listener(change, shop)

    def _register(self, registry: Registry) -> None:
        replica = self.replica
        registry.gauge(
            "replica_info",
            "Always 1; this replica's name in the replica label",
            lambda: [({"replica": replica}, 1)],
        )
        registry.gauge(
            "replicas_live",
            "Live replicas sharing the database and the TOP quota",
            lambda: [({}, float(len(self.view.live)))],
        )
        registry.gauge(
            "shop_led",
            "1 for each shop this replica reconciles (leads), 0 for the others",
            lambda: [({"shop": s}, float(self.leadership.leads(s))) for s in self.leadership.shops],
        )
        registry.gauge(
            "api_rate_share",
            "TOP calls per second this replica may make (its share of SYNC_API_RATE)",
            lambda: [({}, self.quota.share)],
        )
        registry.counter_from(
            "leadership_changes_total",
            "Shops this replica started leading (acquired), handed over (released) or lost, by shop",
            lambda: [({"change": c, "shop": s}, float(n)) for (c, s), n in list(self._changes.items())],
        )
        registry.counter_from(
            "api_bans_shared_total",
            "Code-7 bans passed on to the other replicas (announced) or held for (followed)",
            lambda: [
                ({"direction": "announced"}, float(self.quota.announced)),
                ({"direction": "followed"}, float(self.quota.followed)),
            ],
        )
        registry.counter_from(
            "replica_heartbeat_failures_total",
            "Heartbeat rounds that failed (the coordination connection is opened again)",
            lambda: [({}, float(self.failures))],
        )
