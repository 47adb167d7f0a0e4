"""Ground truth the stand-in exposes to tests: what every trade looks like now, and how it got there."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from simulator.clock import from_seconds
from simulator.trade_index import Payload, TradeRecord
from simulator.tradegen import RawTrade
from taobao.timefmt import format_top_time


def trade_digest(raw: Mapping[str, Any]) -> str:
    """A stable digest of a raw trade: compare it with the digest of what a consumer stored. A lone
    surrogate a buyer typed is hashed as its code point (UTF-8 itself cannot carry one)."""
    text = json.dumps(raw, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class TradeTruth:
    tid: int
    seller_nick: str
    status: str
    type: str
    created: datetime
    modified: datetime
    digest: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "tid": self.tid,
            "seller_nick": self.seller_nick,
            "status": self.status,
            "type": self.type,
            "created": format_top_time(self.created),
            "modified": format_top_time(self.modified),
            "digest": self.digest,
        }


@dataclass(frozen=True, slots=True)
class TruthSnapshot:
    trades: dict[int, TradeTruth]
    change_count: int
    last_seq: int
    counters: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return {
            # JSON object keys are strings; the tid inside each entry stays an integer.
            "trades": {str(tid): truth.to_json() for tid, truth in self.trades.items()},
            "trade_count": len(self.trades),
            "change_count": self.change_count,
            "last_seq": self.last_seq,
            "counters": self.counters,
        }


@dataclass(frozen=True, slots=True)
class TruthRows:
    """What a truth snapshot is built from, captured at one instant."""

    rows: list[tuple[int, int, str, str, int, int, Payload]]
    change_count: int
    counters: dict[str, int]

    @classmethod
    def of(cls, records: Iterable[TradeRecord], change_count: int, counters: dict[str, int]) -> TruthRows:
        rows = [(r.tid, r.shop, r.status, r.type, r.created, r.modified, r.current) for r in records]
        return cls(rows, change_count, counters)


class TruthBuilder:
    """Snapshots from captured rows. Digests are cached per version (a version is never edited in place),
    so building is safe in a worker thread."""

    def __init__(self, materialize: Callable[[Payload], RawTrade], nicks: Sequence[str]) -> None:
        self._materialize = materialize
        self._nicks = nicks
        self._digests: dict[int, tuple[Payload, str]] = {}

    def build(self, rows: TruthRows, digests: bool = True) -> TruthSnapshot:
        trades: dict[int, TradeTruth] = {}
        for tid, shop, status, trade_type, created, modified, payload in rows.rows:
            trades[tid] = TradeTruth(
                tid=tid,
                seller_nick=self._nicks[shop],
                status=status,
                type=trade_type,
                created=from_seconds(created),
                modified=from_seconds(modified),
                digest=self._digest(tid, payload) if digests else None,
            )
        return TruthSnapshot(
            trades=trades, change_count=rows.change_count, last_seq=rows.change_count, counters=rows.counters
        )

    def _digest(self, tid: int, payload: Payload) -> str:
        cached = self._digests.get(tid)
        if cached is not None and cached[0] is payload:
            return cached[1]
        digest = trade_digest(self._materialize(payload))
        self._digests[tid] = (payload, digest)
        return digest
