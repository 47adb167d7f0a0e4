"""The reconciler: keeps each shop's coverage ledger, detects gaps, and backfills them. This class only
schedules its parts:

* `reconciler.detection` — gap detection (restart, disconnect, silence, ledger holes) and the stream's
  proof; `reconciler.new_shops` — initial loads of shops the ledger does not know;
* `reconciler.gate` — backfill before resume, and the wait for other leaders;
* `reconciler.processing` — a gap report's windows read, recorded, finished, retried;
* `reconciler.sweep` — the periodic re-read that measures push loss;
* `reconciler.redrive` — unresolved trades fetched again when they are due;
* `reconciler.proof` — the rules they follow, pure.

Hooks for the TMC session: `gate` (awaited before every (re)connect) and `on_state` (connects and
disconnects; `watch` hears the messages). A side task, `run`: every SYNC_RECONCILE_SECONDS (or when the
gate asks) it records what the stream proved, looks for silence, redrives the unresolved trades that are
due, works on open reports whose windows became provable, and sweeps when due. The CLI's operations:
`backfill`, `process`, `sweep`.

With SYNC_STREAM_DURING_BACKFILL=true the gate returns at once and the side task backfills while the
stream consumes; that is correct because the store never lets an older state overwrite a newer one
(docs/design.md#modified-never-goes-backwards), whoever writes first.

Several replicas (`replicas.replica_set`, `reconciler.coordination.Coordination`): only a shop's leader
plans its initial load, reads its reports' windows, sweeps it and looks for silence; the others skip
the shop. The gate waits for the other leaders' first pass over the outages they know of (see
`reconciler.gate`). A shop whose leader dies is taken over within a heartbeat round, in the gate's
wait too. Outage windows already proven in the ledger (by another replica's stream, or by a duplicate
report of the same restart) are not read again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime

from pydantic import SecretStr

from common.errors import OrderSyncError
from common.intervals import Interval
from common.metrics import Registry
from reconciler.backfill import WindowReader
from reconciler.config import Clock, ReconcilerConfig, Shared, utc_now
from reconciler.coordination import Alone, Coordination
from reconciler.detection import GapDetector, open_gap
from reconciler.gate import Gate
from reconciler.history import HistorySource
from reconciler.initial_load import InitialLoader
from reconciler.lag import LagMeter
from reconciler.ledger import Ledger
from reconciler.metrics import CoverageMetrics, ReconcilerMetrics
from reconciler.new_shops import NewShops
from reconciler.processing import ReportProcessor
from reconciler.proof import left_to_read
from reconciler.redrive import Redrive, RedriveCounts
from reconciler.retries import RetrySchedule
from reconciler.stream_watch import StreamWatch
from reconciler.sweep import Sweeper
from reconciler.sweep_schedule import SweepSchedule
from store.errors import DATABASE_ERRORS, NotLeader
from store.fetch_apply import TradeFailures
from store.gap_reports import Cause, GapReport, PassCounts
from store.ports import LineLoader, ReconcilerStore
from store.shop_book import ShopGone
from taobao.clock import ClockSkew
from taobao.tmc.events import Connected, Disconnected, SessionEvent

logger = logging.getLogger(__name__)


class Reconciler:
    """One per daemon. Hooks for the TMC session (`gate`, `on_state`, `watch`), a side task (`run`) and
    the operations the CLI uses (`backfill`, `process`, `sweep`)."""

    def __init__(
        self,
        *,
        config: ReconcilerConfig,
        client: HistorySource,
        storage: ReconcilerStore,
        shops: Mapping[str, SecretStr],
        registry: Registry | None = None,
        coverage_metrics: CoverageMetrics | None = None,
        now: Clock = utc_now,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        coordination: Coordination | None = None,
        top_paused_since: Callable[[], datetime | None] = lambda: None,
        clock_skew: ClockSkew | None = None,
    ) -> None:
        """`top_paused_since`: when the client's app-wide pause began (None: not paused); the stream
        proves nothing past it. `clock_skew`: Taobao's clock against ours (the client's estimate): a clock
        of ours ahead of Taobao's is subtracted where lag horizons are computed; TMC message times
        feed its floor."""
        skew = clock_skew or ClockSkew()
        self.config = config
        self._client = client
        self._trades = storage.trades
        several = coordination is not None
        self.coordination: Coordination = coordination or Alone()
        registry = registry or Registry()
        self._open_records(storage, shops, registry, coverage_metrics, several=several)
        self._shared = Shared(
            config,
            self.ledger,
            self.reports,
            storage.unresolved,
            self.metrics,
            self.coordination,
            shops,  # read live: the daemon's shop book changes while it runs
            now,
            sleep,
            skew.horizon_offset,
        )
        self._watch_the_stream(storage, shops, now, top_paused_since, skew)
        self._make_passes(storage, now, sleep, several=several)
        self._prepare_rounds(registry, now)

    def _open_records(
        self,
        storage: ReconcilerStore,
        shops: Mapping[str, SecretStr],
        registry: Registry,
        coverage_metrics: CoverageMetrics | None,
        *,
        several: bool,
    ) -> None:
        """What the reconciler keeps: the ledger, gap reports, unresolved trades and its metrics."""
        # Several replicas: a backfill, sweep or load advances the ledger only while leading the shop.
        self.ledger = Ledger(storage.coverage, fence=self.coordination.fence if several else None)
        self.reports = storage.reports
        self.metrics = ReconcilerMetrics(registry, coverage_metrics, shops=list(shops))
        self.unresolved = storage.unresolved

    def _watch_the_stream(
        self,
        storage: ReconcilerStore,
        shops: Mapping[str, SecretStr],
        now: Clock,
        top_paused_since: Callable[[], datetime | None],
        skew: ClockSkew,
    ) -> None:
        """What follows the stream: failed fetches and their redrive, the session's state, the list lag."""
        self._failures = TradeFailures(
            storage.trades, self.metrics.dead_letters, policy=self.config.redrive, now=now
        )
        self.redrive = Redrive(self._shared, self._client, storage.trades, self._failures)
        self.watch = StreamWatch(
            shops,
            settle=self.config.stream_settle,
            now=now,
            paused_since=top_paused_since,
            observe_time=skew.observe_event,
        )
        self.lag = LagMeter(self.config.overlap)

    def _make_passes(
        self,
        storage: ReconcilerStore,
        now: Clock,
        sleep: Callable[[float], Awaitable[None]],
        *,
        several: bool,
    ) -> None:
        """The passes that read lists: initial loads, gap detection, report processing, sweeps and the
        gate before each (re)connect."""
        config = self.config
        self.loader = InitialLoader(
            self._client,
            storage.loads,
            self.ledger,
            self.reports,
            self.reader,
            config.initial_load,
            now=now,
            sleep=sleep,
            # The bulk path where the store has one (PostgreSQL).
            lines=storage.trades if isinstance(storage.trades, LineLoader) else None,
        )
        self.detector = GapDetector(
            self._shared, self.watch, NewShops(self._shared, self.loader, several=several), several=several
        )
        retries = RetrySchedule.for_rounds(config.tick_seconds, config.retry_cap_seconds)
        self.processor = ReportProcessor(self._shared, self.lag, self.reader, retries)
        self.sweeper = Sweeper(self._shared, self.watch, self.lag, self.reader)
        self._gate = Gate(
            self._shared, self.detector, self._recover_all, self._ask_fresh_round, several=several
        )

    def _prepare_rounds(self, registry: Registry, now: Clock) -> None:
        """The state the rounds keep between ticks: per-shop locks, shops to look at, running loads, the
        wake-up and each shop's sweep schedule."""
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._added: set[str] = set()  # served since start, not yet looked at (`add_shops`)
        self._loads: dict[str, asyncio.Task[None]] = {}  # initial loads running beside the rounds
        self.coordination.attach(self.watch, lambda shop: self._locks[shop].locked())
        self._wake = asyncio.Event()
        self._fresh_wanted = False
        self.schedule = SweepSchedule(self.config, now())
        registry.gauge(
            "reconciler_shop_sweep_idle",
            "1 while a led shop is swept on the idle period (no change for SYNC_SWEEP_IDLE_AFTER_SECONDS)",
            self._idle_samples,
        )

    def reader(self, *, within: Sequence[Interval] | None = None) -> WindowReader:
        """A reader for one pass; `within`: where it may apply what it fetched (None: anywhere)."""
        return WindowReader(
            self._client,
            self._trades,
            self.config.backfill,
            lag=self.lag,
            now=self._shared.now,
            sleep=self._shared.sleep,
            failures=self._failures,
            within=within,
            skew=self._shared.skew,
        )

    @property
    def last_gate_seconds(self) -> float | None:
        return self._gate.last_seconds

    # ---- hooks for the TMC session -------------------------------------------------------------------

    async def gate(self) -> None:
        """Before every (re)connect: detect what was missed and (by default) backfill it first. A lost
        database connection is retried with backoff: a failing gate would end the TMC session, and with
        it the daemon."""
        await self._shared.retrying_db("reconciler_gate_failed", self._gate.open)

    async def on_state(self, event: SessionEvent) -> None:
        """The session's connects and disconnects. The stream watch hears them once; what they write to
        the database is retried past lost connections (a failure here would end the TMC session)."""
        detector = self.detector
        if isinstance(event, Connected):
            at = event.at
            self.watch.connected_at(at)
            if detector.first_connected_at is None:
                detector.first_connected_at = at
            await self._shared.retrying_db("reconciler_connect_record_failed", lambda: detector.connected(at))
        elif isinstance(event, Disconnected):
            at, reason = event.at, event.reason
            segment_start = self.watch.segment_start or at
            stream = self.watch.disconnected_at(at)
            opened: set[str] = set()
            await self._shared.retrying_db(
                "reconciler_disconnect_record_failed",
                lambda: detector.disconnected(at, reason, segment_start, stream, opened),
            )

    # ---- the side task

    async def run(self) -> None:
        """Every SYNC_RECONCILE_SECONDS (or when the gate asks), a round. Database and TOP errors are
        logged and retried on the next round; defects end the daemon."""
        try:
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
                # A lost database connection that reached the round unwrapped (pg_terminate_backend, a
                # restart): the next round opens new connections.
                except (OrderSyncError, *DATABASE_ERRORS) as exc:
                    logger.error(
                        "reconciler round failed: %s; trying again next round",
                        exc,
                        extra={"action": "reconciler_round_failed"},
                    )
        finally:
            await self._stop_loads()

    async def _stop_loads(self) -> None:
        """The initial loads running beside the rounds end with the side task: none may call TOP or
        the database once the daemon closes its client and pool. A load stopped mid-way resumes from its
        plan on the next start."""
        loads = list(self._loads.values())
        for task in loads:
            task.cancel()
        await asyncio.gather(*loads, return_exceptions=True)

    async def tick(self, *, fresh: bool = False) -> None:
        """One round: the stream's proof, silence, open reports, and the sweep when it is due."""
        now = self._shared.now()
        await self.add_shops()
        await self.detector.flush_stream(now)
        await self.detector.check_silence(now)
        await self.redrive_due()
        await self.cover_by_lists(now)
        await self.recover(fresh=fresh)
        await self.sweep_due(now)
        await self._update_gauges()

    async def sweep_due(self, now: datetime) -> None:
        """Sweep the led shops whose turn has come (`reconciler.sweep_schedule`: idle shops less often);
        its leader sweeps any other."""
        led = [shop for shop in self._shared.shops if self.coordination.leads(shop)]
        for shop in self.schedule.due(led, now, self.watch.last_push):
            try:
                counts = await self.sweep(shop)
                await self.detector.scan_ledger(shop)
            except NotLeader:
                continue  # handed over mid-sweep: nothing was recorded
            self.schedule.swept(shop, self._shared.now(), found=counts.found)

    def _idle_samples(self) -> list[tuple[dict[str, str], float]]:
        now, pushes = self._shared.now(), self.watch.last_push
        led = [shop for shop in self._shared.shops if self.coordination.leads(shop)]
        return [({"shop": s}, 1.0 if self.schedule.idle(s, now, pushes) else 0.0) for s in led]

    def _ask_fresh_round(self) -> None:
        self._fresh_wanted = True
        self._wake.set()

    async def start(self) -> None:
        """Once per process: what was missed while the process was down (see `GapDetector.start`)."""
        await self.detector.start()

    # ---- recovery

    async def redrive_due(self) -> RedriveCounts:
        """Fetch the led shops' unresolved trades whose next attempt has come (`reconciler.redrive`)."""
        led = [shop for shop in self._shared.shops if self.coordination.leads(shop)]
        return await self.redrive.run(led) if led else RedriveCounts()

    async def recover(self, *, fresh: bool) -> None:
        """Work on every shop's open reports (shops in parallel, each shop's reports in order)."""
        await asyncio.gather(*(self._recover_shop(shop, fresh=fresh) for shop in self._shared.shops))

    async def _recover_all(self, fresh: bool) -> None:
        """The gate's read: every shop's reports with a part not read yet (`proof.left_to_read`); one
        read ahead already waits for its proof pass, which the rounds make, not the reconnect."""
        shops = self._shared.shops
        await asyncio.gather(*(self._recover_shop(s, fresh=fresh, unread_only=True) for s in shops))

    async def _recover_shop(self, shop: str, *, fresh: bool, unread_only: bool = False) -> None:
        if shop in self._loads:
            return  # its initial load runs beside the stream (`_load_beside`), holding its lock
        async with self._locks[shop]:
            if not self.coordination.leads(shop):
                return  # another replica reconciles it
            try:
                if await self.detector.new_shops.load_pending(shop):
                    self._loads[shop] = asyncio.create_task(self._load_beside(shop, fresh=fresh))
                    return
                now, safety_lag = self._shared.horizon_now(), self.config.safety_lag
                for report in await self.reports.open_reports(shop):
                    unread = left_to_read(report, now, safety_lag=safety_lag)
                    if unread_only and not unread:
                        continue
                    if self.processor.due(report):
                        # A part no pass has read yet is read as soon as lists can show it, on any
                        # round: an outage that ended within the safety lag of its reconnect had
                        # nothing the gate could read yet, and must not wait for the lag horizon.
                        await self.processor.process(report, fresh=fresh or unread)
            except NotLeader:
                logger.info(
                    "stopped reconciling the shop: another replica leads it now",
                    extra={"action": "reconciler_shop_handed_over", "shop": shop},
                )
            except ShopGone:
                logger.info("the shop is no longer served", extra={"action": "shop_gone", "shop": shop})

    async def _load_beside(self, shop: str, *, fresh: bool) -> None:
        """A shop's initial load, in a task of its own: a load can take hours, and no gate or round
        waits for it (docs/design.md#new-shops-beside-the-stream). Then its reports, as on a round."""
        try:
            async with self._locks[shop]:
                if not self.coordination.leads(shop) or shop not in self._shared.shops:
                    return
                go_on, planned = await self.detector.new_shops.run_due(shop)
                if planned is not None and not self.watch.connected:
                    self.detector.outage[shop] = planned
                if go_on:
                    for report in await self.reports.open_reports(shop):
                        await self.processor.process(report, fresh=fresh)
        except (NotLeader, ShopGone):
            pass  # handed over or no longer served: its next leader (or a resume) goes on
        except (OrderSyncError, *DATABASE_ERRORS) as exc:
            logger.error(
                "initial load round failed: %s; trying again next round",
                exc,
                extra={"action": "initial_load_failed", "shop": shop},
            )
        finally:
            self._loads.pop(shop, None)
            self._wake.set()

    async def loads_done(self) -> None:
        """Until the initial loads running now have ended (tests, `order-sync initial-load`)."""
        while self._loads:
            await asyncio.gather(*self._loads.values(), return_exceptions=True)

    # ---- shops that come and go while the daemon runs

    def session_of(self, shop: str) -> str:
        """`shop`'s session as served now (ShopGone once it is not)."""
        return self._shared.session_of(shop)

    def shops_changed(self, added: Iterable[str], removed: Iterable[str]) -> None:
        """The shop book changed. Added shops are looked at on the next round (their ledger, their
        initial load); removed ones leave the stream's proof, their rows and ledger stay for a resume."""
        for shop in removed:
            self.watch.unfollow(shop)
            self.schedule.forget(shop)
            self.detector.forget(shop)
            self._added.discard(shop)
        for shop in added:
            self._added.add(shop)
            self.metrics.shop_added(shop)
        self._wake.set()

    def streamed(self, shop: str, since: datetime | None) -> None:
        """TMC delivers `shop`'s messages from `since` on (its permit succeeded); None: it does not (a
        failed permit), and only the lists cover it (docs/design.md#shops-that-come-and-go)."""
        if since is None:
            self.watch.unfollow(shop)
        else:
            self.watch.follow(shop, since)

    async def cover_by_lists(self, now: datetime) -> None:
        """Shops the stream does not carry (no permit yet) are read through the lists alone: once per
        sweep period, a report from where the ledger ends up to now, unless one is still open."""
        if not self.detector.started:
            return
        for shop in self._shared.shops:
            if self.watch.follows(shop) or shop in self._loads or not self.coordination.leads(shop):
                continue
            end = await self.ledger.covered_end(shop) or await self.ledger.sync_from(shop)
            if end is None or now - end < self.config.sweep_every:
                continue
            if not await self.reports.open_reports(shop):
                await open_gap(self._shared, shop, Cause.SWEEP, Interval(end, now))

    async def add_shops(self) -> None:
        """Shops served since start: what `start` does for every shop, once each."""
        if not self.detector.started:
            return  # start() looks at every shop served then
        for shop in sorted(self._added):
            self._added.discard(shop)
            if shop in self._shared.shops:
                await self.detector.add_shop(shop, self._shared.now())

    async def process(self, report: GapReport, *, fresh: bool) -> GapReport:
        """One pass over `report` (`order-sync initial-load` goes on with the increment through it)."""
        async with self._locks[report.shop]:
            return await self.processor.process(report, fresh=fresh)

    async def backfill(self, shop: str, window: Interval) -> GapReport:
        """`order-sync backfill`: read `window` now, as proof where the lag horizon allows and fresh
        beyond it; returns the report (left open when part of the window is not provable yet)."""
        if shop not in self._shared.shops:
            raise ShopGone(shop)
        if await self.ledger.sync_from(shop) is None:
            await self.ledger.register_shop(shop, window.start)
        report = await open_gap(self._shared, shop, Cause.MANUAL, window)
        return await self.process(report, fresh=True)

    async def sweep(self, shop: str) -> PassCounts:
        """Re-read the recent proof windows of `shop` at the lowest priority (see `reconciler.sweep`)."""
        async with self._locks[shop]:
            return await self.sweeper.sweep(shop, stream_started=self.detector.first_connected_at)

    async def _update_gauges(self) -> None:
        self.metrics.coverage.set_unresolved(await self.unresolved.counts(), self._shared.shops)
        for shop in self._shared.shops:
            end = await self.ledger.covered_end(shop)
            if end is not None:
                self.metrics.coverage.set_proven_until(shop, end)
            self.metrics.coverage.set_gaps_open(shop, len(await self.reports.open_reports(shop)))
