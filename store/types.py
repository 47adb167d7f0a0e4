"""Values the store hands back to its callers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What one guarded upsert batch did: `changed` tids got a feed row; `unchanged` were already at
    this state or newer (invariant 2), which still counts as committed for confirming."""

    changed: tuple[int, ...]
    unchanged: tuple[int, ...]
