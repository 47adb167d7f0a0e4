"""The reconciler: keeps each shop's coverage ledger, detects gaps, and backfills them.

Gap detection (each opens a gap report, see `store.gap_reports`):
* restart: at the first gate, the time from the ledger's end to now (the process was down); a new
  shop gets its initial load instead;
* disconnect: on every TMC disconnect, from where the stream's proof ends to the reconnect;
* silence: a connected shop that normally trades and sends nothing for SYNC_SILENCE_SECONDS;
* sweep: every SYNC_SWEEP_SECONDS the recent proof windows are re-read at the lowest priority, which
  measures push loss (changes the stream claimed but never delivered); holes left between proven
  stretches are opened as reports too.

Backfill before resume (the default): the TMC session awaits `gate()` before every (re)connect, and
the gate reads every open outage report before returning: proof windows up to the lag horizon, fresh
windows up to `now - SYNC_SAFETY_LAG_SECONDS`. The part of an outage younger than the horizon is read
again, as proof, once the horizon has passed it (the side task does that). With
SYNC_STREAM_DURING_BACKFILL=true the gate returns at once and the side task backfills while the stream
consumes; that is correct because the store never lets an older state overwrite a newer one
(docs/design.md#modified-never-goes-backwards), whoever writes first.

Several replicas (`replicas.replica_set`, `Coordination` below): only a shop's leader detects its new
shop's initial load, reads its reports' windows, sweeps it and looks for silence; the others skip the
shop. A replica's gate backfills the shops it leads, then waits for the other leaders' first pass over
the outages they know of (restart, disconnect, initial load) before it connects, so the group's stream
resumes after the backfill as with one replica. The wait ends early when another replica is already
connected (the group's queue is being consumed anyway: holding back would only remove capacity), and
after SYNC_GATE_PEER_WAIT_SECONDS at the latest, so a slow or stuck leader (an initial load can take
an hour) never keeps the stream down. A shop whose leader dies is taken over within a heartbeat round,
in the gate's wait too. Outage windows already proven in the ledger (by another replica's stream, or
by a duplicate report of the same restart) are not read again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import asyncpg
from pydantic import SecretStr

from common.errors import OrderSyncError
from common.identity import default_replica
from common.intervals import Interval, gaps, normalize
from common.metrics import Registry
from reconciler.backfill import BackfillConfig, ReadResult, WindowReader
from reconciler.fetching import Failure
from reconciler.initial_load import InitialLoader
from reconciler.lag import LagMeter
from reconciler.ledger import Ledger
from reconciler.load_plan import InitialLoadConfig, InitialLoadFailed
from reconciler.metrics import CoverageMetrics, ReconcilerMetrics
from reconciler.plan import SECOND, Window, floor_second, lag_horizon, plan_windows
from reconciler.stream_watch import StreamWatch
from store.coverage import ProvenBy
from store.errors import NotLeader, StoreError
from store.fetch_apply import TradeFailures
from store.gap_reports import Cause, GapReport, Outcome, PassCounts
from store.ports import ReconcilerStore
from taobao.client import TopClient
from taobao.errors import SessionExpired
from taobao.limiter import Priority
from taobao.tmc.events import Connected, Disconnected, SessionEvent

logger = logging.getLogger(__name__)

# A lost database connection that reached the round unwrapped (pg_terminate_backend, a restart): the
# next round opens new connections, so it is retried like a StoreError, never allowed to end the daemon.
# Tries of a backfill's bookkeeping (ledger proof, report counts) before the pass gives up (about 6 s).
_RECORD_ATTEMPTS = 6
_CONNECTION_ERRORS = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
)

Clock = Callable[[], datetime]
# What `listener.session` gives as the reason when the connection ended because the session was stopped.
SESSION_STOPPED = "stopped"
# Reports the gate waits for when another replica leads their shop; and that skip what is proven.
OUTAGE_CAUSES = frozenset({Cause.RESTART.value, Cause.DISCONNECT.value, Cause.INITIAL_LOAD.value})
TRIMMED_CAUSES = frozenset({Cause.RESTART.value, Cause.DISCONNECT.value})


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class ReconcilerConfig:
    overlap: timedelta = timedelta(seconds=600)
    safety_lag: timedelta = timedelta(seconds=30)
    max_span: timedelta = timedelta(hours=1)
    sweep_every: timedelta = timedelta(seconds=300)
    silence: timedelta = timedelta(seconds=900)
    silence_min_expected: float = 5.0  # messages a shop's usual rate predicts before a silence counts
    stream_settle: timedelta = timedelta(seconds=5)
    tick_seconds: float = 10.0
    retry_cap_seconds: float = 300.0  # longest wait before a partial report is tried again
    stream_during_backfill: bool = False
    initial_load_days: int = 90
    replica: str = field(default_factory=default_replica)
    peer_wait_seconds: float = 300.0  # the gate's longest wait for other replicas' backfills
    backfill: BackfillConfig = field(default_factory=BackfillConfig)
    initial_load: InitialLoadConfig = field(default_factory=InitialLoadConfig)



class Coordination(Protocol):
    """The other replicas, as the reconciler sees them (`replicas.replica_set.ReplicaSet`)."""

    def attach(self, stream: StreamWatch, busy: Callable[[str], bool]) -> None: ...

    def leads(self, shop: str) -> bool: ...

    def peer_connected(self) -> bool: ...

    async def ready(self) -> None: ...

    async def changed(self, within: float) -> None: ...

    async def fence(self, conn: Any, shop: str) -> None: ...


class Alone:
    """One replica: it leads every shop."""

    def attach(self, stream: StreamWatch, busy: Callable[[str], bool]) -> None:
        return None

    def leads(self, shop: str) -> bool:
        return True

    def peer_connected(self) -> bool:
        return False

    async def ready(self) -> None:
        return None

    async def changed(self, within: float) -> None:
        return None

    async def fence(self, conn: Any, shop: str) -> None:
        return None


class Reconciler:
    """One per daemon. Hooks for the TMC session (`gate`, `on_state`, `watch`), a side task (`run`) and
    the operations the CLI uses (`backfill`, `process`, `sweep`)."""

    def __init__(
        self,
        *,
        config: ReconcilerConfig,
        client: TopClient,
        storage: ReconcilerStore,
        shops: Mapping[str, SecretStr],
        registry: Registry | None = None,
        coverage_metrics: CoverageMetrics | None = None,
        now: Clock = utc_now,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        coordination: Coordination | None = None,
    ) -> None:
        self.config = config
        self._client = client
        self._trades = storage.trades
        self._shops = dict(shops)
        self._now = now
        self._sleep = sleep
        self.coordination: Coordination = coordination or Alone()
        self._shared = coordination is not None
        # Several replicas: a backfill, sweep or load advances the ledger only while leading the shop.
        self.ledger = Ledger(storage.coverage, fence=self.coordination.fence if self._shared else None)
        self.reports = storage.reports
        self.watch = StreamWatch(self._shops, settle=config.stream_settle, now=now)
        self.lag = LagMeter(config.overlap)
        self.metrics = ReconcilerMetrics(registry or Registry(), coverage_metrics)
        self._failures = TradeFailures(storage.trades, self.metrics.dead_letters)
        self.loader = InitialLoader(
            client,
            storage.loads,
            self.ledger,
            self.reports,
            lambda: self.reader(),
            config.initial_load,
            now=now,
            sleep=sleep,
        )
        self._locks = {shop: asyncio.Lock() for shop in self._shops}
        self.coordination.attach(self.watch, lambda shop: self._locks[shop].locked())
        self._outage: dict[str, int] = {}  # shop → the report of the outage going on (or just over)
        self._unregistered: set[str] = set()  # new shops without an initial load, until the stream is up
        self._connection_id: int | None = None
        self._first_connected_at: datetime | None = None
        self._started = False
        self._start_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._fresh_wanted = False
        self._retry_at: dict[int, tuple[float, int]] = {}  # report id → (monotonic time, attempts)
        self._next_sweep = time.monotonic() + config.sweep_every.total_seconds()
        self.last_gate_seconds: float | None = None

    def reader(self) -> WindowReader:
        return WindowReader(
            self._client,
            self._trades,
            self.config.backfill,
            lag=self.lag,
            now=self._now,
            sleep=self._sleep,
            failures=self._failures,
        )

    def session_of(self, shop: str) -> str:
        return self._shops[shop].get_secret_value()

    # ---- hooks for the TMC session -------------------------------------------------------------------------

    async def gate(self) -> None:
        """Before every (re)connect: detect what was missed and (by default) backfill it first. A lost
        database connection is retried with backoff: a failing gate would end the TMC session, and with
        it the daemon."""
        await self._retrying_db("reconciler_gate_failed", self._gate_once)

    async def _retrying_db(
        self, action: str, work: Callable[[], Awaitable[None]], *, attempts: int | None = None
    ) -> None:
        """Run `work` until it gets past database errors (StoreError), waiting longer after each; with
        `attempts`, the last error is raised after that many."""
        attempt = 0
        while True:
            try:
                await work()
                return
            except StoreError as exc:
                attempt += 1
                if attempts is not None and attempt >= attempts:
                    raise
                delay = min(self.config.retry_cap_seconds, 0.1 * 2 ** min(attempt, 10), 5.0)
                logger.warning(
                    "database error: %s; retrying in %.1f s",
                    exc,
                    delay,
                    extra={"action": action, "attempt": attempt},
                )
                await self._sleep(delay)

    async def _gate_once(self) -> None:
        started = time.monotonic()
        now = self._now()
        await self.start()
        for report_id in self._outage.values():
            await self.reports.extend(report_id, now)
        if self.config.stream_during_backfill:
            self._fresh_wanted = True
            self._wake.set()
            return
        await self.recover(fresh=True)
        if self._shared:
            # From after start(): this replica's own restart reports are among those waited for.
            await self._await_other_leaders(self._now())
        elapsed = time.monotonic() - started
        self.last_gate_seconds = elapsed
        self.metrics.gate_seconds.observe(elapsed)
        logger.info("backfill before resume took %.1f s", elapsed, extra={"action": "reconciler_gate_done"})

    async def _await_other_leaders(self, since: datetime) -> None:
        """Several replicas: until the leaders of the shops this replica does not lead have read the
        outages they know of, another replica is connected, or SYNC_GATE_PEER_WAIT_SECONDS have passed.
        Shops taken over meanwhile (their leader died) are backfilled here."""
        deadline = time.monotonic() + self.config.peer_wait_seconds
        coordination = self.coordination
        while not coordination.peer_connected():
            behind = [s for s in self._shops if not coordination.leads(s) and await self._behind(s, since)]
            if not behind:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                logger.warning(
                    "connecting although %d shop(s) led by other replicas are still backfilling: %s",
                    len(behind),
                    ", ".join(behind),
                    extra={"action": "reconciler_gate_peer_timeout"},
                )
                return
            await coordination.changed(min(left, self.config.tick_seconds))
            await self.recover(fresh=True)

    async def _behind(self, shop: str, since: datetime) -> bool:
        """An outage report of `shop` opened by `since` has not been read up to `since` (less the safety
        lag, as a fresh read does) and its leader has not given up on it yet."""
        for report in await self.reports.open_reports(shop):
            if report.cause not in OUTAGE_CAUSES or report.outcome is not None or report.detected_at > since:
                continue
            target = floor_second(min(report.window_end, since - self.config.safety_lag)) - SECOND
            if max(report.proven_from, report.fresh_until or report.window_start) < target:
                return True
        return False

    async def on_state(self, event: SessionEvent) -> None:
        """The session's connects and disconnects. The stream watch hears them once; what they write to
        the database is retried past lost connections (a failure here would end the TMC session)."""
        if isinstance(event, Connected):
            at = event.at
            self.watch.connected_at(at)
            if self._first_connected_at is None:
                self._first_connected_at = at
            await self._retrying_db("reconciler_connect_record_failed", lambda: self._on_connected(at))
        elif isinstance(event, Disconnected):
            at, reason = event.at, event.reason
            segment_start = self.watch.segment_start or at
            stream = self.watch.disconnected_at(at)
            opened: set[str] = set()
            await self._retrying_db(
                "reconciler_disconnect_record_failed",
                lambda: self._on_disconnected(at, reason, segment_start, stream, opened),
            )

    async def _on_connected(self, at: datetime) -> None:
        for shop in sorted(self._unregistered):
            await self.ledger.register_shop(shop, at)
            self._unregistered.discard(shop)
            logger.info(
                "shop followed from now on (no initial load)",
                extra={"action": "shop_registered", "shop": shop},
            )
        if self._connection_id is None:
            self._connection_id = await self.reports.connection_opened(at)
        for report_id in self._outage.values():
            await self.reports.extend(report_id, at)
        self._outage.clear()
        if self._shared and not self.coordination.peer_connected():
            # This connection resumes the group's stream: every outage lasted until now, whichever
            # replica saw it begin (its leader may connect later, or never).
            for shop in self._shops:
                for report in await self.reports.open_reports(shop):
                    if report.cause in OUTAGE_CAUSES and report.window_end < at:
                        await self.reports.extend(report.id, at)

    async def _on_disconnected(
        self,
        at: datetime,
        reason: str,
        segment_start: datetime,
        stream: Mapping[str, Interval],
        opened: set[str],
    ) -> None:
        """Record what the stream proved and open the outage reports; `opened` keeps the shops done, so
        a retry after a lost database connection opens no report twice."""
        for shop, interval in stream.items():
            await self._prove_stream(shop, interval)
        if self._connection_id is not None:
            await self.reports.connection_closed(self._connection_id, at, reason)
            self._connection_id = None
        if reason == SESSION_STOPPED:
            return  # the daemon is stopping: the next start opens a restart report from the ledger's end
        for shop in self._shops:
            start = min(self.watch.proven_end(shop) or segment_start, at)
            if start >= at or shop in opened:
                continue
            report = await self._open(shop, Cause.DISCONNECT, Interval(start, at))
            self._outage[shop] = report.id
            opened.add(shop)

    # ---- the side task

    async def run(self) -> None:
        """Every SYNC_RECONCILE_SECONDS (or when the gate asks): record what the stream proved, look for
        silence, retry open reports whose windows became provable, and sweep when it is due. Database
        and TOP errors are logged and retried on the next round; defects end the daemon."""
        await self.start()
        while True:
            try:
                async with asyncio.timeout(self.config.tick_seconds):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            fresh, self._fresh_wanted = self._fresh_wanted, False
            try:
                await self.tick(fresh=fresh)
            except (OrderSyncError, *_CONNECTION_ERRORS) as exc:
                logger.error(
                    "reconciler round failed: %s; trying again next round",
                    exc,
                    extra={"action": "reconciler_round_failed"},
                )

    async def tick(self, *, fresh: bool = False) -> None:
        now = self._now()
        await self.flush_stream(now)
        await self._check_silence(now)
        await self.recover(fresh=fresh)
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + self.config.sweep_every.total_seconds()
            for shop in self._shops:
                if not self.coordination.leads(shop):
                    continue  # its leader sweeps it
                try:
                    await self.sweep(shop)
                    await self._scan_ledger(shop)
                except NotLeader:
                    continue  # handed over mid-sweep: nothing was recorded
        await self._update_gauges()

    # ---- start

    async def start(self) -> None:
        """Once per process: new shops get an initial load planned (or start now); known shops get a
        restart report from where their ledger ends."""
        async with self._start_lock:
            if self._started:
                return
            await self.coordination.ready()  # this replica's quota share and shops are known
            now = self._now()
            for shop in self._shops:
                report = await self._detect_at_start(shop, now)
                if report is not None:
                    self._outage[shop] = report.id
            self._started = True

    async def _detect_at_start(self, shop: str, now: datetime) -> GapReport | None:
        sync_from = await self.ledger.sync_from(shop)
        load = await self.loader.state(shop)
        if sync_from is None:
            if self.config.initial_load_days > 0:
                if not self.coordination.leads(shop):
                    return None  # its leader plans the load (see _recover_shop)
                state = await self.loader.begin(shop, self.config.initial_load_days)
                self.metrics.gaps_opened.inc(cause=Cause.INITIAL_LOAD.value)
                return None if state.report_id is None else await self.reports.get(state.report_id)
            # Followed from the first connection on: its ledger starts when the stream does.
            self._unregistered.add(shop)
            return None
        if load is not None and not load.done and load.report_id is not None:
            return await self.reports.get(load.report_id)
        end = await self.ledger.covered_end(shop) or sync_from
        for report in await self.reports.open_reports(shop):
            end = max(end, report.window_end)
        if end >= now:
            return None
        return await self._open(shop, Cause.RESTART, Interval(end, now), detected_at=now)

    # ---- recovery

    async def recover(self, *, fresh: bool) -> None:
        """Work on every shop's open reports (shops in parallel, each shop's reports in order)."""
        await asyncio.gather(*(self._recover_shop(shop, fresh=fresh) for shop in self._shops))

    async def _recover_shop(self, shop: str, *, fresh: bool) -> None:
        async with self._locks[shop]:
            if not self.coordination.leads(shop):
                return  # another replica reconciles it
            try:
                await self._recover_led_shop(shop, fresh=fresh)
            except NotLeader:
                logger.info(
                    "stopped reconciling the shop: another replica leads it now",
                    extra={"action": "reconciler_shop_handed_over", "shop": shop},
                )

    async def _recover_led_shop(self, shop: str, *, fresh: bool) -> None:
        load = await self.loader.state(shop)
        new_shop = load is None and self._shared and self.config.initial_load_days > 0
        if new_shop and await self.ledger.sync_from(shop) is None:
            # A new shop whose load nobody planned yet (its leader at start died, or it was not led).
            load = await self.loader.begin(shop, self.config.initial_load_days)
            self.metrics.gaps_opened.inc(cause=Cause.INITIAL_LOAD.value)
            if load.report_id is not None and not self.watch.connected:
                self._outage[shop] = load.report_id
        if load is not None and not load.done:
            try:
                await self.loader.run(shop, self.session_of(shop))
            except InitialLoadFailed as exc:
                logger.error(
                    "initial load stopped: %s; it resumes on the next round",
                    exc,
                    extra={"action": "initial_load_failed", "shop": shop},
                )
                return
            except SessionExpired as exc:
                logger.error(
                    "initial load stopped: the shop's session was rejected (%s)",
                    exc,
                    extra={"action": "initial_load_failed", "shop": shop},
                )
                return
        for report in await self.reports.open_reports(shop):
            if not self._due(report):
                continue
            await self._process_locked(report, fresh=fresh)

    def _due(self, report: GapReport) -> bool:
        retry = self._retry_at.get(report.id)
        return retry is None or time.monotonic() >= retry[0]

    async def process(self, report: GapReport, *, fresh: bool) -> GapReport:
        async with self._locks[report.shop]:
            return await self._process_locked(report, fresh=fresh)

    async def _process_locked(
        self,
        report: GapReport,
        *,
        fresh: bool,
        priority: Priority = Priority.BACKFILL,
        source: str = "backfill",
    ) -> GapReport:
        """One pass over what is left of `report`'s window; closes it when all of it is proven."""
        shop = report.shop
        now = self._now()
        overlap = self.lag.overlap(now)
        if report.cause == Cause.INITIAL_LOAD.value and report.progress_until is None:
            return report  # the history is still loading; the increment starts where it ends
        proven_from = report.proven_from
        if report.cause in TRIMMED_CAUSES:
            proven_from = await self._proven_until(shop, proven_from, report.window_end)
        if proven_from >= report.window_end:
            await self.reports.finish(report.id, Outcome.RECOVERED, None, now)
            return await self.reports.get(report.id)
        windows = plan_windows(
            Interval(proven_from, report.window_end),
            now=now,
            safety_lag=self.config.safety_lag,
            overlap=overlap,
            max_span=self.config.max_span,
            fresh=fresh,
            fresh_from=report.fresh_until,
        )
        if not windows or self._wait_for_horizon(report, proven_from, windows, fresh=fresh):
            return report
        stream_cover = await self.ledger.intervals(
            shop, windows[0].start, windows[-1].end, kinds=[ProvenBy.STREAM]
        )
        failure_reason: str | None = None
        retryable = True
        reader = self.reader()  # one reader per pass: a trade fetched once is not fetched again
        total = PassCounts()
        # Window by window, each recorded (ledger and report) as soon as it is read, so a pass that is
        # interrupted keeps what it proved and the next one resumes after it.
        for window in windows:
            if not self.coordination.leads(shop):
                raise NotLeader(shop)  # handed over: the new leader resumes after the last window recorded
            counts = PassCounts()
            try:
                result = await reader.read(
                    shop,
                    self.session_of(shop),
                    [window],
                    priority=priority,
                    source=source,
                    counts=counts,
                    stream_cover=stream_cover,
                )
            except SessionExpired as exc:
                result = ReadResult(failure=Failure(f"session rejected: {exc}", retryable=False))
                logger.error(
                    "backfill stopped: the shop's session was rejected; configure a new one",
                    extra={"action": "backfill_session_rejected", "shop": shop},
                )
            except StoreError:
                # The batches applied before the database failed are in: they are this report's finds
                # (the next pass sees them unchanged and would not list them).
                await self._record_pass(report, counts, now, overlap, None, None)
                raise
            progress: datetime | None = None
            fresh_until: datetime | None = None
            for part in result.read:
                if part.proof:
                    await self._retrying_db(
                        "backfill_record_failed",
                        functools.partial(self.ledger.prove, shop, part.proves, ProvenBy.BACKFILL),
                        attempts=_RECORD_ATTEMPTS,
                    )
                    progress = part.end
                    self.metrics.coverage.set_proven_until(shop, part.end)
                else:
                    fresh_until = part.end
            await self._record_pass(report, counts, now, overlap, progress, fresh_until)
            total.add(counts)
            if result.failure is not None:
                failure_reason, retryable = result.failure.reason, result.failure.retryable
                break
        counts = total
        self._count(shop, report.cause, counts, purpose="backfill")
        updated = await self.reports.get(report.id)
        finished = self._now()
        if failure_reason is not None:
            outcome = Outcome.PARTIAL if retryable else Outcome.FAILED
            await self.reports.finish(report.id, outcome, failure_reason, finished)
            if retryable:
                self._schedule_retry(report.id)
        elif updated.proven_from >= updated.window_end:
            await self.reports.finish(report.id, Outcome.RECOVERED, None, finished)
            self._retry_at.pop(report.id, None)
            logger.info(
                "gap recovered: %d new, %d changed, %d unchanged, %d pushes lost",
                updated.trades_new,
                updated.trades_changed,
                updated.trades_unchanged,
                updated.push_loss,
                extra={"action": "gap_recovered", "shop": shop},
            )
        return await self.reports.get(report.id)

    async def _record_pass(
        self,
        report: GapReport,
        counts: PassCounts,
        started_at: datetime,
        overlap: timedelta,
        progress: datetime | None,
        fresh_until: datetime | None,
    ) -> None:
        """Add a window's counts and trades to the report, retried past a lost connection: trades
        applied but not recorded would be missing from the report for good."""
        await self._retrying_db(
            "backfill_record_failed",
            lambda: self.reports.add_pass(
                report.id,
                counts,
                started_at=started_at,
                progress_until=progress,
                fresh_until=fresh_until,
                overlap_seconds=overlap.total_seconds(),
            ),
            attempts=_RECORD_ATTEMPTS,
        )

    def _wait_for_horizon(
        self, report: GapReport, proven_from: datetime, windows: list[Window], *, fresh: bool
    ) -> bool:
        """Leave a report that was read ahead alone until the lag horizon passes its end (or a full
        window is provable): proving it a few seconds per round as the horizon creeps forward costs a
        list call per round and fetches nothing new."""
        if fresh or not all(w.proof for w in windows):
            return False
        end = windows[-1].end
        if end <= proven_from:
            return True  # the horizon has not passed what is proven: the window would prove nothing new
        return (
            report.fresh_until is not None
            and end < report.window_end
            and end <= report.fresh_until
            and end - windows[0].start < self.config.max_span
        )

    async def _proven_until(self, shop: str, start: datetime, end: datetime) -> datetime:
        """How far the ledger already proves `shop` from `start` on without a hole (another replica's
        stream proved an outage of this one; a duplicate report of one restart was read already)."""
        for interval in await self.ledger.intervals(shop, start, end):
            if interval.start <= start < interval.end:
                start = interval.end
        return start

    def _schedule_retry(self, report_id: int) -> None:
        _, attempts = self._retry_at.get(report_id, (0.0, 0))
        delay = min(self.config.retry_cap_seconds, self.config.tick_seconds * 2**attempts)
        self._retry_at[report_id] = (time.monotonic() + delay, attempts + 1)

    def _count(self, shop: str, cause: str, counts: PassCounts, *, purpose: str) -> None:
        if counts.brought_in:
            self.metrics.recovered.inc(counts.brought_in, shop=shop, cause=cause)
        if counts.push_loss:
            self.metrics.coverage.add_push_loss(shop, counts.push_loss)
        self.metrics.list_calls.inc(counts.list_calls, purpose=purpose)
        self.metrics.fullinfo_calls.inc(counts.fullinfo_calls, purpose=purpose)
        if counts.windows_failed:
            self.metrics.windows_failed.inc(counts.windows_failed, shop=shop)

    async def _open(
        self, shop: str, cause: Cause, window: Interval, *, detected_at: datetime | None = None
    ) -> GapReport:
        report = await self.reports.create(shop, cause, window, detected_at=detected_at or self._now())
        self.metrics.gaps_opened.inc(cause=cause.value)
        logger.warning(
            "gap detected (%s): %s .. %s",
            cause.value,
            window.start.isoformat(),
            window.end.isoformat(),
            extra={"action": "gap_detected", "shop": shop},
        )
        return report

    # ---- manual backfill

    async def backfill(self, shop: str, window: Interval) -> GapReport:
        """`order-sync backfill`: read `window` now, as proof where the lag horizon allows and fresh
        beyond it; returns the report (left open when part of the window is not provable yet)."""
        if shop not in self._shops:
            raise KeyError(shop)
        sync_from = await self.ledger.sync_from(shop)
        if sync_from is None:
            await self.ledger.register_shop(shop, window.start)
        report = await self._open(shop, Cause.MANUAL, window)
        return await self.process(report, fresh=True)

    # ---- the stream's coverage

    async def flush_stream(self, now: datetime) -> None:
        """Record in the ledger what the connected stream has proven so far."""
        for shop, interval in self.watch.provable(now).items():
            await self._prove_stream(shop, interval)

    async def _prove_stream(self, shop: str, interval: Interval) -> None:
        await self.ledger.prove(shop, interval, ProvenBy.STREAM)
        self.watch.recorded(shop, interval.end)
        self.metrics.coverage.set_proven_until(shop, interval.end)

    async def _check_silence(self, now: datetime) -> None:
        if not self.watch.connected:
            return
        silence = self.config.silence
        for shop in self._shops:
            if not self.coordination.leads(shop):
                continue  # its leader watches it (every replica sees its share of the shop's pushes)
            quiet = self.watch.silent_for(shop, now)
            if quiet is None or quiet < silence:
                continue
            if self.watch.expected_messages(shop, quiet, now) < self.config.silence_min_expected:
                continue
            last = self.watch.last_message.get(shop, now - quiet)
            self.watch.reset_silence(shop, now)
            logger.warning(
                "shop silent for %.0f s although it normally trades; re-reading the lists",
                quiet.total_seconds(),
                extra={"action": "stream_silence", "shop": shop},
            )
            await self._open(shop, Cause.SILENCE, Interval(last, now))

    # ---- sweep

    async def sweep(self, shop: str) -> PassCounts:
        """Re-read the recent proof windows at the lowest priority. Trades that come back changed had
        changes the stream never delivered; those inside stretches the stream claimed are push loss."""
        async with self._locks[shop]:
            if not self.watch.connected or not self.coordination.leads(shop):
                # Nothing to measure while the stream is away, and the outage's report is reading.
                return PassCounts()
            now = self._now()
            overlap = self.lag.overlap(now)
            sync_from = await self.ledger.sync_from(shop) or now
            # From where the last sweep ended; the first sweep of a shop starts where this process's
            # stream started (the time before that belongs to initial-load and restart reports).
            since = await self.ledger.covered_end(shop, ProvenBy.SWEEP) or self._first_connected_at
            if since is None:
                return PassCounts()
            since = max(since, sync_from)
            upper = lag_horizon(now, safety_lag=self.config.safety_lag, overlap=overlap)
            # The sweep checks what the stream claimed; stretches it did not claim are the gap reports'.
            stream_end = await self.ledger.covered_end(shop, ProvenBy.STREAM)
            if stream_end is None:
                return PassCounts()
            upper = min(upper, stream_end)
            # An open gap report owns its window: the sweep waits behind it rather than racing it.
            for report in await self.reports.open_reports(shop):
                upper = min(upper, report.window_start)
            upper = floor_second(upper)
            if since >= upper:
                return PassCounts()
            windows = plan_windows(
                Interval(since, upper),
                now=now,
                safety_lag=self.config.safety_lag,
                overlap=overlap,
                max_span=self.config.max_span,
                fresh=False,
            )
            if not windows:
                return PassCounts()
            stream_cover = await self.ledger.intervals(
                shop, windows[0].start, windows[-1].end, kinds=[ProvenBy.STREAM]
            )
            counts = PassCounts()
            try:
                result = await self.reader().read(
                    shop,
                    self.session_of(shop),
                    windows,
                    priority=Priority.SWEEP,
                    source="sweep",
                    counts=counts,
                    stream_cover=stream_cover,
                )
            except SessionExpired as exc:
                logger.error(
                    "sweep stopped: %s", exc, extra={"action": "sweep_session_rejected", "shop": shop}
                )
                return counts
            for window in result.read:
                await self.ledger.prove(shop, window.proves, ProvenBy.SWEEP)
            self._count(shop, Cause.SWEEP.value, counts, purpose="sweep")
            logger.info(
                "sweep read %d window(s): %d trades, %d brought in, %d pushes lost",
                len(result.read),
                counts.found,
                counts.brought_in,
                counts.push_loss,
                extra={"action": "sweep_done", "shop": shop},
            )
            if counts.brought_in or result.failure is not None:
                await self._sweep_report(shop, windows, result.read, counts, result.failure, now)
            return counts

    async def _sweep_report(
        self,
        shop: str,
        windows: list[Window],
        read: list[Window],
        counts: PassCounts,
        failure: Failure | None,
        now: datetime,
    ) -> None:
        """A sweep that found something leaves a report: what it brought in, and (when a window
        failed) the rest of its stretch, left open for the next rounds."""
        start, end = windows[0].start, windows[-1].end
        report = await self._open(shop, Cause.SWEEP, Interval(start, end), detected_at=now)
        progress = read[-1].end if read else None
        await self.reports.add_pass(
            report.id,
            counts,
            started_at=now,
            progress_until=progress,
            fresh_until=None,
            overlap_seconds=self.lag.overlap(now).total_seconds(),
        )
        if failure is None:
            await self.reports.finish(report.id, Outcome.RECOVERED, None, self._now())
        else:
            outcome = Outcome.PARTIAL if failure.retryable else Outcome.FAILED
            await self.reports.finish(report.id, outcome, failure.reason, self._now())

    async def _scan_ledger(self, shop: str) -> None:
        """Holes between proven stretches that no report covers (a safety net: they should not exist)."""
        sync_from = await self.ledger.sync_from(shop)
        end = await self.ledger.covered_end(shop)
        if sync_from is None or end is None or end <= sync_from:
            return
        known = await self.reports.unrecovered_windows(shop)
        holes = await self.ledger.gaps(shop, sync_from, end)
        for hole in holes:
            for left in gaps(normalize(known), hole.start, hole.end):
                await self._open(shop, Cause.SWEEP, left)
        self.metrics.coverage.set_gaps_open(shop, len(await self.reports.open_reports(shop)))

    async def _update_gauges(self) -> None:
        for shop in self._shops:
            end = await self.ledger.covered_end(shop)
            if end is not None:
                self.metrics.coverage.set_proven_until(shop, end)
            self.metrics.coverage.set_gaps_open(shop, len(await self.reports.open_reports(shop)))
