"""Compare what a database holds with the stand-in's ground truth: the check behind the demo's summary,
the end-to-end tests and the fault scenarios."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from simulator.market import Market
from taobao.models import Trade


@dataclass(slots=True)
class Comparison:
    checked: int = 0
    matched: int = 0
    lost: list[int] = field(default_factory=list)  # in the truth, not in the database
    stale: list[int] = field(default_factory=list)  # stored `modified` older than the truth's
    differs: list[int] = field(default_factory=list)  # same `modified`, some stored field differs
    extra: list[int] = field(default_factory=list)  # in the database, unknown to the market

    @property
    def ok(self) -> bool:
        return not (self.lost or self.stale or self.differs or self.extra)

    def to_json(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "matched": self.matched,
            "lost": len(self.lost),
            "stale": len(self.stale),
            "differs": len(self.differs),
            "extra": len(self.extra),
        }


def _normalised(value: Any) -> Any:
    # jsonb does not keep key order; compare through one canonical JSON spelling.
    return json.loads(json.dumps(value, sort_keys=True, ensure_ascii=False))


async def compare_with_market(
    conn: asyncpg.Connection | asyncpg.Pool, market: Market, tids: Iterable[int] | None = None
) -> Comparison:
    """Every trade of `tids` (default: every trade the market changed since it started) must be stored
    with the truth's `modified`, and every field the database stored must equal the truth's."""
    wanted = sorted(set(tids) if tids is not None else {c.tid for c in market.changes})
    rows = await conn.fetch("SELECT tid, modified, raw FROM trades WHERE tid = ANY($1::bigint[])", wanted)
    stored = {int(r["tid"]): r for r in rows}
    result = Comparison(checked=len(wanted))
    for tid in wanted:
        truth_raw = market.trade(tid)
        row = stored.get(tid)
        if truth_raw is None:
            if row is not None:
                result.extra.append(tid)
            continue
        if row is None:
            result.lost.append(tid)
            continue
        truth = Trade.model_validate(truth_raw)
        if truth.modified is not None and row["modified"] < truth.modified:
            result.stale.append(tid)
            continue
        raw = json.loads(row["raw"]) if isinstance(row["raw"], str) else row["raw"]
        truth_norm = _normalised(truth_raw)
        if any(_normalised(value) != truth_norm.get(key) for key, value in raw.items()):
            result.differs.append(tid)
            continue
        result.matched += 1
    return result
