"""Values the store hands back to its callers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from store.validation import Rejection


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What one guarded upsert did: `changed` tids got a feed row; `unchanged` were already at this
    state or newer (docs/design.md#modified-never-goes-backwards), which still counts as committed for
    confirming.

    `refused` trades were not stored (validation refused them, or PostgreSQL did and the batch was
    bisected to find them); `flawed` ones were stored with fields PostgreSQL cannot hold left empty
    (their tids are among `changed`/`unchanged`). The store writes nothing about either: the caller
    records each as unresolved (`store.fetch_apply.apply_fetched` does) before it settles them
    (docs/design.md#bad-input-never-crashes). `replaced`: stored tids whose text had U+0000 or lone
    surrogates replaced; their originals were written as dead-letter rows in the same transaction.
    A tid can be both refused and changed/unchanged when the batch also held a storable version of it."""

    changed: tuple[int, ...]
    unchanged: tuple[int, ...]
    refused: tuple[Rejection, ...] = ()
    flawed: tuple[Rejection, ...] = ()
    replaced: tuple[int, ...] = ()

    @property
    def rejected(self) -> tuple[int, ...]:
        """The tids of `refused`."""
        return tuple(r.tid for r in self.refused)


@dataclass(frozen=True, slots=True)
class StoredVersion:
    """A stored trade's `modified`, and when that state was last read from TOP (None: unknown)."""

    modified: datetime
    fetched_at: datetime | None


@dataclass(frozen=True, slots=True)
class Change:
    """One row of the change feed (`trade_changes`): trade `tid` reached `status`/`modified` at
    `position`. Positions are dense and commit-ordered; `kind` is `created` or `updated`."""

    position: int
    tid: int
    seller_nick: str | None
    status: str | None
    modified: datetime
    source: str
    kind: str
    committed_at: datetime


@dataclass(frozen=True, slots=True)
class LinesLoaded:
    """What one chunk of result lines did on the bulk path (`store.pg_lines`): `taken` lines applied
    (`inserted` + `updated` tids got a feed row, `unchanged` tids were already at that state or newer),
    and the 0-based indexes of the lines `leftover` for the per-trade path."""

    taken: int
    inserted: int
    updated: int
    unchanged: int
    leftover: tuple[int, ...]
