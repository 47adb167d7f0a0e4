"""The trades table in memory: `ReconcilerTrades` with the PostgreSQL implementation's semantics, for unit
tests (see `store.memory`).

The guarded upsert is the same rule (docs/design.md#modified-never-goes-backwards): an older `modified`
never wins; an equal one wins only with different content read no earlier than the stored one. Trades
that `store.validation` refuses are reported `refused`, the rest of the batch is applied; `refuse`, when
set, plays a constraint PostgreSQL would enforce (a CHECK, a trigger): the trades it names are refused as
the PostgreSQL store's bisect would refuse them. Text replaced with U+FFFD leaves its original as a
dead letter; the unresolved rows a store pays are deleted (`store.unresolved.resolves`). The change feed
is kept as a list of (tid, kind) in commit order. Unresolved rows are kept here too (`unresolved`), and
read through `MemoryUnresolved`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from common.intervals import Interval
from store.types import ApplyResult, StoredVersion
from store.unresolved import TradeDebt, UnresolvedTrade, merged, resolves
from store.upsert import TEXT_REPLACED
from store.validation import PreparedTrade, flawed, prepare_batch, rejection, storable_text
from taobao.models import Trade

# What `PgStore` calls a trade PostgreSQL refused (store.pg.REFUSED_BY_DATABASE).
REFUSED_BY_DATABASE = "refused_by_database"


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
        self.unresolved: dict[tuple[str, int], UnresolvedTrade] = {}
        # A constraint PostgreSQL would enforce: the reason it refuses a trade, or None.
        self.refuse: Callable[[Trade], str | None] | None = None
        # Takes a stretch out of a shop's proven ones (set by `store.memory.MemoryDatabase`).
        self.cut: Callable[[str, Interval], None] = lambda shop, hole: None

    async def apply_trades(self, trades: Sequence[Trade], *, source: str) -> ApplyResult:
        if not source:
            raise ValueError("source must name who fetched the trades (e.g. 'stream', 'backfill')")
        prepared, refused = prepare_batch(trades)
        if self.refuse is not None:
            reasons = {p.trade.tid: self.refuse(p.trade) for p in prepared}
            refused += [
                rejection(p.trade, f"PostgreSQL refused it ({reasons[p.trade.tid]})", REFUSED_BY_DATABASE)
                for p in prepared
                if reasons[p.trade.tid] is not None
            ]
            prepared = [p for p in prepared if reasons[p.trade.tid] is None]
        changed: list[int] = []
        for p in prepared:
            if p.replaced:
                shop = p.trade.seller_nick
                self.dead_letters.append(DeadLetter(source, TEXT_REPLACED, p.original, p.trade.tid, shop))
            stored = self.rows.get(p.trade.tid)
            if stored is not None and not _wins(p, stored):
                continue
            self.rows[p.trade.tid] = StoredTrade(p.trade, p.modified, p.content_hash, source)
            self.feed.append((p.trade.tid, "created" if stored is None else "updated"))
            changed.append(p.trade.tid)
        self._resolve([p for p in prepared if not p.flaws])
        changed_set = set(changed)
        return ApplyResult(
            changed=tuple(sorted(changed)),
            unchanged=tuple(p.trade.tid for p in prepared if p.trade.tid not in changed_set),
            refused=tuple(refused),
            flawed=tuple(flawed(p) for p in prepared if p.flaws),
            replaced=tuple(p.trade.tid for p in prepared if p.replaced),
        )

    def _resolve(self, whole: Sequence[PreparedTrade]) -> None:
        """`sql.APPLY_TRADE_BATCH` (step 4): the rows the stored versions pay."""
        read_at = {p.trade.tid: p.trade.fetched_at for p in whole}
        for key, row in list(self.unresolved.items()):
            stored = self.rows.get(row.tid)
            if row.tid in read_at and stored is not None and resolves(row, stored.modified, read_at[row.tid]):
                del self.unresolved[key]

    async def record_unresolved(
        self, debt: TradeDebt, *, at: datetime, delay: Callable[[int], float], history: bool
    ) -> int:
        shop = storable_text(debt.shop)
        if history:
            await self.dead_letter(
                source=debt.source, reason=debt.reason, payload=debt.payload or b"", tid=debt.tid, shop=shop
            )
        old = self.unresolved.get((shop, debt.tid))
        if old is None:
            row = UnresolvedTrade(
                shop=shop,
                tid=debt.tid,
                source=storable_text(debt.source),
                kind=debt.kind,
                reason=storable_text(debt.reason),
                attempts=1,
                first_failure=at,
                last_failure=at,
                next_attempt=at,
                belongs=debt.belongs,
                modified=debt.modified,
                stored=debt.stored,
            )
        else:
            row = merged(
                old, dataclasses.replace(debt, reason=storable_text(debt.reason)), at=at, next_attempt=at
            )
        row = dataclasses.replace(row, next_attempt=at + timedelta(seconds=delay(row.attempts)))
        self.unresolved[(shop, debt.tid)] = row
        self.cut(shop, row.belongs)
        return row.attempts

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

    async def settled_versions(self, tids: Sequence[int]) -> dict[int, StoredVersion]:
        owed = {tid for _, tid in self.unresolved}
        return {
            tid: StoredVersion(self.rows[tid].modified, self.rows[tid].trade.fetched_at)
            for tid in tids
            if tid in self.rows and tid not in owed
        }

    async def confirm_reads(self, trades: Sequence[Trade]) -> None:
        for trade in trades:
            row = self.rows.get(trade.tid)
            read, stored_read = trade.fetched_at, None if row is None else row.trade.fetched_at
            if row is None or read is None or stored_read is None or row.modified != trade.modified:
                continue
            if stored_read < read:
                moved = row.trade.model_copy(update={"fetched_at": read})
                self.rows[trade.tid] = dataclasses.replace(row, trade=moved)

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
    """The upsert's guard (store.sql.APPLY_TRADE_BATCH): does `new` replace `stored`?"""
    if new.modified != stored.modified:
        return new.modified > stored.modified
    if new.content_hash == stored.content_hash:
        return False
    stored_read, new_read = stored.trade.fetched_at, new.trade.fetched_at
    return stored_read is None or (new_read is not None and new_read >= stored_read)


class MemoryUnresolved:
    """`store.unresolved.UnresolvedTrades` over `MemoryTrades.unresolved`."""

    def __init__(self, trades: MemoryTrades) -> None:
        self._trades = trades

    async def rows(self, shop: str | None = None) -> list[UnresolvedTrade]:
        found = [r for r in self._trades.unresolved.values() if shop is None or r.shop == shop]
        return sorted(found, key=lambda r: (r.first_failure, r.tid))

    async def due(self, shops: Sequence[str], now: datetime, limit: int) -> list[UnresolvedTrade]:
        found = [r for r in self._trades.unresolved.values() if r.shop in shops and r.next_attempt <= now]
        return sorted(found, key=lambda r: (r.next_attempt, r.tid))[:limit]

    async def within(self, shop: str, start: datetime, end: datetime) -> list[UnresolvedTrade]:
        found = [
            r
            for r in self._trades.unresolved.values()
            if r.shop == shop and r.belongs.end > start and r.belongs.start < end
        ]
        return sorted(found, key=lambda r: (r.belongs.start, r.tid))

    async def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for row in self._trades.unresolved.values():
            out[row.shop] = out.get(row.shop, 0) + 1
        return out

    async def retry_now(self, now: datetime, shop: str | None = None) -> int:
        table = self._trades.unresolved
        keys = [k for k, r in table.items() if shop is None or r.shop == shop]
        for key in keys:
            table[key] = dataclasses.replace(table[key], next_attempt=now)
        return len(keys)
