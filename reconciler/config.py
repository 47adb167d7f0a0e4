"""The reconciler's settings (`daemon.app.make_reconciler_config` builds them from `Settings`) and what
every part of one reconciler shares."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from pydantic import SecretStr

from common.backoff import BackoffPolicy
from common.identity import default_replica
from reconciler.backfill import BackfillConfig
from reconciler.coordination import Coordination
from reconciler.ledger import Ledger
from reconciler.load_plan import InitialLoadConfig
from reconciler.metrics import ReconcilerMetrics
from reconciler.retries import db_policy, retrying_db
from store.fetch_apply import REDRIVE_POLICY
from store.gap_reports import GapReports
from store.unresolved import UnresolvedTrades

T = TypeVar("T")
Clock = Callable[[], datetime]
Sleep = Callable[[float], Awaitable[None]]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class ReconcilerConfig:
    overlap: timedelta = timedelta(seconds=600)
    safety_lag: timedelta = timedelta(seconds=30)
    max_span: timedelta = timedelta(hours=1)
    sweep_every: timedelta = timedelta(seconds=300)
    # A shop with no change seen this long (None: never idle) is swept every `idle_sweep_every`
    # (`reconciler.sweep_schedule`).
    idle_after: timedelta | None = timedelta(hours=1)
    idle_sweep_every: timedelta = timedelta(minutes=30)
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
    redrive: BackoffPolicy = REDRIVE_POLICY  # when an unresolved trade is tried again
    redrive_batch: int = 100  # unresolved trades tried per shop and round at most
    # Sweeps may take this share of the app's TOP rate (`api_rate`, calls per second): with many shops
    # the time between two sweeps of a shop grows beyond `sweep_every` (`sweep_interval`).
    api_rate: float = 40.0
    reconcile_share: float = 0.1
    calls_per_sweep: float = 2.0  # an idle shop's sweep: the counting call and at most one page


def sweep_interval(config: ReconcilerConfig, shops: int) -> float:
    """Seconds between two sweeps of the shops a replica leads: SYNC_SWEEP_SECONDS, stretched so that
    sweeping `shops` takes at most SYNC_RECONCILE_SHARE of SYNC_API_RATE
    (docs/operations.md#many-shops)."""
    budget = config.reconcile_share * config.api_rate
    needed = shops * config.calls_per_sweep / budget if budget > 0 else 0.0
    return max(config.sweep_every.total_seconds(), needed)


@dataclass(frozen=True, slots=True)
class Shared:
    """What the parts of one reconciler share: its settings, the ledger, the reports and the unresolved
    trades it keeps, its series, the other replicas, the shops and their sessions, and its clock."""

    config: ReconcilerConfig
    ledger: Ledger
    reports: GapReports
    unresolved: UnresolvedTrades
    metrics: ReconcilerMetrics
    coordination: Coordination
    shops: Mapping[str, SecretStr]
    now: Clock = utc_now
    sleep: Sleep = asyncio.sleep
    # Taobao's clock minus ours where ours is ahead (`taobao.clock.ClockSkew.horizon_offset`), else 0.
    skew: Callable[[], timedelta] = lambda: timedelta(0)

    def horizon_now(self) -> datetime:
        """Now on Taobao's clock, which stamps `modified`: what lag horizons are computed from
        (docs/design.md#clock-skew). A host clock ahead of Taobao's would otherwise prove windows
        whose changes Taobao has not made visible yet."""
        return self.now() + self.skew()

    def session_of(self, shop: str) -> str:
        return self.shops[shop].get_secret_value()

    async def unresolved_in(self, shop: str, start: datetime, end: datetime) -> int:
        """How many of `shop`'s unresolved trades belong to `[start, end)`: a report over it stays open."""
        return len(await self.unresolved.within(shop, start, end))

    async def retrying_db(
        self, action: str, work: Callable[[], Awaitable[T]], *, attempts: int | None = None
    ) -> T:
        """`work()` retried past lost database connections (`reconciler.retries.retrying_db`)."""
        policy = db_policy(self.config.retry_cap_seconds)
        return await retrying_db(action, work, policy=policy, sleep=self.sleep, attempts=attempts)
