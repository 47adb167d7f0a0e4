"""What the stand-in TMC server reports: its counters, the messages it withheld, its connections."""

from __future__ import annotations

from dataclasses import dataclass, field, fields


@dataclass(frozen=True, slots=True)
class LostMessage:
    id: int
    tid: int | None
    topic: str
    reason: str  # "lose_fraction" or "disconnected"


@dataclass(slots=True)
class TmcServerStats:
    published: int = 0
    delivered: int = 0  # first deliveries
    redelivered: int = 0  # later deliveries of the same id (timeout, Failed, dropped connection)
    confirmed: int = 0
    confirm_unknown: int = 0  # confirms of ids no longer (or never) pending: after duplicates, say
    failed: int = 0
    expired: int = 0  # in-flight messages whose confirm timeout passed
    duplicated: int = 0
    reordered: int = 0
    connections: int = 0  # accepted CONNECTs
    refused: int = 0  # refused CONNECTs (bad sign, unknown app)
    rejected_upgrades: int = 0  # WebSocket upgrades answered 503 by the refuse fault
    dropped: int = 0  # connections aborted by the drop fault
    closed: int = 0  # connections closed cleanly by the close fault
    oversized: int = 0  # published messages padded past oversize_bytes
    unknown_headers: int = 0  # pushes sent with a header the protocol does not define
    pull_requests: int = 0
    malformed: int = 0  # client frames answered with an error
    lost: list[LostMessage] = field(default_factory=list)

    def counters(self) -> dict[str, int]:
        """Every counter by name (the withheld messages aside)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "lost"}


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    number: int
    app_key: str
    group: str
    delivered: int
    in_flight: int
    pull_requests: int
