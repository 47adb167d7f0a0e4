"""What a TMC session reports: each decoded data message, and the connection's state changes."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class TmcMessage:
    """One pushed message. `content` is the JSON text, already gunzipped when it came as bytes."""

    id: int
    topic: str
    content: str
    time: datetime | None = None
    nick: str | None = None
    user_id: int | None = None
    # Set by the stand-in and by some production deliveries; not relied upon.
    retried: int | None = None


@dataclass(frozen=True, slots=True)
class Connected:
    at: datetime
    token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Disconnected:
    at: datetime
    reason: str
    uptime: float  # seconds the connection was up


@dataclass(frozen=True, slots=True)
class Refused:
    at: datetime
    status_code: int | None
    status_phrase: str | None
    consecutive: int  # refusals in a row, reset by a successful CONNECTACK


SessionEvent = Connected | Disconnected | Refused
