"""The market's trades as records, and the indexes list calls and the market's dice need: by tid, by
(shop, created), by (shop, modified) and by status."""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterable
from dataclasses import dataclass

from simulator.tradegen import RawTrade, Skeleton

Payload = RawTrade | Skeleton
# (modified epoch seconds, the trade as it was from then on)
Version = tuple[int, Payload]

_TOP = 2**63  # above every tid: (t, _TOP) sorts after every (t, tid)


@dataclass(slots=True)
class TradeRecord:
    """Index fields of one trade (current state) and its recent versions, oldest first."""

    tid: int
    shop: int
    type: str
    created: int
    status: str
    modified: int
    versions: list[Version]

    @property
    def current(self) -> Payload:
        return self.versions[-1][1]

    def visible_version(self, cutoff: int | None) -> Version | None:
        """The newest version whose `modified` is at or before `cutoff` (None: the current one)."""
        if cutoff is None or self.modified <= cutoff:
            return self.versions[-1]
        for version in reversed(self.versions):
            if version[0] <= cutoff:
                return version
        if self.created <= cutoff:
            # The trade existed but its versions that old were dropped (retention) or never recorded
            # (history trades): the oldest kept one is the best answer.
            return self.versions[0]
        return None

    def add_version(self, modified: int, raw: RawTrade, retention_seconds: int) -> None:
        """Append the new version and drop those older than the retention needs (the index moves apart:
        see TradeIndex.update)."""
        versions = self.versions
        versions.append((modified, raw))
        horizon = modified - retention_seconds
        while len(versions) > 1 and versions[1][0] <= horizon:
            del versions[0]


class StatusPool:
    """A set of tids with O(1) add, remove and uniform random pick."""

    __slots__ = ("_items", "_pos")

    def __init__(self) -> None:
        self._items: list[int] = []
        self._pos: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._items)

    def add(self, tid: int) -> None:
        if tid not in self._pos:
            self._pos[tid] = len(self._items)
            self._items.append(tid)

    def remove(self, tid: int) -> None:
        index = self._pos.pop(tid)
        last = self._items.pop()
        if index < len(self._items):
            self._items[index] = last
            self._pos[last] = index

    def pick(self, rng: random.Random) -> int:
        return self._items[rng.randrange(len(self._items))]


class TradeIndex:
    """Every trade's record, found by tid, by shop and time, and by status. Not thread-safe."""

    def __init__(self, shops: int, statuses: Iterable[str]) -> None:
        self._records: dict[int, TradeRecord] = {}
        self._by_created: list[list[tuple[int, int]]] = [[] for _ in range(shops)]
        self._by_modified: list[list[tuple[int, int]]] = [[] for _ in range(shops)]
        self._pools: dict[str, StatusPool] = {status: StatusPool() for status in statuses}

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, tid: int) -> bool:
        return tid in self._records

    def __getitem__(self, tid: int) -> TradeRecord:
        return self._records[tid]

    def get(self, tid: int) -> TradeRecord | None:
        return self._records.get(tid)

    def all(self) -> Iterable[TradeRecord]:
        return self._records.values()

    def of_shop(self, shop: int) -> Iterable[TradeRecord]:
        """The shop's trades by created ascending."""
        return (self._records[tid] for _, tid in self._by_created[shop])

    # ----- changing ----------------------------------------------------------------------------------

    def add(self, rec: TradeRecord, *, keep_sorted: bool = True) -> None:
        """Index a new trade. A batch may pass keep_sorted=False and call sort() once at its end."""
        self._records[rec.tid] = rec
        self._pools[rec.status].add(rec.tid)
        created, modified = self._by_created[rec.shop], self._by_modified[rec.shop]
        if keep_sorted:
            bisect.insort(created, (rec.created, rec.tid))
            bisect.insort(modified, (rec.modified, rec.tid))
        else:
            created.append((rec.created, rec.tid))
            modified.append((rec.modified, rec.tid))

    def sort(self) -> None:
        for index in (*self._by_created, *self._by_modified):
            index.sort()

    def update(self, rec: TradeRecord, modified: int, status: str) -> None:
        """The trade changed: move it in the modified and status indexes, then in its record."""
        shop_index = self._by_modified[rec.shop]
        old_key = (rec.modified, rec.tid)
        pos = bisect.bisect_left(shop_index, old_key)
        if pos < len(shop_index) and shop_index[pos] == old_key:
            del shop_index[pos]
        bisect.insort(shop_index, (modified, rec.tid))
        if status != rec.status:
            self._pools[rec.status].remove(rec.tid)
            self._pools[status].add(rec.tid)
        rec.status = status
        rec.modified = modified

    # ----- finding -----------------------------------------------------------------------------------

    def created_between(self, shop: int, start: int, end: int) -> list[TradeRecord]:
        """Trades of `shop` with start <= created <= end, by created ascending."""
        index = self._by_created[shop]
        lo = bisect.bisect_left(index, (start, -1))
        hi = bisect.bisect_right(index, (end, _TOP))
        return [self._records[tid] for _, tid in index[lo:hi]]

    def modified_candidates(self, shop: int, start: int, end: int, cutoff: int | None) -> list[TradeRecord]:
        """Trades that may have a visible version with start <= modified <= end: those whose current
        `modified` is in the window, plus (under lag) those changed after max(end, cutoff)."""
        index = self._by_modified[shop]
        lo = bisect.bisect_left(index, (start, -1))
        hi = bisect.bisect_right(index, (end, _TOP))
        tids = [tid for _, tid in index[lo:hi]]
        if cutoff is not None:
            tail = bisect.bisect_right(index, (max(end, cutoff), _TOP))
            tids.extend(tid for _, tid in index[max(tail, hi) :])
        return [self._records[tid] for tid in tids]

    def pick(self, rng: random.Random, statuses: tuple[str, ...]) -> int | None:
        """A uniformly random trade among those in `statuses` (None: there is none)."""
        total = sum(len(self._pools[s]) for s in statuses)
        if total == 0:
            return None
        r = rng.randrange(total)
        for status in statuses:
            size = len(self._pools[status])
            if r < size:
                return self._pools[status].pick(rng)
            r -= size
        return None
