"""The coverage ledger (docs/design.md#coverage-ledger): per shop, the stretches of `modified` time proven
complete and what proved them, and where each shop's ledger begins. This module holds its records and
the interface the reconciler reaches it through; `store.pg_coverage` implements it over PostgreSQL and
`store.memory` in memory.

Stretches of one kind (`proven_by`) that overlap or touch are merged as they are written, so a shop
keeps about one row per stream connection and one per stretch of backfill.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from common.intervals import Interval

# Raises (an OrderSyncError, e.g. store.errors.NotLeader) inside the transaction that is about to
# advance `shop`'s ledger when this replica may no longer do so. Its first argument is the
# implementation's connection (an asyncpg connection for PostgreSQL).
Fence = Callable[[Any, str], Awaitable[None]]


class ProvenBy(enum.StrEnum):
    """What proved a stretch complete."""

    STREAM = "stream"  # connected, every message received in it committed and confirmed
    BACKFILL = "backfill"  # an increment window below the lag horizon read completely
    SWEEP = "sweep"  # the same, by the periodic low-priority sweep
    INITIAL_LOAD = "initial_load"  # a shop's history, loaded by created time before the increment took over


@dataclass(frozen=True, slots=True)
class Coverage:
    interval: Interval
    proven_by: ProvenBy


class CoverageLedger(Protocol):
    async def prove(
        self, shop: str, interval: Interval, proven_by: ProvenBy, *, fence: Fence | None = None
    ) -> None:
        """Record `interval` as proven for `shop`, merged with the stretches of its kind it overlaps or
        touches. Writes to one shop's ledger are serialised; `fence` runs inside that serialised write
        before anything is changed, and what it raises aborts the write."""
        ...

    async def withdraw(self, shop: str, interval: Interval, kinds: Collection[ProvenBy]) -> bool:
        """Take `interval` out of `shop`'s stretches proven by `kinds` (a proof found wanting: the
        stretch becomes a gap again and is read again); whether anything was proven there."""
        ...

    async def coverage(
        self, shop: str, lo: datetime | None = None, hi: datetime | None = None
    ) -> list[Coverage]:
        """The stored stretches of `shop` that reach into `[lo, hi)`, by start."""
        ...

    async def covered_end(self, shop: str, kind: ProvenBy | None = None) -> datetime | None:
        """Where the newest proven stretch (of `kind`, default any) ends."""
        ...

    async def sync_from(self, shop: str) -> datetime | None:
        """Where `shop`'s ledger begins (None: the shop is new to the service)."""
        ...

    async def register_shop(self, shop: str, sync_from: datetime) -> datetime:
        """Start `shop`'s ledger at `sync_from` unless it already has one; returns where it begins."""
        ...
