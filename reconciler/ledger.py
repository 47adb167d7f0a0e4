"""The coverage ledger as the reconciler reads it (docs/design.md#coverage-ledger): the store's ledger
(`store.coverage.CoverageLedger`) with the replicas' fence applied to what needs leadership, and the
questions the reconciler asks of it (the union of proven stretches, the holes between them)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from common.intervals import Interval, gaps, normalize
from store.coverage import Coverage, CoverageLedger, Fence, ProvenBy


class Ledger:
    def __init__(self, store: CoverageLedger, *, fence: Fence | None = None) -> None:
        self.store = store
        # Several replicas: only a shop's leader records backfills, sweeps and loads. What the stream
        # proved needs no leadership (every replica hears its share of the shop's pushes).
        self._fence = fence

    async def prove(self, shop: str, interval: Interval, proven_by: ProvenBy) -> None:
        fence = None if proven_by is ProvenBy.STREAM else self._fence
        await self.store.prove(shop, interval, proven_by, fence=fence)

    async def withdraw_list_proofs(self, shop: str, interval: Interval) -> bool:
        """Withdraw what list reads (backfill, sweep) proved in `interval`: it becomes a gap again. The
        stream's proof there stands (it never relied on the lists)."""
        return await self.store.withdraw(shop, interval, (ProvenBy.BACKFILL, ProvenBy.SWEEP))

    async def coverage(
        self, shop: str, lo: datetime | None = None, hi: datetime | None = None
    ) -> list[Coverage]:
        return await self.store.coverage(shop, lo, hi)

    async def intervals(
        self,
        shop: str,
        lo: datetime | None = None,
        hi: datetime | None = None,
        kinds: Iterable[ProvenBy] | None = None,
    ) -> list[Interval]:
        """The union of `shop`'s proven stretches (of `kinds`, default all) reaching into `[lo, hi)`."""
        wanted = None if kinds is None else set(kinds)
        rows = await self.store.coverage(shop, lo, hi)
        return normalize(c.interval for c in rows if wanted is None or c.proven_by in wanted)

    async def gaps(self, shop: str, lo: datetime, hi: datetime) -> list[Interval]:
        """What is not proven in `[lo, hi)`."""
        return gaps(await self.intervals(shop, lo, hi), lo, hi)

    async def covered_end(self, shop: str, kind: ProvenBy | None = None) -> datetime | None:
        return await self.store.covered_end(shop, kind)

    async def sync_from(self, shop: str) -> datetime | None:
        return await self.store.sync_from(shop)

    async def register_shop(self, shop: str, sync_from: datetime) -> datetime:
        return await self.store.register_shop(shop, sync_from)
