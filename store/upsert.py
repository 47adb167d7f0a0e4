"""The guarded upsert: one batch of trades → trades + trade_orders + trade_changes + NOTIFY, atomically.

`apply_batch` runs on a connection the caller owns. It opens a transaction (a savepoint if the caller
already has one open), so tests can also run it inside a transaction they roll back. A caller with its
own transaction should commit right after it: every other feed writer waits on the counter row until
then. Applying the same trades again is harmless (they come back `unchanged`), so a caller that lost
its connection during COMMIT may simply retry.

Statements, in this order and within one transaction:
  1. quarantine invalid trades (dead_letters);
  2. upsert trades from unnest() arrays, guarded by `modified` and the content hash; RETURNING tells
     which rows really changed;
  3. replace the sub-orders of the changed trades;
  4. last: take feed positions from the counter row, append feed rows, queue NOTIFYs. The counter row
     stays locked until COMMIT, which is what makes positions commit-ordered (see sql.APPEND_FEED).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from asyncpg import Connection
from asyncpg.pool import PoolConnectionProxy

from store import sql
from store.constants import PAYLOAD_TEXT_LIMIT
from store.types import ApplyResult
from store.validation import PreparedTrade, Rejection, prepare_batch
from taobao.models import Trade

logger = logging.getLogger(__name__)

# A plain connection or one borrowed from a pool.
AnyConnection = Connection | PoolConnectionProxy


async def apply_batch(
    conn: AnyConnection, trades: Sequence[Trade], *, source: str, channel: str
) -> ApplyResult:
    """Apply `trades` (any order, duplicates allowed) and return what changed. See module docstring."""
    prepared, rejected = prepare_batch(trades)
    async with conn.transaction():
        if rejected:
            await _quarantine(conn, rejected, source)
        rows = await conn.fetch(sql.UPSERT_TRADES, *_trade_columns(prepared), source) if prepared else []
        if rows:
            changed = {row["tid"] for row in rows}
            updated = [row["tid"] for row in rows if not row["inserted"]]
            if updated:
                await conn.execute(sql.DELETE_ORDERS, updated)
            order_columns = _order_columns([p for p in prepared if p.trade.tid in changed])
            if order_columns[0]:
                await conn.execute(sql.INSERT_ORDERS, *order_columns)
            await conn.execute(
                sql.APPEND_FEED,
                [row["tid"] for row in rows],
                [row["seller_nick"] for row in rows],
                [row["status"] for row in rows],
                [row["modified"] for row in rows],
                ["created" if row["inserted"] else "updated" for row in rows],
                source,
                channel,
                PAYLOAD_TEXT_LIMIT,
            )
    changed_tids = tuple(sorted(row["tid"] for row in rows))
    changed_set = set(changed_tids)
    return ApplyResult(
        changed=changed_tids,
        unchanged=tuple(p.trade.tid for p in prepared if p.trade.tid not in changed_set),
        rejected=tuple(r.tid for r in rejected),
    )


async def _quarantine(conn: AnyConnection, rejected: Sequence[Rejection], source: str) -> None:
    for r in rejected:
        logger.warning(
            "trade %s quarantined: %s",
            r.tid,
            r.reason,
            extra={"action": "trade_quarantined", "tid": r.tid, "shop": r.shop},
        )
    await conn.execute(
        sql.INSERT_DEAD_LETTERS,
        source,
        [r.reason for r in rejected],
        [r.payload for r in rejected],
        [r.tid for r in rejected],
        [r.shop for r in rejected],
    )


def _trade_columns(prepared: Sequence[PreparedTrade]) -> list[list[Any]]:
    columns: list[list[Any]] = [[] for _ in range(17)]
    for p in prepared:
        t = p.trade
        values: tuple[Any, ...] = (
            t.tid,
            t.seller_nick,
            t.buyer_nick,
            t.buyer_open_uid,
            t.status,
            t.type,
            t.created,
            p.modified,
            t.pay_time,
            t.consign_time,
            t.end_time,
            t.payment,
            t.total_fee,
            t.post_fee,
            p.raw_json,
            p.content_hash,
            t.fetched_at,
        )
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    return columns


def _order_columns(prepared: Sequence[PreparedTrade]) -> list[list[Any]]:
    columns: list[list[Any]] = [[] for _ in range(12)]
    for p in prepared:
        for o in p.trade.orders:
            values: tuple[int | str | Decimal | datetime | None, ...] = (
                p.trade.tid,
                o.oid,
                o.status,
                o.refund_status,
                o.title,
                o.num,
                o.num_iid,
                o.sku_id,
                o.price,
                o.payment,
                o.total_fee,
                o.end_time,
            )
            for column, value in zip(columns, values, strict=True):
                column.append(value)
    return columns
