"""Values the store hands back to its callers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What one guarded upsert batch did: `changed` tids got a feed row; `unchanged` were already at
    this state or newer (docs/design.md#modified-never-goes-backwards), which still counts as committed for
    confirming.

    `rejected` tids failed validation (e.g. no `modified`): each was quarantined as a dead-letter row
    in the same transaction and the rest of the batch was applied (docs/design.md#bad-input-never-crashes).
    The quarantine is committed, so a caller may confirm the message that announced them; the reconciler is
    the backstop. A tid can be both rejected and changed/unchanged when the batch also held a valid version of
    it."""

    changed: tuple[int, ...]
    unchanged: tuple[int, ...]
    rejected: tuple[int, ...] = ()


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
