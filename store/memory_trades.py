"""The trades table in memory: `ReconcilerTrades` with the PostgreSQL implementation's semantics, for unit
tests (see `store.memory`).

The guarded upsert is the same rule (docs/design.md#modified-never-goes-backwards): an older `modified`
never wins; an equal one wins only with different content read no earlier than the stored one. Trades
that fail `store.validation` are quarantined as dead letters and reported `rejected`, the rest of the
batch is applied. The change feed is kept as a list of (tid, kind) in commit order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from store.types import ApplyResult
from store.validation import PreparedTrade, prepare_batch, storable_text
from taobao.models import Trade


@dataclass(frozen=True, slots=True)
class StoredTrade:
    trade: Trade
    modified: datetime
    content_hash: bytes
    source: str


@dataclass(frozen=True, slots=True)
class DeadLetter:
    source: str
    reason: str
    payload: bytes
    tid: int | None
    shop: str | None


class MemoryTrades:
    def __init__(self) -> None:
        self.rows: dict[int, StoredTrade] = {}
        self.dead_letters: list[DeadLetter] = []
        self.feed: list[tuple[int, str]] = []  # (tid, "created" | "updated"), in commit order

    async def apply_trades(self, trades: Sequence[Trade], *, source: str) -> ApplyResult:
        if not source:
            raise ValueError("source must name who fetched the trades (e.g. 'stream', 'backfill')")
        prepared, rejected = prepare_batch(trades)
        for r in rejected:
            self.dead_letters.append(DeadLetter(source, r.reason, r.payload, r.tid, r.shop))
        changed: list[int] = []
        for p in prepared:
            stored = self.rows.get(p.trade.tid)
            if stored is not None and not _wins(p, stored):
                continue
            self.rows[p.trade.tid] = StoredTrade(p.trade, p.modified, p.content_hash, source)
            self.feed.append((p.trade.tid, "created" if stored is None else "updated"))
            changed.append(p.trade.tid)
        changed_set = set(changed)
        return ApplyResult(
            changed=tuple(sorted(changed)),
            unchanged=tuple(p.trade.tid for p in prepared if p.trade.tid not in changed_set),
            rejected=tuple(r.tid for r in rejected),
        )

    async def dead_letter(
        self,
        *,
        source: str,
        reason: str,
        payload: bytes | str,
        tid: int | None = None,
        shop: str | None = None,
    ) -> None:
        data = payload.encode("utf-8", errors="surrogatepass") if isinstance(payload, str) else payload
        self.dead_letters.append(
            DeadLetter(
                storable_text(source),
                storable_text(reason),
                data,
                tid,
                None if shop is None else storable_text(shop),
            )
        )

    async def existing_tids(self, tids: Sequence[int]) -> set[int]:
        return {tid for tid in tids if tid in self.rows}

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
        found = [
            (row.trade.tid, row.modified)
            for row in self.rows.values()
            if row.trade.seller_nick == shop
            and start <= row.modified <= end
            and row.trade.created is not None
            and row.trade.created >= created_from
            and (types is None or row.trade.type in types)
        ]
        found.sort(key=lambda found_row: found_row[1], reverse=True)
        return found[:limit]


def _wins(new: PreparedTrade, stored: StoredTrade) -> bool:
    """The upsert's guard (store.sql.UPSERT_TRADES): does `new` replace `stored`?"""
    if new.modified != stored.modified:
        return new.modified > stored.modified
    if new.content_hash == stored.content_hash:
        return False
    stored_read, new_read = stored.trade.fetched_at, new.trade.fetched_at
    return stored_read is None or (new_read is not None and new_read >= stored_read)
