"""Unresolved trades (docs/design.md#unresolved-trades-block-proof): trades the service could not fetch or
store, kept per shop and tid until a later fetch stores them. This module holds the records, the rules
both implementations share, and the interface; `store.pg_unresolved` implements it over PostgreSQL
(`unresolved_trades`) and `store.memory` in memory.

What a row does, and where each rule is enforced:

* **It blocks proof.** No stretch of the coverage ledger covers the stretch a row belongs to
  (`belongs`): the ledger's `prove` leaves it out, and recording a row cuts it out of the stretches
  already proven (`without`). Both happen under the shop's ledger lock, so the rule holds whichever
  comes first. Once the row is gone the hole stays: gap detection opens a report for it, whose read
  proves it (docs/design.md#coverage-ledger).
* **It keeps its gap report open**: a report with a row in its window is not recovered
  (`reconciler.proof.conclusion`).
* **It is retried** (a redrive, `reconciler.redrive`) when `next_attempt` comes, after a jittered,
  capped backoff on its number of attempts (`common.backoff.delay_after`).
* **It is resolved by a store of the trade, from any path**, in the same transaction as the upsert
  (`resolves`): when the stored version is at least the newest one known of it (`modified`), or, when
  none is known, when that version was read after the last failure. A store that had to leave fields
  empty (`stored`) resolves nothing: it records the row again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from common.intervals import Interval, gaps

SECOND = timedelta(seconds=1)


def second_of(moment: datetime) -> Interval:
    """The whole second `moment` falls in: TOP times have one-second resolution."""
    start = moment.replace(microsecond=0)
    return Interval(start, start + SECOND)


@dataclass(frozen=True, slots=True)
class TradeDebt:
    """One failure to fetch or store a trade, as `store.fetch_apply.TradeFailures.record` writes it."""

    shop: str
    tid: int
    source: str
    kind: str
    reason: str
    belongs: Interval
    modified: datetime | None = None
    stored: bool = False
    payload: bytes | None = None


@dataclass(frozen=True, slots=True)
class UnresolvedTrade:
    shop: str
    tid: int
    source: str
    kind: str
    reason: str
    attempts: int
    first_failure: datetime
    last_failure: datetime
    next_attempt: datetime
    belongs: Interval
    modified: datetime | None
    stored: bool

    def to_json(self, now: datetime) -> dict[str, object]:
        return {
            "shop": self.shop,
            "tid": self.tid,
            "source": self.source,
            "kind": self.kind,
            "reason": self.reason,
            "attempts": self.attempts,
            "first_failure": self.first_failure.isoformat(),
            "last_failure": self.last_failure.isoformat(),
            "next_attempt": self.next_attempt.isoformat(),
            "age_seconds": round((now - self.first_failure).total_seconds(), 1),
            "belongs_from": self.belongs.start.isoformat(),
            "belongs_until": self.belongs.end.isoformat(),
            "modified": None if self.modified is None else self.modified.isoformat(),
            "stored": self.stored,
        }


def merged(old: UnresolvedTrade, debt: TradeDebt, *, at: datetime, next_attempt: datetime) -> UnresolvedTrade:
    """A row failing again: its first source and failure stay, its stretch grows to hold both, the
    newest version known wins, the rest is the latest failure's (`sql.RECORD_UNRESOLVED` does the same)."""
    newest = old.modified if debt.modified is None else max(old.modified or debt.modified, debt.modified)
    return UnresolvedTrade(
        shop=old.shop,
        tid=old.tid,
        source=old.source,
        kind=debt.kind,
        reason=debt.reason,
        attempts=old.attempts + 1,
        first_failure=old.first_failure,
        last_failure=at,
        next_attempt=next_attempt,
        belongs=Interval(min(old.belongs.start, debt.belongs.start), max(old.belongs.end, debt.belongs.end)),
        modified=newest,
        stored=debt.stored,
    )


def resolves(row: UnresolvedTrade, stored_modified: datetime, read_at: datetime | None) -> bool:
    """Whether storing a version of the trade pays the debt (`stored_modified`: the `modified` the
    trades table holds after the store; `read_at`: when the version applied was read, None if unknown)."""
    if row.modified is not None:
        return stored_modified >= row.modified
    return read_at is not None and read_at >= row.last_failure


def without(interval: Interval, holes: Iterable[Interval]) -> list[Interval]:
    """`interval` less the stretches unresolved trades belong to: what a proof of it may record."""
    return gaps(holes, interval.start, interval.end)


class UnresolvedTrades(Protocol):
    """The read side, and what the redrive and the command do. Rows are written by
    `store.fetch_apply.TradeFailures.record` (through the trade store) and deleted by the stores that
    pay them."""

    async def rows(self, shop: str | None = None) -> list[UnresolvedTrade]:
        """Every row (of `shop`), oldest failure first."""
        ...

    async def due(self, shops: Sequence[str], now: datetime, limit: int) -> list[UnresolvedTrade]:
        """Rows of `shops` whose next attempt has come, the most overdue first, at most `limit`."""
        ...

    async def within(self, shop: str, start: datetime, end: datetime) -> list[UnresolvedTrade]:
        """Rows of `shop` whose stretch reaches into `[start, end)`."""
        ...

    async def counts(self) -> dict[str, int]:
        """Rows per shop (shops without any are left out)."""
        ...

    async def retry_now(self, now: datetime, shop: str | None = None) -> int:
        """Make every row (of `shop`) due at `now`; how many."""
        ...
