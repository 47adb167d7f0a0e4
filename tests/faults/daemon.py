"""The whole daemon in this process, its database path through a `PgProxy`, watched from outside: a
store that remembers what it committed and when, a TMC session that checks every confirm against it at
the moment it is sent (docs/design.md#confirm-after-commit), and a prober of `/readyz`.

The daemon is wired by `daemon.app` itself (`open_parts`, `assemble`); the only change is that the
store and session classes it names are recording subclasses, so whatever the product passes to them
(settings, timeouts) still reaches them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
import pytest

import daemon.app
from daemon.app import Daemon, assemble, open_parts
from daemon.settings import Settings
from listener.session import SessionTiming, TmcSession
from simulator.market import Market
from simulator.standin import StandIn, StandInConfig
from simulator.tmc_server import TmcServerConfig
from store.migrate import migrate
from store.pg import PgStore
from store.types import ApplyResult
from taobao.models import Trade
from taobao.tmc.events import TmcMessage
from tests.conftest import create_database, drop_database
from tests.faults.conftest import upstream
from tests.faults.pgproxy import PgProxy
from tests.integration.harness import daemon_settings, wait_for

# Timings scaled down to seconds (as in tests/reconciler/test_db_connections_killed.py).
FAST_DAEMON: dict[str, Any] = {
    "sync_overlap_seconds": 2,
    "sync_safety_lag_seconds": 1,
    "sync_reconcile_seconds": 0.2,
    "sync_heartbeat_seconds": 0.2,
    "sync_initial_load_days": 0,
}

# The database limits scaled down to seconds (docs/operations.md#database-timeouts).
WANTED_SETTINGS: dict[str, Any] = {
    # A database round trip unanswered this long: its connection is given up and the work retried.
    "database_timeout_seconds": 3.0,
    # A session idle inside a transaction this long is ended by PostgreSQL
    # (idle_in_transaction_session_timeout), which releases the change feed's counter row.
    "database_idle_in_transaction_seconds": 2.0,
}

# READY_DB_TIMEOUT_SECONDS is 2 by default and docs/operations.md asks for a probe timeout above it.
PROBE_TIMEOUT = 3.0


def fault_standin(seed: int) -> StandIn:
    """Two shops, a market that moves only when told, TMC redelivering after a minute unconfirmed."""
    return StandIn(
        StandInConfig(seed=seed, shops=2, market_rate=0, history_trades=10, tmc=TmcServerConfig(seed=seed))
    )


async def terminate_backends(dsn: str, client_ports: Sequence[int]) -> int:
    """End the server sessions behind the proxy's upstream sockets with these local ports (what a
    primary that died takes with it); how many were ended."""
    admin = await asyncpg.connect(dsn)
    try:
        ended = await admin.fetchval(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE client_port = ANY($1::int[])",
            list(client_ports),
        )
        return int(ended or 0)
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def fault_bench(seed: int) -> AsyncIterator[tuple[StandIn, str, PgProxy]]:
    """A started `fault_standin`, a migrated database of its own, and a proxy in front of the server."""
    standin = fault_standin(seed)
    await standin.start()
    try:
        dsn = await create_database()
        try:
            await migrate(dsn)
            async with PgProxy(*upstream()) as proxy:
                yield standin, dsn, proxy
        finally:
            await drop_database(dsn)
    finally:
        await standin.stop()


async def settle(condition: Callable[[], bool], within: float) -> bool:
    """Whether `condition` came to hold within `within` seconds (a measurement, not an assertion)."""
    try:
        await wait_for(condition, within, "a condition being measured")
    except AssertionError:
        return False
    return True


@dataclass
class Witness:
    """What the store committed and what the session confirmed, in the order it happened."""

    committed: dict[int, Any] = field(default_factory=dict)  # tid → newest `modified` committed
    received: dict[int, tuple[float, TmcMessage]] = field(default_factory=dict)  # id → (when, message)
    confirmed: list[tuple[float, int]] = field(default_factory=list)  # (time.monotonic(), message id)
    early: list[int] = field(default_factory=list)  # confirmed before their state was committed
    applies: dict[int, tuple[float, float | None]] = field(default_factory=dict)  # id → (start, end)

    def on_commit(self, trades: Sequence[Trade]) -> None:
        # A trade returned unchanged is covered by an equal or newer stored row, so it counts too.
        for trade in trades:
            current = self.committed.get(trade.tid)
            if trade.modified is not None and (current is None or trade.modified > current):
                self.committed[trade.tid] = trade.modified

    def on_confirm(self, message_id: int) -> None:
        _, message = self.received.get(message_id, (0.0, None))
        committed = None if message is None else self.committed.get(tid_of(message))
        if message is None or committed is None or message.time is None or committed < message.time:
            self.early.append(message_id)
        self.confirmed.append((time.monotonic(), message_id))

    def confirms_between(self, start: float, end: float) -> int:
        return sum(1 for at, _ in self.confirmed if start <= at < end)

    def first_confirm_of_news(self, since: float) -> float | None:
        """When the first message received at or after `since` was confirmed (None: none was)."""
        return next((at for at, mid in self.confirmed if self.received[mid][0] >= since), None)

    def writing(self) -> bool:
        """Whether a store write is in progress now."""
        return any(end is None for _, end in self.applies.values())

    def stuck_at(self, moment: float, longer_than: float) -> bool:
        """Whether, at `moment`, a store write had been in progress for more than `longer_than` s."""
        return any(
            start < moment - longer_than and (end is None or end > moment)
            for start, end in self.applies.values()
        )

    def longest_apply(self, now: float | None = None) -> float:
        """The longest store write so far, counting one still in progress up to `now`."""
        now = time.monotonic() if now is None else now
        return max(((end or now) - start for start, end in self.applies.values()), default=0.0)


def tid_of(message: TmcMessage) -> int:
    return int(json.loads(message.content)["tid"])


def recording_classes(witness: Witness) -> tuple[type[PgStore], type[TmcSession]]:
    """A store and a session that tell `witness` about every write and every confirm."""

    class RecordingStore(PgStore):
        async def apply_trades(self, trades: Sequence[Trade], *, source: str) -> ApplyResult:
            key = len(witness.applies)
            started = time.monotonic()
            witness.applies[key] = (started, None)
            try:
                result = await super().apply_trades(trades, source=source)
            finally:
                witness.applies[key] = (started, time.monotonic())
            witness.on_commit(trades)
            return result

    class RecordingSession(TmcSession):
        def __init__(self, **kwargs: Any) -> None:
            handler = kwargs.pop("handler")

            async def recording_handler(message: TmcMessage) -> None:
                witness.received[message.id] = (time.monotonic(), message)
                await handler(message)

            super().__init__(handler=recording_handler, **kwargs)

        async def confirm(self, message_id: int) -> None:
            witness.on_confirm(message_id)
            await super().confirm(message_id)

        async def confirm_all(self, message_ids: Sequence[int]) -> int:
            for message_id in message_ids:
                witness.on_confirm(message_id)
            return await super().confirm_all(message_ids)

    return RecordingStore, RecordingSession


@dataclass(frozen=True)
class Sample:
    asked: float  # time.monotonic() when the request went out
    at: float  # when its answer came, or when the probe gave up
    answered: bool  # within PROBE_TIMEOUT
    ready: bool
    problems: tuple[str, ...]


@dataclass
class ReadinessLog:
    """`/readyz` asked again as soon as the previous request ends (at least `every` seconds apart),
    each with PROBE_TIMEOUT, as a load balancer's probe would."""

    port: int
    every: float = 0.2
    samples: list[Sample] = field(default_factory=list)

    async def run(self) -> None:
        url = f"http://127.0.0.1:{self.port}/readyz"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT)) as http:
            while True:
                asked = time.monotonic()
                try:
                    async with http.get(url) as resp:
                        body = await resp.json()
                    sample = Sample(
                        asked, time.monotonic(), True, resp.status == 200, tuple(body["problems"])
                    )
                except (aiohttp.ClientError, TimeoutError) as exc:
                    sample = Sample(asked, time.monotonic(), False, False, (f"no answer ({exc!r})",))
                self.samples.append(sample)
                await asyncio.sleep(max(0.0, asked + self.every - time.monotonic()))  # the probe period

    def asked_between(self, start: float, end: float) -> list[Sample]:
        return [s for s in self.samples if start <= s.asked < end]

    def first_ready_after(self, moment: float) -> Sample | None:
        return next((s for s in self.samples if s.asked >= moment and s.ready), None)

    @property
    def ready(self) -> bool:
        return bool(self.samples) and self.samples[-1].ready

    def timeline(self, origin: float, start: float, end: float) -> str:
        """The samples asked in [start, end), runs of equal verdicts collapsed, times from `origin`."""
        parts: list[str] = []
        last: tuple[bool, bool] | None = None
        for s in self.asked_between(start, end):
            verdict = (s.answered, s.ready)
            if verdict != last:
                word = "green" if s.ready else ("red" if s.answered else "no answer")
                parts.append(
                    f"{s.asked - origin:+.1f}s {word}" + (f" {list(s.problems)}" if s.problems else "")
                )
                last = verdict
        return "; ".join(parts)


@dataclass
class RunningDaemon:
    daemon: Daemon
    task: asyncio.Task[None]
    readiness: ReadinessLog
    witness: Witness

    @property
    def stopped(self) -> bool:
        return self.task.done()

    async def streaming(self, confirms: int = 20) -> None:
        """Returns once `confirms` messages were confirmed: the stream runs, the fault can come."""
        await wait_for(
            lambda: len(self.witness.confirmed) >= confirms or self.stopped, 20, "the stream to run"
        )
        assert not self.stopped, "the daemon stopped"

    async def caught_up(self, standin: StandIn, within: float) -> bool:
        """Whether, within `within` seconds, every message the stand-in published was confirmed."""
        tmc = standin.tmc.stats
        done = await settle(lambda: tmc.confirmed == tmc.published or self.stopped, within)
        assert not self.stopped, "the daemon stopped"
        return done


@contextlib.asynccontextmanager
async def market_running(daemon: RunningDaemon, market: Market, rate: float) -> AsyncIterator[None]:
    """The market changing `rate` times a second and the daemon confirming, until the block ends."""
    market.start(rate)
    try:
        await daemon.streaming()
        yield
    finally:
        market.pause()


async def market_runs_for(market: Market, seconds: float) -> None:
    """Returns once the running market has made `seconds` worth of changes at its rate."""
    target = market.change_count + int(market.rate * seconds)
    await wait_for(lambda: market.change_count >= target, seconds * 3, f"{seconds:g} s of market changes")


@contextlib.asynccontextmanager
async def watched_daemon(
    witness: Witness,
    standin: StandIn,
    dsn: str,
    session_timing: SessionTiming | None = None,
    **overrides: Any,
) -> AsyncIterator[RunningDaemon]:
    """The daemon against `standin` and database `dsn` (through a proxy, say), running and ready; stopped
    on the way out. `session_timing` scales the TMC session's timers (pings) down."""
    store_class, session_class = recording_classes(witness)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(daemon.app, "PgStore", store_class)
        patch.setattr(daemon.app, "TmcSession", session_class)
        settings: Settings = daemon_settings(standin, dsn, **(FAST_DAEMON | overrides))
        async with open_parts(settings) as (store, client):
            built = assemble(settings, store, client, session_timing=session_timing)
            async with _running(built, witness) as running:
                yield running


@contextlib.asynccontextmanager
async def _running(built: Daemon, witness: Witness) -> AsyncIterator[RunningDaemon]:
    service = built.service
    task = asyncio.create_task(service.run(), name="faulted-daemon")
    sampler: asyncio.Task[None] | None = None
    try:
        await wait_for(lambda: service.http_port is not None or task.done(), 15, "the daemon's HTTP port")
        assert service.http_port is not None, "the daemon stopped before it listened"
        readiness = ReadinessLog(service.http_port)
        sampler = asyncio.create_task(readiness.run(), name="readiness-probe")
        await wait_for(lambda: readiness.ready or task.done(), 30, "the daemon to be ready")
        assert not task.done(), "the daemon stopped before it was ready"
        yield RunningDaemon(built, task, readiness, witness)
    finally:
        if sampler is not None:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
        service.request_stop("test over")
        async with asyncio.timeout(30):
            await asyncio.gather(task, return_exceptions=True)
