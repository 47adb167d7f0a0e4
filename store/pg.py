"""`PgStore`: the asyncpg implementation of `listener.ports.TradeStore`."""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from types import TracebackType

import asyncpg

from common.intervals import Interval
from store import reconciler_sql, sql
from store.bisect import bisect
from store.constants import DEFAULT_NOTIFY_CHANNEL
from store.errors import DATABASE_ERRORS, TRADE_REFUSALS, StoreError
from store.pg_connect import ConnectionLimits, mark_session_untouched, pool_options
from store.pg_coverage import cut
from store.pooled import Pooled
from store.schema import DEFAULT_SCHEMA
from store.types import ApplyResult
from store.unresolved import TradeDebt
from store.upsert import write_prepared
from store.validation import PreparedTrade, Rejection, prepare_batch, rejection, storable_text
from taobao.models import Trade

logger = logging.getLogger(__name__)

# LISTEN takes an identifier: keep the channel one that needs no quoting (and fits NAMEDATALEN).
_CHANNEL = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# Sorted row locks make deadlocks unlikely; a retry covers the rest (e.g. FK key-share locks).
_RETRYABLE = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
_ATTEMPTS = 3


# The `kind` of a trade PostgreSQL refused: the `reason` label of dead_letters_total.
REFUSED_BY_DATABASE = "refused_by_database"


def _refused_by_database(prepared: PreparedTrade, exc: BaseException) -> Rejection:
    what = f"PostgreSQL refused it ({type(exc).__name__}: {exc})"
    logger.warning(
        "trade %s refused by PostgreSQL: %s",
        prepared.trade.tid,
        type(exc).__name__,
        extra={"action": "trade_refused", "tid": prepared.trade.tid, "shop": prepared.trade.seller_nick},
    )
    return rejection(prepared.trade, what[:1000], REFUSED_BY_DATABASE)


def _combined(results: Sequence[ApplyResult], refused: Sequence[Rejection]) -> ApplyResult:
    """The results of the parts of one bisected batch as one."""
    changed = tuple(sorted(tid for r in results for tid in r.changed))
    unchanged = tuple(tid for r in results for tid in r.unchanged)
    first = results[0] if results else ApplyResult(changed=(), unchanged=())
    return dataclasses.replace(
        first,
        changed=changed,
        unchanged=unchanged,
        refused=tuple(refused),
        flawed=tuple(f for r in results for f in r.flawed),
        replaced=tuple(t for r in results for t in r.replaced),
    )


def check_channel(channel: str) -> str:
    if not _CHANNEL.match(channel):
        raise ValueError(f"notify channel must be a lower-case identifier of at most 63 bytes: {channel!r}")
    return channel


class PgStore:
    """Guarded upserts, the change feed, NOTIFY and dead letters over one asyncpg pool.

    `apply_trades` runs one transaction per call, or, when PostgreSQL refuses the batch for a reason
    about its data, bisects it (`store.bisect`); see `store.upsert` for what it does and
    `store.types.ApplyResult` for what it returns. Trades it cannot store are reported, never raised.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        notify_channel: str = DEFAULT_NOTIFY_CHANNEL,
        limits: ConnectionLimits | None = None,
    ) -> None:
        self._pool = pool
        self.notify_channel = check_channel(notify_channel)
        self.limits = limits or ConnectionLimits()
        self._connections = Pooled(pool, self.limits.acquire)  # every wait for a connection bounded

    @classmethod
    async def connect(
        cls,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        notify_channel: str = DEFAULT_NOTIFY_CHANNEL,
        schema: str = DEFAULT_SCHEMA,
        limits: ConnectionLimits | None = None,
    ) -> PgStore:
        check_channel(notify_channel)
        limits = limits or ConnectionLimits()
        try:
            pool = await asyncpg.create_pool(
                dsn, min_size=min_size, max_size=max_size, **pool_options(limits, schema)
            )
        except DATABASE_ERRORS as exc:
            raise StoreError(f"cannot connect to the database: {exc}") from exc
        return cls(pool, notify_channel=notify_channel, limits=limits)

    @property
    def pool(self) -> asyncpg.Pool:
        """For other store modules (ledger, reports) that share the pool."""
        return self._pool

    async def apply_trades(self, trades: Sequence[Trade], *, source: str) -> ApplyResult:
        if not source:
            raise ValueError("source must name who fetched the trades (e.g. 'stream', 'backfill')")
        if not trades:
            return ApplyResult(changed=(), unchanged=())
        prepared, refused = prepare_batch(trades)

        async def write(part: Sequence[PreparedTrade]) -> ApplyResult:
            return await self._write(part, source)

        results, failures = await bisect(prepared, write, lambda exc: isinstance(exc, TRADE_REFUSALS))
        refused += [_refused_by_database(p, exc) for p, exc in failures]
        return _combined(results, refused)

    async def _write(self, prepared: Sequence[PreparedTrade], source: str) -> ApplyResult:
        """One transaction; deadlocks retried; a refusal about the data raised as the driver's error."""
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                async with self._connections.acquire() as conn:
                    result = await write_prepared(conn, prepared, source=source, channel=self.notify_channel)
                    # One statement, its own transaction, no session state: no reset on release.
                    mark_session_untouched(conn)
                    return result
            except _RETRYABLE as exc:
                if attempt == _ATTEMPTS:
                    raise StoreError(f"apply_trades gave up after {attempt} attempts: {exc}") from exc
                logger.warning(
                    "apply_trades retrying after %s",
                    type(exc).__name__,
                    extra={"action": "apply_retry", "attempt": attempt},
                )
            except TRADE_REFUSALS:
                raise
            except DATABASE_ERRORS as exc:
                raise StoreError(f"apply_trades failed: {type(exc).__name__} {exc}") from exc
        raise AssertionError("unreachable")

    async def record_unresolved(
        self, debt: TradeDebt, *, at: datetime, delay: Callable[[int], float], history: bool
    ) -> int:
        """Record `debt` as unresolved (docs/design.md#unresolved-trades-block-proof), with its
        dead-letter row when `history`, in one transaction under the shop's ledger lock: its next
        attempt `delay(attempts)` seconds after `at`, and the stretch it belongs to cut out of what is
        proven. Returns its attempts."""
        shop, source = storable_text(debt.shop), storable_text(debt.source)
        reason = storable_text(debt.reason)

        async def write() -> int:
            async with self._connections.acquire() as conn, conn.transaction():
                await conn.execute(reconciler_sql.LOCK_SHOP, shop)
                if history:
                    await conn.execute(
                        sql.INSERT_DEAD_LETTER, source, reason, debt.payload or b"", debt.tid, shop
                    )
                row = await conn.fetchrow(
                    reconciler_sql.RECORD_UNRESOLVED,
                    shop,
                    debt.tid,
                    source,
                    storable_text(debt.kind),
                    reason,
                    at,
                    debt.belongs.start,
                    debt.belongs.end,
                    debt.modified,
                    debt.stored,
                    debt.payload,
                )
                assert row is not None  # INSERT ... RETURNING
                attempts = int(row["attempts"])
                next_attempt = at + timedelta(seconds=delay(attempts))
                await conn.execute(reconciler_sql.SCHEDULE_UNRESOLVED, shop, debt.tid, next_attempt)
                await cut(conn, shop, Interval(row["belongs_from"], row["belongs_until"]))
                return attempts

        try:
            return await write()
        except DATABASE_ERRORS as exc:
            raise StoreError(f"recording an unresolved trade failed: {exc}") from exc

    async def dead_letter(
        self,
        *,
        source: str,
        reason: str,
        payload: bytes | str,
        tid: int | None = None,
        shop: str | None = None,
    ) -> None:
        """Quarantine input the service could not use (docs/design.md#bad-input-never-crashes). `payload` is
        kept byte for byte."""
        data = payload.encode("utf-8", errors="surrogatepass") if isinstance(payload, str) else payload
        reason, shop = storable_text(reason), None if shop is None else storable_text(shop)
        try:
            await self._connections.execute(
                sql.INSERT_DEAD_LETTER, storable_text(source), reason, data, tid, shop
            )
        except DATABASE_ERRORS as exc:
            raise StoreError(f"dead_letter failed: {exc}") from exc
        logger.warning(
            "quarantined input from %s: %s",
            source,
            reason,
            extra={"action": "dead_letter", "tid": tid, "shop": shop},
        )

    async def last_position(self) -> int:
        """The newest committed feed position (0 when the feed is empty)."""
        value = await self._connections.fetchval(sql.LAST_POSITION)
        return int(value)

    async def close(self) -> None:
        await self._pool.close()

    async def __aenter__(self) -> PgStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
