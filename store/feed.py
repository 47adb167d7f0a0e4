"""Reading the change feed: the ERP's side of docs/design.md#commit-ordered-feed.

The feed (`trade_changes`) is the truth; NOTIFY on `trade_changed` is only a doorbell. A reader keeps
the last position it processed (its cursor) and, on every doorbell and after every (re)connect, runs

    SELECT position, tid, seller_nick, status, modified, source, kind, committed_at
    FROM trade_changes WHERE position > $cursor ORDER BY position LIMIT $limit

until it gets fewer than `limit` rows. Positions are dense (1, 2, 3, ...) and become visible in order,
so this never skips a committed change, however many writers run at once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import asyncpg

from store import sql
from store.types import Change

DEFAULT_LIMIT = 1000


async def read_changes(
    conn: asyncpg.Connection | asyncpg.Pool, after: int, limit: int = DEFAULT_LIMIT
) -> list[Change]:
    """Changes with position > `after`, oldest first, at most `limit` of them."""
    if limit < 1:
        raise ValueError("limit must be positive")
    rows = await conn.fetch(sql.READ_CHANGES, after, limit)
    return [
        Change(
            position=row["position"],
            tid=row["tid"],
            seller_nick=row["seller_nick"],
            status=row["status"],
            modified=row["modified"],
            source=row["source"],
            kind=row["kind"],
            committed_at=row["committed_at"],
        )
        for row in rows
    ]


@dataclass(frozen=True, slots=True)
class Doorbell:
    """A parsed NOTIFY payload. A hint only: read the feed for the truth. Text fields may be cut to
    200 characters; `modified` is ISO 8601 with an offset."""

    position: int
    tid: int
    seller_nick: str | None
    status: str | None
    modified: str
    source: str


def parse_doorbell(payload: str) -> Doorbell:
    """Raise ValueError for a payload that is not ours."""
    data: Any = json.loads(payload)
    if not isinstance(data, dict):
        raise ValueError("doorbell payload is not a JSON object")
    try:
        return Doorbell(
            position=int(data["position"]),
            tid=int(data["tid"]),
            seller_nick=data.get("seller_nick"),
            status=data.get("status"),
            modified=str(data["modified"]),
            source=str(data["source"]),
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"doorbell payload lacks a field: {exc}") from exc
