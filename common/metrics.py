"""A small Prometheus registry that renders the text exposition format 0.0.4.

One registry per daemon, passed to each part that keeps series (the listener, the reconciler, the
replica set), so tests and several daemons in one process never share a global registry. Families, in
registration order: counters (`inc`), counters read from another object's counts, gauges read on
scrape, and histograms (`observe`). Names get the `order_sync_` prefix.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

Labels = tuple[tuple[str, str], ...]
Samples = Iterable[tuple[Mapping[str, str], float]]
SampleReader = Callable[[], Samples]

_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

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
