"""The service's Prometheus series, kept and rendered by prometheus-client.

One registry per daemon (its own `CollectorRegistry`, never the library's global one), passed to each
part that keeps series (the listener, the reconciler, the replica set), so tests and several daemons in
one process never share series. Names get the `order_sync_` prefix. What the parts register:

- `counter(name, help, labels=(...))`: a counter the service bumps (`inc(reason="...")`); its label
  names are declared up front, and `touch(...)` makes a labelled series exist at 0 before its first
  event, so `increase(...[1h]) > 0` fires on the first one after a restart.
- `histogram(name, help, buckets, labels=(...))`: `observe(value)`.
- `gauge(name, help, read)` and `counter_from(name, help, read)`: series read at scrape time from
  another object (the TOP client's counts, the TMC session's state); `read` returns (labels, value)
  pairs, so their label names need no declaring. Registering the name again replaces the reader.
- `watch_process()`: prometheus-client's process collector (`process_resident_memory_bytes`,
  `process_cpu_seconds_total`, `process_open_fds`, ...).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TypeVar

import prometheus_client
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

Samples = Iterable[tuple[Mapping[str, str], float]]
SampleReader = Callable[[], Samples]

# No `<name>_created` series beside every counter and histogram: Prometheus does not need them, and
# they would double what an operator scrolls through. A library-wide switch, set once here.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
# The names the 0.0.4 text format takes unquoted (the library itself would accept any UTF-8 name).
_LABEL_NAME = re.compile(r"^(?!__)[a-zA-Z_][a-zA-Z0-9_]*$")


def _declared(labels: Sequence[str]) -> tuple[str, ...]:
    for name in labels:
        if not _LABEL_NAME.match(name):
            raise ValueError(f"invalid label name {name!r}")
    return tuple(labels)


def _label_values(family: str, declared: Sequence[str], labels: Mapping[str, object]) -> list[str]:
    if set(labels) != set(declared):
        raise ValueError(
            f"{family} has labels {sorted(declared)}, got {sorted(labels)} "
            "(declare label names when registering it: labels=(...))"
        )
    return [str(labels[name]) for name in declared]


M = TypeVar("M", prometheus_client.Counter, prometheus_client.Histogram)


def _series_of(
    metric: M,
    name: str,
    declared: tuple[str, ...],
    children: dict[tuple[tuple[str, object], ...], M],
    labels: Mapping[str, object],
) -> M:
    """The series of `metric` for `labels`, remembered by the labels as the call site passes them
    (call sites pass the same labels in the same order): checked and looked up once per call site."""
    key = tuple(labels.items())
    series = children.get(key)
    if series is None:
        values = _label_values(name, declared, labels)
        series = metric.labels(*values) if declared else metric
        children[key] = series
    return series


class Counter:
    """A counter the service bumps; `inc(amount, **labels)` with exactly the declared labels."""

    kind = "counter"

    def __init__(self, registry: Registry, name: str, help: str, labels: Sequence[str]) -> None:
        self.name = name
        self.labels = _declared(labels)
        self._metric = prometheus_client.Counter(
            name, help, labelnames=self.labels, registry=registry.collectors
        )
        self._children: dict[tuple[tuple[str, object], ...], prometheus_client.Counter] = {}

    def _series(self, labels: Mapping[str, object]) -> prometheus_client.Counter:
        return _series_of(self._metric, self.name, self.labels, self._children, labels)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        self._series(labels).inc(amount)

    def touch(self, **labels: str) -> None:
        """The series exists (at 0 until its first `inc`)."""
        self._series(labels)

    def _samples(self, suffix: str) -> Iterator[tuple[dict[str, str], float]]:
        for family in self._metric.collect():
            for sample in family.samples:
                if sample.name == f"{family.name}{suffix}":
                    yield sample.labels, sample.value

    def value(self, **labels: str) -> float:
        """One series' value (0 when it does not exist yet)."""
        _label_values(self.name, self.labels, labels)
        wanted = {k: str(v) for k, v in labels.items()}
        return next((v for found, v in self._samples("_total") if found == wanted), 0.0)

    def total(self) -> float:
        """The sum over all of its series."""
        return sum(v for _, v in self._samples("_total"))


class Histogram:
    """Cumulative buckets, `_sum` and `_count` per series."""

    kind = "histogram"

    def __init__(
        self, registry: Registry, name: str, help: str, buckets: Sequence[float], labels: Sequence[str]
    ) -> None:
        bounds = [float(b) for b in buckets if b != float("inf")]
        if not bounds or bounds != sorted(set(bounds)):
            raise ValueError("histogram buckets must be increasing")
        self.name = name
        self.labels = _declared(labels)
        self._metric = prometheus_client.Histogram(
            name, help, labelnames=self.labels, buckets=bounds, registry=registry.collectors
        )
        self._children: dict[tuple[tuple[str, object], ...], prometheus_client.Histogram] = {}

    def _series(self, labels: Mapping[str, object]) -> prometheus_client.Histogram:
        return _series_of(self._metric, self.name, self.labels, self._children, labels)

    def observe(self, value: float, **labels: str) -> None:
        self._series(labels).observe(value)

    def _sample(self, suffix: str, labels: Mapping[str, str]) -> float:
        wanted = {k: str(v) for k, v in labels.items()}
        for family in self._metric.collect():
            for sample in family.samples:
                if sample.name == f"{family.name}{suffix}" and sample.labels == wanted:
                    return sample.value
        return 0.0

    def count(self, **labels: str) -> int:
        return int(self._sample("_count", labels))

    def sum(self, **labels: str) -> float:
        return self._sample("_sum", labels)


class ReadFamily(Collector):
    """A counter or gauge whose samples are read from elsewhere at scrape time."""

    def __init__(self, name: str, help: str, kind: str, read: SampleReader) -> None:
        self.name, self.help, self.kind, self.read = name, help, kind, read

    def _family(self) -> Metric:
        # The library names a counter family without `_total`; its samples carry it.
        name = self.name.removesuffix("_total") if self.kind == "counter" else self.name
        return Metric(name, self.help, self.kind)

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        sample = f"{family.name}_total" if self.kind == "counter" else family.name
        for labels, value in sorted(self.read(), key=lambda pair: sorted(pair[0].items())):
            family.add_sample(sample, {k: str(v) for k, v in labels.items()}, float(value))
        yield family


Family = Counter | Histogram | ReadFamily


class Registry:
    def __init__(self, namespace: str = "order_sync") -> None:
        self._namespace = namespace
        self.collectors = CollectorRegistry()
        self._families: dict[str, Family] = {}

    def _name(self, name: str) -> str:
        full = f"{self._namespace}_{name}"
        if not _METRIC_NAME.match(full):
            raise ValueError(f"invalid metric name {full!r}")
        return full

    def _existing(self, full: str, kind: type[Family]) -> Family | None:
        existing = self._families.get(full)
        if existing is not None and not isinstance(existing, kind):
            raise ValueError(f"{full} is already registered as a {existing.kind}")
        return existing

    def counter(self, name: str, help: str, labels: Sequence[str] = ()) -> Counter:
        """The counter `name` (the same one when registered again with the same labels)."""
        full = self._name(name)
        existing = self._existing(full, Counter)
        if isinstance(existing, Counter):
            if existing.labels != tuple(labels):
                raise ValueError(f"{full} is already registered with labels {existing.labels}")
            return existing
        counter = Counter(self, full, help, labels)
        self._families[full] = counter
        return counter

    def histogram(
        self, name: str, help: str, buckets: Sequence[float], labels: Sequence[str] = ()
    ) -> Histogram:
        full = self._name(name)
        existing = self._existing(full, Histogram)
        if isinstance(existing, Histogram):
            return existing
        histogram = Histogram(self, full, help, buckets, labels)
        self._families[full] = histogram
        return histogram

    def gauge(self, name: str, help: str, read: SampleReader) -> None:
        """A gauge read on every scrape; registering the name again replaces the reader."""
        self._register_read(name, help, "gauge", read)

    def counter_from(self, name: str, help: str, read: SampleReader) -> None:
        """A counter kept by another object (the TOP client, the TMC session), read on every scrape."""
        self._register_read(name, help, "counter", read)

    def _register_read(self, name: str, help: str, kind: str, read: SampleReader) -> None:
        full = self._name(name)
        existing = self._existing(full, ReadFamily)
        if isinstance(existing, ReadFamily):
            existing.read = read
            return
        family = ReadFamily(full, help, kind, read)
        self.collectors.register(family)
        self._families[full] = family

    def watch_process(self) -> None:
        """The process's own series (memory, CPU, open files), where the platform has /proc."""
        ProcessCollector(registry=self.collectors)

    def render(self) -> str:
        """The text exposition format 0.0.4."""
        return generate_latest(self.collectors).decode("utf-8")
