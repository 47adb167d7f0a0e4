"""The /metrics text is valid Prometheus exposition (checked with prometheus-client's parser), and the
registry's parts (histograms, counters read from elsewhere, the reconciler's coverage series, the timing
store wrapper) report what happened."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from common.metrics import Registry
from daemon.metrics import DaemonMetrics
from listener.metrics import ListenerMetrics, MeasuredStore
from store.types import ApplyResult
from taobao.models import Trade
from tests.ops.helpers import metric, parse_metrics


@dataclass
class CallStats:
    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    retries: Counter[str] = field(default_factory=Counter)
    bans: int = 0
    ban_seconds: float = 0.0


def test_every_listener_family_parses_with_help_and_type() -> None:
    metrics = DaemonMetrics()
    stats = CallStats()
    stats.calls[("taobao.trade.fullinfo.get", "ok")] += 3
    stats.calls[("taobao.trade.fullinfo.get", "rate_limited")] += 1
    stats.bans, stats.ban_seconds = 1, 7.0
    metrics.watch_top_client(stats)
    metrics.stream.received.inc(5)
    metrics.stream.dead_letters.inc(reason='bad "frame"\nwith \\ escapes')
    metrics.coverage.set_proven_until("店铺-a", datetime.now(UTC))
    metrics.stream.apply_seconds.observe(0.02)
    text = metrics.registry.render()

    families = {f.name: f for f in text_string_to_metric_families(text)}
    declared = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    helped = [line.split()[2] for line in text.splitlines() if line.startswith("# HELP")]
    assert declared == helped
    assert len(declared) == len(set(declared))
    # The parser drops `_total` from counter family names; every declared family came through.
    assert {name.removesuffix("_total") for name in declared} == set(families)

    samples = parse_metrics(text)
    assert metric(samples, "order_sync_tmc_messages_received_total") == 5
    assert metric(samples, "order_sync_dead_letters_total", reason='bad "frame"\nwith \\ escapes') == 1
    assert metric(samples, "order_sync_top_calls_total", method="taobao.trade.fullinfo.get") == 4
    assert metric(samples, "order_sync_top_calls_total", outcome="rate_limited") == 1
    assert metric(samples, "order_sync_top_bans_total") == 1
    assert metric(samples, "order_sync_top_ban_seconds_total") == 7
    assert metric(samples, "order_sync_build_info") == 1
    assert metric(samples, "order_sync_ledger_lag_seconds", shop="店铺-a") < 60


def test_histogram_buckets_are_cumulative_and_end_at_the_count() -> None:
    registry = Registry()
    histogram = registry.histogram("latency_seconds", "A latency", (0.1, 1.0, 10.0), labels=("shop",))
    for value in (0.05, 0.1, 0.5, 2.0, 20.0):
        histogram.observe(value, shop="a")
    histogram.observe(0.3, shop="b")

    samples = parse_metrics(registry.render())
    buckets = {
        labels["le"]: v for labels, v in samples["order_sync_latency_seconds_bucket"] if labels["shop"] == "a"
    }
    assert buckets == {"0.1": 2, "1.0": 3, "10.0": 4, "+Inf": 5}
    assert metric(samples, "order_sync_latency_seconds_count") == 6
    assert math.isclose(metric(samples, "order_sync_latency_seconds_sum", shop="b"), 0.3)
    assert histogram.count(shop="a") == 5
    assert math.isclose(histogram.sum(shop="a"), 22.65)


def test_values_render_as_prometheus_spells_them() -> None:
    registry = Registry()
    registry.gauge("odd", "Odd values", lambda: [({"kind": "nan"}, math.nan), ({"kind": "inf"}, math.inf)])
    samples = parse_metrics(registry.render())
    assert math.isnan(metric(samples, "order_sync_odd", kind="nan"))
    assert metric(samples, "order_sync_odd", kind="inf") == math.inf


def test_registry_refuses_what_prometheus_would_reject() -> None:
    registry = Registry()
    counter = registry.counter("things_total", "Things", labels=("kind",))
    with pytest.raises(ValueError, match="only goes up"):
        counter.inc(-1, kind="a")
    with pytest.raises(ValueError, match="declare label names"):
        counter.inc(1, other="x")
    with pytest.raises(ValueError, match="declare label names"):
        counter.inc(1)
    with pytest.raises(ValueError, match="invalid label name"):
        registry.counter("odd_total", "Odd", labels=("bad-label",))
    with pytest.raises(ValueError, match="already registered as a counter"):
        registry.gauge("things_total", "Things again", lambda: [])
    with pytest.raises(ValueError, match="invalid metric name"):
        registry.counter("with space", "Bad")
    with pytest.raises(ValueError, match="increasing"):
        registry.histogram("h", "Bad buckets", (1.0, 0.5))
    assert registry.counter("things_total", "Same", labels=("kind",)) is counter
    with pytest.raises(ValueError, match="already registered with labels"):
        registry.counter("things_total", "Same", labels=("other",))


def test_coverage_series_follow_what_the_reconciler_sets() -> None:
    now = datetime(2024, 11, 11, 12, 0, tzinfo=UTC)
    metrics = DaemonMetrics()
    coverage = metrics.coverage
    coverage._clock = lambda: now
    text = metrics.registry.render()
    assert "order_sync_ledger_lag_seconds{" not in text  # nothing proven yet: no series, not a fake 0

    coverage.set_proven_until("a", now - timedelta(seconds=90))
    coverage.set_gaps_open("a", 2)
    coverage.set_gaps_open("b", 0)
    coverage.add_push_loss("a", 3)
    samples = parse_metrics(metrics.registry.render())
    assert metric(samples, "order_sync_ledger_lag_seconds", shop="a") == 90
    assert metric(samples, "order_sync_gaps_open", shop="a") == 2
    assert metric(samples, "order_sync_gaps_open", shop="b") == 0
    assert metric(samples, "order_sync_push_lost_total", shop="a") == 3
    with pytest.raises(ValueError, match="aware"):
        coverage.set_proven_until("a", datetime(2024, 1, 1))


class RecordingStore:
    def __init__(self, result: ApplyResult) -> None:
        self.result = result
        self.dead: list[str] = []

    async def apply_trades(self, trades: Sequence[Trade], *, source: str) -> ApplyResult:
        return self.result

    async def dead_letter(
        self,
        *,
        source: str,
        reason: str,
        payload: bytes | str,
        tid: int | None = None,
        shop: str | None = None,
    ) -> None:
        self.dead.append(reason)

    async def record_unresolved(self, *args: object, **kwargs: object) -> int:
        raise AssertionError("not used here")


async def test_measured_store_times_commits_and_observes_the_lag_of_changed_trades() -> None:
    now = datetime(2024, 11, 11, 12, 0, tzinfo=UTC)
    metrics = ListenerMetrics()
    inner = RecordingStore(ApplyResult(changed=(1,), unchanged=(2,)))
    store = MeasuredStore(inner, metrics, clock=lambda: now)
    trades = [
        Trade.model_validate({"tid": tid, "modified": "2024-11-11 19:59:30"})  # GMT+8: 30 s before `now`
        for tid in (1, 2, 3)
    ]
    result = await store.apply_trades(trades, source="stream")
    await store.dead_letter(source="tmc", reason="bad frame", payload=b"x")

    assert result is inner.result
    assert inner.dead == ["bad frame"]
    assert metrics.apply_seconds.count() == 1
    assert metrics.change_lag.count() == 1  # only the changed trade
    assert metrics.change_lag.sum() == 30
    # What the store refused is counted once, by the commit's path (store.fetch_apply.apply_fetched).
    assert metrics.dead_letters.value(reason="invalid_trade") == 0
