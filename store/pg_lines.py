"""The initial load's bulk path (docs/performance.md#initial-load): a chunk of TOPATS result lines,
copied as they are into a temporary table and merged by one call of `load_trade_lines` (migration 070),
which parses them in PostgreSQL and applies the plain ones with the guards, feed rows and NOTIFYs of
the per-trade path (store/upsert.py). Python does no work per trade here: the lines are escaped for
COPY as one block.

Lines whose fields have another shape come back by number (`LinesLoaded.leftover`); a chunk PostgreSQL
cannot read (a line that is not JSON, U+0000 or a lone surrogate, invalid UTF-8) comes back as None and
nothing of it is stored: in both cases the caller sends those lines the per-trade way, whose validation
decides (replaced text with its original kept, dead letters, refusals). So does every chunk when the
service's role may not create temporary tables.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from typing import Final

import asyncpg

from store.constants import PAYLOAD_TEXT_LIMIT
from store.errors import DATABASE_ERRORS, TRADE_REFUSALS, StoreError
from store.pooled import Pooled
from store.types import LinesLoaded

logger = logging.getLogger(__name__)

# Rows up to a page are kept whole and uncompressed: a line is read once, right after it is written.
CREATE_LINES: Final = (
    "CREATE TEMP TABLE trade_lines (n integer GENERATED ALWAYS AS IDENTITY, line text)"
    " WITH (toast_tuple_target = 8160) ON COMMIT DROP"
)
LOAD_TRADE_LINES: Final = (
    "SELECT taken, inserted, updated, unchanged, leftover FROM load_trade_lines($1, $2, $3)"
)


def copy_text(lines: Sequence[bytes]) -> bytes:
    """`lines` as the rows of a one-column COPY in text format: backslash, tab and CR escaped."""
    block = b"\n".join(lines)
    return block.replace(b"\\", b"\\\\").replace(b"\t", b"\\t").replace(b"\r", b"\\r") + b"\n"


async def load_lines(
    connections: Pooled, lines: Sequence[bytes], *, source: str, channel: str
) -> LinesLoaded | None:
    """Merge `lines` (one trade each, blank ones skipped) in one transaction; None when PostgreSQL
    cannot read the chunk (nothing stored). Raises StoreError."""
    if not lines:
        return LinesLoaded(taken=0, inserted=0, updated=0, unchanged=0, leftover=())
    data = copy_text(lines)
    try:
        async with connections.acquire() as conn, conn.transaction():
            await conn.execute(CREATE_LINES)
            await conn.copy_to_table("trade_lines", source=io.BytesIO(data), columns=["line"], format="text")
            row = await conn.fetchrow(LOAD_TRADE_LINES, source, channel, PAYLOAD_TEXT_LIMIT)
    except asyncpg.InsufficientPrivilegeError:
        # A role without TEMPORARY on the database (README, "Database roles"): the per-trade path.
        logger.warning(
            "the service's role may not create temporary tables: lines are loaded one trade at a time",
            extra={"action": "bulk_load_not_permitted"},
        )
        return None
    except TRADE_REFUSALS as exc:
        logger.info(
            "a chunk of %d lines goes the per-trade way: %s",
            len(lines),
            type(exc).__name__,
            extra={"action": "bulk_chunk_refused"},
        )
        return None
    except DATABASE_ERRORS as exc:
        raise StoreError(f"loading lines failed: {type(exc).__name__} {exc}") from exc
    assert row is not None
    # Line numbers are 1-based in COPY order.
    return LinesLoaded(
        taken=row["taken"],
        inserted=row["inserted"],
        updated=row["updated"],
        unchanged=row["unchanged"],
        leftover=tuple(n - 1 for n in row["leftover"]),
    )
