"""Ground truth the stand-in exposes to tests: what every trade looks like now, and how it got there."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

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
