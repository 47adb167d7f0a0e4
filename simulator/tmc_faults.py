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
    # Close every live connection cleanly (a close frame) every N seconds, with this code and reason.
    # The default reason ends in a NUL: the server builds the reason from an error text it does not
    # clean (an assumption; nothing public shows the reasons production sends besides the idle close).
    close_every: float | None = None
    close_code: int = 1011
    close_reason: str = "reach max idle time\x00"
    # Close the next N connections the same way, each once it has been up `close_next_after` seconds:
    # live ones first, else the next to connect (so one close is sure to land on a client that
    # reconnects now and then).
    close_next: int = 0
    close_next_after: float = 0.5
    # Make every Nth published message (0: none), and the next `oversize_next` ones, oversize: its
    # content is padded past `oversize_bytes`. The message stays that big on every redelivery, as a
    # really big message would; what makes real messages big is unknown, so the padding is one field.
    oversize_every: int = 0
    oversize_next: int = 0
    oversize_bytes: int = 2 * 1024 * 1024 + 1024
    # Fraction of pushes that carry a header this protocol version does not define, as a newer server
    # might send. "value_format": a Custom header whose value has an unknown format byte and a counted
    # string after it (top-link readers read unknown formats as counted strings); "header_type": a
    # header of an unknown type followed by a counted string (an assumption: no reader can skip it).
    unknown_header_fraction: float = 0.0
    unknown_header_kind: str = "value_format"
    # Also publish the refund topics (taobao_refund_RefundCreated, then RefundSuccess), each carrying
    # the trade's tid, whenever the market refunds a sub-order; an app subscribed to them gets both.
    refund_topics: bool = False

    def refuse_connects_for(self, seconds: float) -> None:
        self.refuse_until = time.monotonic() + seconds

    def refusing(self) -> bool:
        return time.monotonic() < self.refuse_until
