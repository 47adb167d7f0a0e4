"""The interfaces through which the reconciler reaches the database (docs/design.md#storage-seam), and
the bundle it is given (unresolved trades: `store.unresolved`). Each has a PostgreSQL implementation
(`store.pg_reconciler` assembles them) and an in-memory one with the same semantics (`store.memory`),
for unit tests of the reconciler's parts."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from store.coverage import CoverageLedger
from store.gap_reports import GapReports
from store.initial_loads import InitialLoads
from store.types import ApplyResult, LinesLoaded, StoredVersion
from store.unresolved import TradeDebt, UnresolvedTrades
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


class FailureLog(DeadLetters, Protocol):
    """Where `store.fetch_apply.TradeFailures` writes (both the stream's store and the reconciler's)."""

    async def record_unresolved(
        self, debt: TradeDebt, *, at: datetime, delay: Callable[[int], float], history: bool
    ) -> int:
        """Record `debt` as unresolved (docs/design.md#unresolved-trades-block-proof) and, when
        `history`, its dead-letter row, in one transaction: the row's next attempt is `delay(attempts)`
        seconds after `at`, and the stretch it belongs to is cut out of the shop's proven ones. Returns
        the row's attempts."""
        ...


class TradeWriter(FailureLog, Protocol):
    async def apply_trades(self, trades: Sequence[Trade], *, source: str) -> ApplyResult:
        """The guarded upsert (docs/design.md#modified-never-goes-backwards); trades it cannot store are
        reported (`ApplyResult.refused`, `flawed`), never raised; it resolves the unresolved rows the
        stored versions pay."""
        ...


@runtime_checkable
class LineLoader(Protocol):
    """The initial load's bulk path (`store.pg_lines`), where the store has one."""

    async def load_lines(self, lines: Sequence[bytes], *, source: str) -> LinesLoaded | None:
        """Apply the plain trades of `lines` (result lines, one JSON trade each) as the guarded upsert
        does; the lines left for the per-trade path, or None when the whole chunk is left to it."""
        ...


class TradeLookup(Protocol):
    """What a backfill asks about the trades already stored."""

    async def existing_tids(self, tids: Sequence[int]) -> set[int]:
        """Which of `tids` are stored."""
        ...

    async def settled_versions(self, tids: Sequence[int]) -> dict[int, StoredVersion]:
        """The stored version of each of `tids` that is stored and owes nothing (no unresolved row), for
        deciding which listed trades need a fetch (docs/sync-rules.md#fields-tid-modified)."""
        ...

    async def confirm_reads(self, trades: Sequence[Trade]) -> None:
        """`trades` were read again and found as stored: move each stored row's read time up to the
        trade's `fetched_at` where the stored `modified` is the trade's and its read is older."""
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
    unresolved: UnresolvedTrades
