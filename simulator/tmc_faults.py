"""Fault knobs of the stand-in TMC server. Mutable at runtime; every random choice uses the server's
seeded RNG, so a scenario replays the same way for the same sequence of calls."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(slots=True)
class TmcFaults:
    # Abruptly drop (TCP abort, no close frame) every live connection every N seconds.
    drop_every: float | None = None
    # Answer WebSocket upgrades with HTTP 503 until this time.monotonic() instant (see refuse_connects_for).
    refuse_until: float = 0.0
    # Fraction of deliveries sent twice (same id, back to back).
    duplicate_fraction: float = 0.0
    # Fraction of published messages held back for `reorder_delay` seconds, so later ones overtake them.
    reorder_fraction: float = 0.0
    reorder_delay: float = 0.5
    # Fraction of published messages accepted but never delivered (recorded as withheld).
    lose_fraction: float = 0.0
    # Drop messages published while no connection of their group is up: the old stream's behaviour
    # (docs/tmc-protocol.md#legacy-stream), which TMC's store-and-forward queue replaced. Recorded as
    # withheld.
    lose_while_disconnected: bool = False

    def refuse_connects_for(self, seconds: float) -> None:
        self.refuse_until = time.monotonic() + seconds

    def refusing(self) -> bool:
        return time.monotonic() < self.refuse_until
