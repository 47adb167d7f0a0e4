"""What the push channel hands to the service: one decoded TMC data message (tmc.md §6)."""

from __future__ import annotations

from dataclasses import dataclass
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
