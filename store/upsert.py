"""The guarded upsert: one batch of trades → trades + trade_orders + trade_changes + NOTIFY, atomically.

`apply_batch` runs on a connection the caller owns. It is one statement (the server-side function
`apply_trade_batch`, migration 046), atomic on its own or inside a transaction the caller rolls back.
A caller with its own transaction should commit right after it: every other feed writer waits on the
counter row until then. Applying the same trades again is harmless (they come back `unchanged`), so a
caller that lost its connection during COMMIT may simply retry.

Trades validation refuses are only reported (`ApplyResult.refused`): the caller records them as
unresolved. Statements, in this order and within one statement's transaction:
  1. the originals of trades whose text had U+0000 or lone surrogates replaced, as dead-letter rows
     (history: the stored trade is complete);
  2. upsert trades from unnest() arrays, guarded by `modified` and the content hash; RETURNING tells
     which rows really changed;
  3. replace the sub-orders of the changed trades;
  4. resolve the unresolved rows the stored versions pay (`store.unresolved.resolves`; not by a trade
     stored with fields left empty);
  5. last: take feed positions from the counter row, append feed rows, queue NOTIFYs. The counter row
     stays locked until COMMIT, which is what makes positions commit-ordered (see sql.APPLY_TRADE_BATCH).
"""

from __future__ import annotations

import dataclasses
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
from store.validation import PreparedTrade, flawed, prepare_batch
from taobao.models import Trade

logger = logging.getLogger(__name__)

# A plain connection or one borrowed from a pool.
AnyConnection = Connection | PoolConnectionProxy


# The reason on the dead-letter row that keeps a trade's original text (docs/design.md#text-replaced).
TEXT_REPLACED = "text held U+0000 or lone surrogates, stored as U+FFFD; the original is kept here"


async def apply_batch(
    conn: AnyConnection, trades: Sequence[Trade], *, source: str, channel: str
) -> ApplyResult:
    """Apply `trades` (any order, duplicates allowed) and return what changed. See module docstring."""
    prepared, refused = prepare_batch(trades)
    result = await write_prepared(conn, prepared, source=source, channel=channel)
    return dataclasses.replace(result, refused=tuple(refused))


async def write_prepared(
    conn: AnyConnection, prepared: Sequence[PreparedTrade], *, source: str, channel: str
) -> ApplyResult:
    """Write trades validation let through (one per tid) with steps 1-5 above, in one statement: the
    server-side function `apply_trade_batch` (docs/design.md#one-round-trip-commit)."""
    if not prepared:
        return ApplyResult(changed=(), unchanged=())
    replaced = [p for p in prepared if p.replaced]
    whole = [p for p in prepared if not p.flaws]
    rows = await conn.fetch(
        sql.APPLY_TRADE_BATCH,
        *_trade_columns(prepared),
        source,
        *_order_columns(prepared),
        [TEXT_REPLACED] * len(replaced),
        [p.original for p in replaced],
        [p.trade.tid for p in replaced],
        [p.trade.seller_nick for p in replaced],
        [p.trade.tid for p in whole],
        [p.trade.fetched_at for p in whole],
        channel,
        PAYLOAD_TEXT_LIMIT,
    )
    changed_tids = tuple(sorted(row["tid"] for row in rows))
    changed_set = set(changed_tids)
    for p in replaced:
        logger.warning(
            "trade %s stored with U+FFFD for text PostgreSQL cannot hold",
            p.trade.tid,
            extra={"action": "trade_text_replaced", "tid": p.trade.tid, "shop": p.trade.seller_nick},
        )
    return ApplyResult(
        changed=changed_tids,
        unchanged=tuple(p.trade.tid for p in prepared if p.trade.tid not in changed_set),
        flawed=tuple(flawed(p) for p in prepared if p.flaws),
        replaced=tuple(p.trade.tid for p in replaced),
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
