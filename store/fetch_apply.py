"""One fetch → apply path for the stream (`listener.workers` fetches, `listener.batcher` applies) and
the reconciler (`reconciler.fetching`): how a fullinfo fetch ended, what each ending asks of the caller,
one place that applies fetched trades, and one call that records a trade-level failure.

How a fetch ended decides everything that follows (docs/design.md#one-error-taxonomy-three-scopes):

  TRADE          the trade's current state: apply it
  SHOP_REJECTED  the shop's session was rejected (SessionExpired): stop working on the shop, alert
  TRADE_FAILED   about this trade alone (PermanentTopError: TradeNotFound, MalformedResponse, ...):
                 record it as a trade failure and go on; retrying cannot help
  RETRY_LATER    anything else the client could not get past although it retried (RetryableTopError,
                 RateLimited, ServiceRejection): try again later, record nothing against the trade

A trade the store refuses (it fails `store.validation`) is quarantined by the store in the same
transaction and reported `rejected`: it is settled like an applied one and counted as a trade failure.

`TradeFailures.record` is the one call both paths make for a trade they could not fetch or store. Today
it writes a dead letter (shop, tid, reason) and counts it in `dead_letters_total`; it is where a trade
becomes unresolved once unresolved trades block proof (docs/design.md#unresolved-trades-block-proof).
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from common.metrics import Counter, Registry
from store.ports import DeadLetters, TradeWriter
from store.types import ApplyResult
from taobao.errors import MalformedResponse, PermanentTopError, SessionExpired, TopError
from taobao.limiter import Priority
from taobao.models import Trade

logger = logging.getLogger(__name__)

# The one dead-letter series; the stream registers it too (listener.metrics, through
# `dead_letter_counter`), and the registry hands both the same counter.
DEAD_LETTERS_TOTAL: Final = "dead_letters_total"
DEAD_LETTERS_HELP: Final = "Inputs quarantined in the dead-letter table, by reason"
# The `reason` label of a trade the store refused.
INVALID_TRADE: Final = "invalid_trade"


def dead_letter_counter(registry: Registry) -> Counter:
    return registry.counter(DEAD_LETTERS_TOTAL, DEAD_LETTERS_HELP)


class FullinfoFetcher(Protocol):
    async def trade_fullinfo(self, session: str, tid: int, *, priority: Priority = ...) -> Trade: ...


class FetchEnd(enum.Enum):
    TRADE = "trade"
    SHOP_REJECTED = "shop_rejected"
    TRADE_FAILED = "trade_failed"
    RETRY_LATER = "retry_later"


def classify(error: TopError) -> FetchEnd:
    """What a fullinfo error means for the trade and its shop (see the module docstring)."""
    if isinstance(error, SessionExpired):
        return FetchEnd.SHOP_REJECTED
    if isinstance(error, PermanentTopError):
        return FetchEnd.TRADE_FAILED
    return FetchEnd.RETRY_LATER


@dataclass(frozen=True, slots=True)
class Fetched:
    """How one fetch of `tid` ended: `trade` for TRADE, `error` for every other end."""

    tid: int
    end: FetchEnd
    trade: Trade | None = None
    error: TopError | None = None

    @property
    def kind(self) -> str:
        """The error's class name: the `reason` label of the dead-letter series."""
        return type(self.error).__name__

    @property
    def reason(self) -> str:
        return f"fullinfo: {self.error}"

    def payload(self) -> str:
        """What the dead-letter row keeps of a failed fetch: the unusable response when there is one."""
        if isinstance(self.error, MalformedResponse) and self.error.payload:
            return self.error.payload
        return json.dumps({"tid": self.tid})


async def fetch_trade(fetcher: FullinfoFetcher, session: str, tid: int, *, priority: Priority) -> Fetched:
    """Fetch `tid`'s current state; a TOP error becomes the end it means. Other exceptions (defects)
    propagate: each caller decides what a defect costs it."""
    try:
        trade = await fetcher.trade_fullinfo(session, tid, priority=priority)
    except TopError as exc:
        return Fetched(tid, classify(exc), error=exc)
    return Fetched(tid, FetchEnd.TRADE, trade=trade)


@dataclass(frozen=True, slots=True)
class TradeFailure:
    """A trade (or a list entry naming none) that could not be fetched or stored."""

    source: str  # who was working on it: "stream", "backfill", "sweep", "initial_load"
    kind: str  # the `reason` label: the error's class, or what was refused
    reason: str
    payload: bytes | str
    tid: int | None = None
    shop: str | None = None


class TradeFailures:
    """Where both paths record what they could not fetch or store (see the module docstring)."""

    def __init__(self, store: DeadLetters, counter: Counter) -> None:
        self._store = store
        self._counter = counter

    async def record(self, failure: TradeFailure) -> None:
        """Write the dead letter, then count it. Raises what the store raises (the caller must not
        settle the trade as handled when nothing was recorded)."""
        await self._store.dead_letter(
            source=failure.source,
            reason=failure.reason,
            payload=failure.payload,
            tid=failure.tid,
            shop=failure.shop,
        )
        self._counter.inc(reason=failure.kind)
        logger.warning(
            "trade failure recorded: %s",
            failure.reason,
            extra={"action": "trade_failure_recorded", "tid": failure.tid, "shop": failure.shop},
        )

    def quarantined(self, result: ApplyResult) -> None:
        """Count the trades the store refused: their dead letters were written in the apply's own
        transaction."""
        if result.rejected:
            self._counter.inc(len(result.rejected), reason=INVALID_TRADE)


async def apply_fetched(
    store: TradeWriter, trades: Sequence[Trade], *, source: str, failures: TradeFailures
) -> ApplyResult:
    """Apply fetched trades in one transaction (the guarded upsert); the ones the store refused are
    quarantined with it, counted as trade failures, and count as settled in the result."""
    result = await store.apply_trades(trades, source=source)
    failures.quarantined(result)
    return result
