"""The interfaces through which the reconciler reaches the database (docs/design.md#storage-seam), and
the bundle it is given. Each has a PostgreSQL implementation (`store.pg_reconciler` assembles them) and
an in-memory one with the same semantics (`store.memory`), for unit tests of the reconciler's parts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from store.coverage import CoverageLedger
from store.gap_reports import GapReports
from store.initial_loads import InitialLoads
from store.types import ApplyResult
from taobao.models import Trade


class DeadLetters(Protocol):
    async def dead_letter(
        self,
        *,
        source: str,
        reason: str,
        payload: bytes | str,
        tid: int | None = None,
        shop: str | None = None,
    ) -> None:
        """Quarantine input the service could not use (docs/design.md#bad-input-never-crashes)."""
        ...


class TradeWriter(DeadLetters, Protocol):
    async def apply_trades(self, trades: Sequence[Trade], *, source: str) -> ApplyResult:
        """The guarded upsert (docs/design.md#modified-never-goes-backwards): one transaction; trades that
        fail validation are quarantined as dead letters in it and reported `rejected`."""
        ...


class TradeLookup(Protocol):
    """What a backfill asks about the trades already stored."""

    async def existing_tids(self, tids: Sequence[int]) -> set[int]:
        """Which of `tids` are stored."""
        ...

    async def stored_in_window(
        self,
        shop: str,
        start: datetime,
        end: datetime,
        *,
        created_from: datetime,
        types: Sequence[str] | None,
        limit: int,
    ) -> list[tuple[int, datetime]]:
        """(tid, modified) of `shop`'s trades stored with `start <= modified <= end`, created at or after
        `created_from`, of `types` (None: any), newest `modified` first, at most `limit`."""
        ...


class ReconcilerTrades(TradeWriter, TradeLookup, Protocol):
    """The trades table as the reconciler uses it."""


@dataclass(frozen=True, slots=True)
class ReconcilerStore:
    """Everything the reconciler keeps in the database, as interfaces."""

    coverage: CoverageLedger
    reports: GapReports
    loads: InitialLoads
    trades: ReconcilerTrades
