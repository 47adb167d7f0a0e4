"""The daemon's Prometheus metrics: a small registry that renders the text exposition format 0.0.4.

Hand-written rather than prometheus-client: a few dozen series, one registry per service (so tests and
several services in one process never share a global registry), counters kept elsewhere (the TOP
client's, the TMC session's) read at scrape time, and no extra dependency in the image. The output is
checked against prometheus-client's own parser in the tests (tests/ops/test_metrics_format.py).

Families, in registration order: counters (`inc`), counters read from another object's counts,
gauges read on scrape, and histograms (`observe`). Names get the `order_sync_` prefix.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter as CountTable
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from typing import TYPE_CHECKING, Protocol

from listener.ports import TradeStore
from store.types import ApplyResult
from taobao.models import Trade

if TYPE_CHECKING:
    from listener.session import TmcSession

Labels = tuple[tuple[str, str], ...]
Samples = Iterable[tuple[Mapping[str, str], float]]
SampleReader = Callable[[], Samples]

_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

# Seconds. A stream commit is one transaction of up to SYNC_BATCH_SIZE trades.
APPLY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Seconds from Taobao's `modified` stamp (one-second resolution) to our commit.
CHANGE_LAG_BUCKETS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """Integers without a fraction, NaN and infinities the way Prometheus spells them."""
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 2**63:
        return str(int(value))
    return repr(value)


def _key(labels: Mapping[str, str]) -> Labels:
    for name in labels:
        if not _LABEL_NAME.match(name) or name.startswith("__"):
            raise ValueError(f"invalid label name {name!r}")
    return tuple(sorted((name, str(value)) for name, value in labels.items()))


def _series(name: str, labels: Labels, value: float) -> str:
    if labels:
        inner = ",".join(f'{key}="{_escape_label(val)}"' for key, val in labels)
        name = f"{name}{{{inner}}}"
    return f"{name} {format_value(value)}"


class _Family(Protocol):
    name: str
    help: str
    kind: str

    def samples(self) -> list[str]: ...


@dataclass
class Counter:
    """A counter the service bumps. Labels are given per call (`inc(reason="...")`)."""

    name: str
    help: str
    values: dict[Labels, float] = field(default_factory=dict)
    kind: str = "counter"

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        key = _key(labels)
        self.values[key] = self.values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self.values.get(_key(labels), 0.0)

    def total(self) -> float:
        return sum(self.values.values())

    def samples(self) -> list[str]:
        return [_series(self.name, labels, v) for labels, v in sorted(self.values.items())]


@dataclass
class ReadFamily:
    """A counter or gauge whose samples are read from elsewhere at scrape time."""

    name: str
    help: str
    kind: str
    read: SampleReader

    def samples(self) -> list[str]:
        rows = sorted((_key(labels), float(value)) for labels, value in self.read())
        return [_series(self.name, labels, value) for labels, value in rows]


@dataclass
class Histogram:
    """Cumulative buckets, `_sum` and `_count` per label set."""

    name: str
    help: str
    buckets: tuple[float, ...]
    kind: str = "histogram"
    _counts: dict[Labels, list[int]] = field(default_factory=dict)
    _sums: dict[Labels, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        bounds = [float(b) for b in self.buckets if not math.isinf(b)]
        if not bounds or bounds != sorted(set(bounds)):
            raise ValueError("histogram buckets must be increasing")
        self.buckets = (*bounds, math.inf)

    def observe(self, value: float, **labels: str) -> None:
        key = _key(labels)
        counts = self._counts.setdefault(key, [0] * len(self.buckets))
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                counts[i] += 1
                break
        self._sums[key] = self._sums.get(key, 0.0) + value

    def count(self, **labels: str) -> int:
        return sum(self._counts.get(_key(labels), ()))

    def sum(self, **labels: str) -> float:
        return self._sums.get(_key(labels), 0.0)

    def samples(self) -> list[str]:
        lines: list[str] = []
        for labels, counts in sorted(self._counts.items()):
            running = 0
            for bound, n in zip(self.buckets, counts, strict=True):
                running += n
                le = "+Inf" if math.isinf(bound) else format_value(bound)
                lines.append(_series(f"{self.name}_bucket", (*labels, ("le", le)), running))
            lines.append(_series(f"{self.name}_sum", labels, self._sums[labels]))
            lines.append(_series(f"{self.name}_count", labels, running))
        return lines


class Registry:
    def __init__(self, namespace: str = "order_sync") -> None:
        self._namespace = namespace
        self._families: dict[str, _Family] = {}

    def _name(self, name: str) -> str:
        full = f"{self._namespace}_{name}"
        if not _METRIC_NAME.match(full):
            raise ValueError(f"invalid metric name {full!r}")
        return full

    def counter(self, name: str, help: str) -> Counter:
        full = self._name(name)
        existing = self._families.get(full)
        if isinstance(existing, Counter):
            return existing
        if existing is not None:
            raise ValueError(f"{full} is already registered as a {existing.kind}")
        counter = Counter(full, help)
        self._families[full] = counter
        return counter

    def gauge(self, name: str, help: str, read: SampleReader) -> None:
        """A gauge read on every scrape; registering the name again replaces the reader."""
        self._register_read(name, help, "gauge", read)

    def counter_from(self, name: str, help: str, read: SampleReader) -> None:
        """A counter kept by another object (the TOP client, the TMC session), read on every scrape."""
        self._register_read(name, help, "counter", read)

    def histogram(self, name: str, help: str, buckets: Sequence[float]) -> Histogram:
        full = self._name(name)
        existing = self._families.get(full)
        if isinstance(existing, Histogram):
            return existing
        if existing is not None:
            raise ValueError(f"{full} is already registered as a {existing.kind}")
        histogram = Histogram(full, help, tuple(buckets))
        self._families[full] = histogram
        return histogram

    def _register_read(self, name: str, help: str, kind: str, read: SampleReader) -> None:
        full = self._name(name)
        existing = self._families.get(full)
        if existing is not None and not isinstance(existing, ReadFamily):
            raise ValueError(f"{full} is already registered as a {existing.kind}")
        self._families[full] = ReadFamily(full, help, kind, read)

    def render(self) -> str:
        lines: list[str] = []
        for family in self._families.values():
            lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
            lines.append(f"# TYPE {family.name} {family.kind}")
            lines += family.samples()
        return "\n".join(lines) + "\n"


class TopCallStats(Protocol):
    """What `taobao.client.ClientStats` keeps: HTTP attempts by (method, outcome), retries, bans."""

    calls: CountTable[tuple[str, str]]
    retries: CountTable[str]
    bans: int
    ban_seconds: float


class CoverageMetrics:
    """Series the reconciler keeps current; the listener only exposes them.

    `set_proven_until(shop, t)` after each interval the ledger proves complete; `ledger_lag_seconds`
    is then `now - t` at scrape time, so it keeps growing while nothing is proven. `set_gaps_open`
    after each gap scan; `add_push_loss` for every trade a backfill found that the stream never
    announced."""

    def __init__(self, registry: Registry, clock: Callable[[], datetime] | None = None) -> None:
        self._clock = clock or (lambda: datetime.now(UTC))
        self._proven_until: dict[str, datetime] = {}
        self._gaps_open: dict[str, int] = {}
        self.push_lost = registry.counter(
            "push_lost_total", "Trade changes found by reconciliation that the TMC stream never delivered"
        )
        registry.gauge(
            "ledger_lag_seconds",
            "Now minus the end of the last interval the coverage ledger proved complete, per shop",
            self._lag_samples,
        )
        registry.gauge("gaps_open", "Coverage gaps not yet backfilled, per shop", self._gap_samples)

    def set_proven_until(self, shop: str, until: datetime) -> None:
        if until.tzinfo is None:
            raise ValueError("until must be an aware datetime")
        self._proven_until[shop] = until

    def set_gaps_open(self, shop: str, count: int) -> None:
        self._gaps_open[shop] = count

    def add_push_loss(self, shop: str, count: int = 1) -> None:
        self.push_lost.inc(count, shop=shop)

    def _lag_samples(self) -> Samples:
        now = self._clock()
        return [({"shop": s}, max(0.0, (now - t).total_seconds())) for s, t in self._proven_until.items()]

    def _gap_samples(self) -> Samples:
        return [({"shop": shop}, float(n)) for shop, n in self._gaps_open.items()]


def _version() -> str:
    try:
        return metadata.version("taobao-order-sync")
    except metadata.PackageNotFoundError:
        return "unknown"


class ListenerMetrics:
    """The daemon's series, by what an operator asks: is it keeping up, is anything being lost."""

    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = registry or Registry()
        r = self.registry
        version = _version()
        r.gauge(
            "build_info", "Always 1; the release in the version label", lambda: [({"version": version}, 1)]
        )
        self.received = r.counter("tmc_messages_received_total", "TMC data messages handed to the dispatcher")
        self.duplicates = r.counter(
            "tmc_messages_duplicate_total", "Deliveries of a message id that was already being handled"
        )
        self.coalesced = r.counter(
            "tmc_messages_coalesced_total", "Messages that joined a tid already waiting for a fetch"
        )
        self.confirmed = r.counter("tmc_messages_confirmed_total", "Messages confirmed to the TMC server")
        self.left_unconfirmed = r.counter(
            "tmc_messages_unconfirmed_total", "Messages left for redelivery, by reason"
        )
        self.ack_errors = r.counter("tmc_ack_errors_total", "Confirm or fail calls that raised")
        self.dead_letters = r.counter(
            "dead_letters_total", "Inputs quarantined in the dead-letter table, by reason"
        )
        self.fetches = r.counter(
            "fullinfo_fetches_total", "Stream fullinfo fetches by outcome (after retries)"
        )
        self.batches = r.counter("store_batches_total", "Stream commit batches by outcome")
        self.trades_committed = r.counter("trades_committed_total", "Trades in committed stream batches")
        self.apply_seconds = r.histogram(
            "store_apply_seconds",
            "Time to commit one stream batch (upsert, change feed, NOTIFY)",
            APPLY_BUCKETS,
        )
        self.change_lag = r.histogram(
            "change_commit_lag_seconds",
            "From a trade's modified time at Taobao to the commit of that change here (stream)",
            CHANGE_LAG_BUCKETS,
        )
        self.coverage = CoverageMetrics(r)

    def watch_top_client(self, stats: TopCallStats) -> None:
        """Expose the TOP client's own counts: every HTTP attempt, so they match the gateway's."""

        def calls() -> Samples:
            return [({"method": m, "outcome": o}, n) for (m, o), n in list(stats.calls.items())]

        self.registry.counter_from(
            "top_calls_total", "TOP API HTTP attempts by method and outcome (retries included)", calls
        )
        self.registry.counter_from(
            "top_retries_total",
            "TOP API attempts retried after a retryable error or a ban, by method",
            lambda: [({"method": m}, n) for m, n in list(stats.retries.items())],
        )
        self.registry.counter_from(
            "top_bans_total", "Rate-limit bans (code 7) seen; every caller pauses", lambda: [({}, stats.bans)]
        )
        self.registry.counter_from(
            "top_ban_seconds_total",
            "Seconds of rate-limit bans announced by TOP",
            lambda: [({}, stats.ban_seconds)],
        )

    def watch_tmc_session(self, session: TmcSession) -> None:
        """Expose the TMC session's connection state and counters."""
        counters = session.counters

        def down_seconds() -> Samples:
            if session.connected:
                return [({}, 0.0)]
            return [({}, max(0.0, time.monotonic() - session.down_since))]

        r = self.registry
        r.gauge(
            "tmc_connected", "1 while the TMC push connection is up", lambda: [({}, float(session.connected))]
        )
        r.gauge(
            "tmc_disconnected_seconds", "How long the TMC connection has been down (0 while up)", down_seconds
        )
        r.counter_from("tmc_connects_total", "TMC connections established", lambda: [({}, counters.connects)])
        r.counter_from(
            "tmc_refusals_total", "CONNECTs the TMC server refused", lambda: [({}, counters.refusals)]
        )
        r.counter_from(
            "tmc_frames_malformed_total",
            "Frames that could not be decoded (quarantined and skipped)",
            lambda: [({}, counters.decode_errors)],
        )
        r.counter_from(
            "tmc_acks_dropped_total",
            "Confirms or fails not sent because the connection was gone (the server redelivers)",
            lambda: [({}, counters.acks_dropped)],
        )


class MeasuredStore:
    """The store as the stream's commit batcher sees it: each commit is timed, trades the store
    quarantined are counted as dead letters, and each changed trade's lag behind Taobao is observed."""

    def __init__(
        self, store: TradeStore, metrics: ListenerMetrics, clock: Callable[[], datetime] | None = None
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._clock = clock or (lambda: datetime.now(UTC))

    async def apply_trades(self, trades: Sequence[Trade], *, source: str) -> ApplyResult:
        started = time.perf_counter()
        result = await self._store.apply_trades(trades, source=source)
        self._metrics.apply_seconds.observe(time.perf_counter() - started)
        if result.rejected:
            self._metrics.dead_letters.inc(len(result.rejected), reason="invalid_trade")
        if result.changed:
            now = self._clock()
            changed = set(result.changed)
            for trade in trades:
                if trade.tid in changed and trade.modified is not None:
                    self._metrics.change_lag.observe(max(0.0, (now - trade.modified).total_seconds()))
        return result

    async def dead_letter(
        self,
        *,
        source: str,
        reason: str,
        payload: bytes | str,
        tid: int | None = None,
        shop: str | None = None,
    ) -> None:
        await self._store.dead_letter(source=source, reason=reason, payload=payload, tid=tid, shop=shop)
