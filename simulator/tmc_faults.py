"""Fault knobs of the stand-in TMC server and their validation. Mutable at runtime; every random choice
uses the server's seeded RNG, so a scenario replays the same way for the same sequence of calls."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from simulator.tmc_frames import UNKNOWN_HEADER_KINDS


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

    def update(self, patch: Mapping[str, Any]) -> None:
        """Apply a partial update (e.g. from the admin endpoint). Every entry is validated first, so a
        bad patch changes nothing. `refuse_for` refuses connects for that many seconds from now;
        `drop_now` and `close_now` are actions on live connections, left to whoever holds them."""
        updates: dict[str, Any] = {}
        for name, value in patch.items():
            if name in ACTIONS:
                continue
            if name == "refuse_for":
                if not isinstance(value, int | float) or value < 0:
                    raise ValueError("refuse_for must be a number of seconds >= 0")
                continue
            kind = KNOBS.get(name)
            if kind is None:
                raise ValueError(f"unknown TMC knob {name!r}; known: {sorted(KNOBS)}")
            updates[name] = _checked(name, kind, value)
        for name, value in updates.items():
            setattr(self, name, value)
        if "refuse_for" in patch:
            self.refuse_connects_for(float(patch["refuse_for"]))

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in KNOBS} | {"refusing": self.refusing()}


# The knobs a patch may set, with their types.
KNOBS: dict[str, type] = {
    "drop_every": float,
    "duplicate_fraction": float,
    "reorder_fraction": float,
    "reorder_delay": float,
    "lose_fraction": float,
    "lose_while_disconnected": bool,
    "close_every": float,
    "close_code": int,
    "close_reason": str,
    "close_next": int,
    "close_next_after": float,
    "oversize_every": int,
    "oversize_next": int,
    "oversize_bytes": int,
    "unknown_header_fraction": float,
    "unknown_header_kind": str,
    "refund_topics": bool,
}
ACTIONS = ("drop_now", "close_now")
_NULLABLE = ("drop_every", "close_every")


def _close_code_ok(code: int) -> bool:
    # Codes a server may put in a close frame: the defined ones except those reserved for "no frame".
    return code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014) or (
        3000 <= code <= 4999
    )


def _checked(name: str, kind: type, value: Any) -> Any:
    if value is None and name in _NULLABLE:
        return None
    if kind is bool and isinstance(value, bool):
        return value
    if kind is int and isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        if name == "close_code" and not _close_code_ok(value):
            raise ValueError(f"close_code {value} cannot be sent in a close frame")
        if name == "oversize_bytes" and value < 1:
            raise ValueError("oversize_bytes must be at least 1")
        return value
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        if name.endswith("_fraction") and value > 1:
            raise ValueError(f"{name} must be between 0 and 1")
        return float(value)
    if kind is str and isinstance(value, str):
        if name == "close_reason" and len(value.encode("utf-8", "replace")) > 123:
            raise ValueError("close_reason must fit in 123 UTF-8 bytes")
        if name == "close_reason" and any("\ud800" <= ch <= "\udfff" for ch in value):
            raise ValueError("close_reason must be valid Unicode (a close frame carries UTF-8)")
        if name == "unknown_header_kind" and value not in UNKNOWN_HEADER_KINDS:
            raise ValueError(f"unknown_header_kind must be one of {list(UNKNOWN_HEADER_KINDS)}")
        return value
    expected = {bool: "boolean", int: "integer >= 0", float: "number >= 0", str: "string"}[kind]
    raise ValueError(f"{name} must be a {expected}")
