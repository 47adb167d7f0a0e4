"""A new shop's initial load, resumable: one load per shop, cut into parts (a TOPATS task, or one day of
sold.get), each `pending`, `started` (its task was created) or `done`. This module holds the records and
the interface the reconciler reaches them through; `store.pg_loads` implements it over PostgreSQL
(`initial_loads`, `initial_load_parts`) and `store.memory` in memory."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Protocol

from common.intervals import Interval

TOPATS: Final = "topats"
SOLD_GET: Final = "sold_get"


@dataclass(frozen=True, slots=True)
class LoadState:
    shop: str
    since: datetime
    until: datetime
    method: str
    state: str  # "running" or "done"
    trades: int
    report_id: int | None

    @property
    def done(self) -> bool:
        return self.state == "done"


@dataclass(frozen=True, slots=True)
class LoadPart:
    start: datetime
    end: datetime  # exclusive
    method: str
    task_id: int | None
    state: str  # "pending", "started" or "done"
    trades: int

    @property
    def done(self) -> bool:
        return self.state == "done"


class InitialLoads(Protocol):
    async def state(self, shop: str) -> LoadState | None: ...

    async def plan(
        self,
        shop: str,
        *,
        since: datetime,
        until: datetime,
        method: str,
        parts: Sequence[Interval],
        at: datetime,
    ) -> None:
        """Atomically: the shop's load of created time `[since, until)` by `method`, its `parts`
        (pending), its gap report (cause `initial_load`, window `[since, at]`, detected at `at`) and the
        start of the shop's ledger at `since`. A shop has one load: planning it again is refused (a
        StoreError)."""
        ...

    async def parts(self, shop: str) -> list[LoadPart]:
        """The load's parts, by start."""
        ...

    async def start_part(self, shop: str, part_start: datetime, task_id: int) -> None:
        """The part's export task was created: it is `started`, with `task_id`."""
        ...

    async def finish_part(self, shop: str, part_start: datetime, trades: int) -> None: ...

    async def replan(self, shop: str, method: str, parts: Sequence[Interval]) -> None:
        """Atomically: the parts not done are replaced by `parts` (pending, by `method`), and the load's
        method becomes `method`."""
        ...

    async def finish(self, shop: str) -> None:
        """The load is done; its trade count is the sum of its parts'."""
        ...
