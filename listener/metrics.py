"""A small Prometheus text exposition (format 0.0.4): counters the listener bumps, gauges read on scrape.

Hand-written rather than prometheus-client: a dozen series, no global registry to reset between tests,
and no extra dependency. Swap in the client if histograms are ever needed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

Labels = tuple[tuple[str, str], ...]
GaugeReader = Callable[[], Iterable[tuple[Mapping[str, str], float]]]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _series(name: str, labels: Labels, value: float) -> str:
    if labels:
        inner = ",".join(f'{key}="{_escape(val)}"' for key, val in labels)
        name = f"{name}{{{inner}}}"
    number = int(value) if float(value).is_integer() else value
    return f"{name} {number}"


@dataclass
class Counter:
    name: str
    help: str
    values: dict[Labels, float] = field(default_factory=dict)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        self.values[key] = self.values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self.values.get(tuple(sorted(labels.items())), 0.0)

    def total(self) -> float:
        return sum(self.values.values())


@dataclass
class Gauge:
    name: str
    help: str
    read: GaugeReader


class Registry:
    def __init__(self, namespace: str = "order_sync") -> None:
        self._namespace = namespace
        self._counters: dict[str, Counter] = {}
        self._gauges: dict[str, Gauge] = {}

    def counter(self, name: str, help: str) -> Counter:
        full = f"{self._namespace}_{name}"
        return self._counters.setdefault(full, Counter(full, help))

    def gauge(self, name: str, help: str, read: GaugeReader) -> None:
        full = f"{self._namespace}_{name}"
        self._gauges[full] = Gauge(full, help, read)

    def render(self) -> str:
        lines: list[str] = []
        for counter in self._counters.values():
            lines += [f"# HELP {counter.name} {counter.help}", f"# TYPE {counter.name} counter"]
            lines += [_series(counter.name, labels, v) for labels, v in sorted(counter.values.items())]
        for gauge in self._gauges.values():
            lines += [f"# HELP {gauge.name} {gauge.help}", f"# TYPE {gauge.name} gauge"]
            for labels, v in gauge.read():
                lines.append(_series(gauge.name, tuple(sorted(labels.items())), v))
        return "\n".join(lines) + "\n"


class ListenerMetrics:
    """The listener's counters, by what an operator asks: is it keeping up, is anything being lost."""

    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = registry or Registry()
        r = self.registry
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
        self.dead_letters = r.counter("dead_letters_total", "Messages quarantined in the dead-letter table")
        self.fetches = r.counter("fullinfo_fetches_total", "Stream fullinfo calls by outcome")
        self.batches = r.counter("store_batches_total", "Stream commit batches by outcome")
        self.trades_committed = r.counter("trades_committed_total", "Trades in committed stream batches")
