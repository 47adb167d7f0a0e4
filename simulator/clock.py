"""The stand-in's clock. TOP times have one-second resolution, so the market reads whole seconds.

Real time by default; tests that need a fixed history pass a `ManualClock`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Aware current time."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told to."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("ManualClock needs an aware datetime")
        self._now = start

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> datetime:
        self._now += timedelta(seconds=seconds)
        return self._now

    def set(self, value: datetime) -> None:
        if value.tzinfo is None:
            raise ValueError("ManualClock needs an aware datetime")
        self._now = value


def whole_seconds(value: datetime) -> int:
    """Epoch seconds, truncated: the resolution of every TOP time string."""
    return int(value.timestamp())


def from_seconds(value: int) -> datetime:
    return datetime.fromtimestamp(value, tz=UTC)
