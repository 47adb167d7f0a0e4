"""One fetch → apply path for the stream (`listener.workers` fetches, `listener.batcher` applies) and
the reconciler (`reconciler.fetching`): how a fullinfo fetch ended, what each ending asks of the caller,
one place that applies fetched trades, and one call that records a trade-level failure.

How a fetch ended decides everything that follows (docs/design.md#one-error-taxonomy-three-scopes):

  TRADE          the trade's current state: apply it
  SHOP_REJECTED  per-shop: the shop's session was rejected (SessionExpired): stop working on the shop,
                 alert
  TRADE_FAILED   per-trade (PermanentTopError: TradeNotFound, MalformedResponse, a refused
                 parameter): record it as a trade failure (unresolved: it is retried later) and go on
  APP_FAILED     app-wide (AppWideTopError: permissions, signature, clock, an unknown code, a proxy's
                 answer): nothing about this trade; the client now holds every call behind one probe
                 (`taobao.pause`). Record nothing, confirm nothing, prove nothing: try again later
  RETRY_LATER    transient: what the client could not get past although it retried (RetryableTopError,
                 RateLimited, ServiceRejection): try again later, record nothing against the trade

`end_of` maps an error to its end through the error's scope (`taobao.taxonomy.scope_of`, the one
classification): no code is looked at here.

A trade the store refuses (validation, or PostgreSQL itself, found by bisecting the batch) or stores
with fields left empty is reported by the store; `apply_fetched` records each as a trade failure before
it returns, so a caller that settles after it never settles a trade nobody owes.

`TradeFailures.record` is the one call both paths make for a trade they could not fetch or store: it
writes the dead letter (history) and records the trade as *unresolved* for its shop and tid (a debt:
docs/design.md#unresolved-trades-block-proof), in one transaction, with its next attempt on a jittered,
capped backoff (`common.backoff.delay_after`), and counts it in `dead_letters_total`. A redrive that
fails again records the failure without a new dead letter (`history=False`).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Protocol

from common.backoff import BackoffPolicy, delay_after
from common.intervals import Interval
from common.metrics import Counter, Registry
from store.ports import FailureLog, TradeWriter
from store.types import ApplyResult
from store.unresolved import TradeDebt, second_of
from store.validation import Rejection
from taobao.errors import MalformedResponse, TopError
from taobao.limiter import Priority
from taobao.models import Trade
from taobao.taxonomy import Scope

logger = logging.getLogger(__name__)

# The one dead-letter series; the stream registers it too (listener.metrics, through
# `dead_letter_counter`), and the registry hands both the same counter.
DEAD_LETTERS_TOTAL: Final = "dead_letters_total"
DEAD_LETTERS_HELP: Final = "Inputs quarantined in the dead-letter table, by reason"
# The `reason` label of text stored as U+FFFD, whose original was kept as a dead letter.
TEXT_REPLACED: Final = "text_replaced"
# Reasons shown at 0 from the start, so an alert on `increase(...)` fires on the first one; a reason
# named after an error class appears with its first dead letter.
KNOWN_DEAD_LETTER_REASONS: Final = (
    "invalid_trade", "out_of_range_field", TEXT_REPLACED, "refused_by_database", "malformed_frame",
    "unknown_shop", "invalid_list_entry",
)  # fmt: skip
# When an unresolved trade is tried again: from 10 s, doubling, to 10 minutes, jittered
# (SYNC_REDRIVE_SECONDS, SYNC_REDRIVE_CAP_SECONDS).
REDRIVE_POLICY: Final = BackoffPolicy(base=10.0, cap=600.0)


def dead_letter_counter(registry: Registry) -> Counter:
    counter = registry.counter(DEAD_LETTERS_TOTAL, DEAD_LETTERS_HELP, labels=("reason",))
    for reason in KNOWN_DEAD_LETTER_REASONS:
        counter.touch(reason=reason)
    return counter


class FullinfoFetcher(Protocol):
    async def trade_fullinfo(self, session: str, tid: int, *, priority: Priority = ...) -> Trade: ...


class FetchEnd(enum.Enum):
    TRADE = "trade"
    SHOP_REJECTED = "shop_rejected"
    TRADE_FAILED = "trade_failed"
    APP_FAILED = "app_failed"
    RETRY_LATER = "retry_later"


_END_OF_SCOPE: Final = {
    Scope.TRADE: FetchEnd.TRADE_FAILED,
    Scope.SHOP: FetchEnd.SHOP_REJECTED,
    Scope.APP: FetchEnd.APP_FAILED,
    Scope.TRANSIENT: FetchEnd.RETRY_LATER,
}


def end_of(error: TopError) -> FetchEnd:
    """What a fullinfo error means for the trade, its shop and the app: its scope (see the module
    docstring)."""
    return _END_OF_SCOPE[error.scope]


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
        return Fetched(tid, end_of(exc), error=exc)
    if trade.fetched_at is None:
        # The read time decides which debts a store pays (store.unresolved.resolves): a fetcher that does
        # not stamp it (`taobao.client.TopClient` does) gets the time the answer arrived.
        trade = trade.model_copy(update={"fetched_at": datetime.now(UTC)})
    return Fetched(tid, FetchEnd.TRADE, trade=trade)


@dataclass(frozen=True, slots=True)
class TradeFailure:
    """A trade (or a list entry naming none) that could not be fetched or stored.

    `belongs`: the stretch of `modified` time it belongs to (the TMC message's second, the list window
    that named it); without it, the second of `modified` (the version fetched) or of now. `modified`:
    the version seen, when one was. `stored`: a version is stored with fields left empty."""

    source: str  # who was working on it: "stream", "backfill", "sweep", "initial_load", "redrive"
    kind: str  # the `reason` label: the error's class, or what was refused
    reason: str
    payload: bytes | str
    tid: int | None = None
    shop: str | None = None
    belongs: Interval | None = None
    modified: datetime | None = None
    stored: bool = False

    @classmethod
    def of_rejection(
        cls, rejected: Rejection, *, source: str, shop: str | None, stored: bool
    ) -> TradeFailure:
        return cls(
            source,
            rejected.kind,
            rejected.reason,
            rejected.payload,
            rejected.tid,
            rejected.shop or shop,
            modified=rejected.modified,
            stored=stored,
        )


def _utc_now() -> datetime:
    return datetime.now(UTC)


class TradeFailures:
    """Where both paths record what they could not fetch or store (see the module docstring)."""

    def __init__(
        self,
        store: FailureLog,
        counter: Counter,
        *,
        policy: BackoffPolicy = REDRIVE_POLICY,
        now: Callable[[], datetime] = _utc_now,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._counter = counter
        self.policy = policy
        self._now = now
        self._rng = rng or random.Random()

    def delay(self, attempts: int) -> float:
        """Seconds before the next try of a trade that failed `attempts` times."""
        return delay_after(self.policy, attempts, self._rng)

    async def record(self, failure: TradeFailure, *, history: bool = True) -> None:
        """Write the dead letter (with `history`) and the unresolved row, then count the dead letter.
        Raises what the store raises (the caller must not settle the trade as handled when nothing was
        recorded). A failure that names no trade or no shop is a dead letter only."""
        tid, shop = failure.tid, failure.shop
        if tid is None or shop is None:
            await self._store.dead_letter(
                source=failure.source, reason=failure.reason, payload=failure.payload, tid=tid, shop=shop
            )
        else:
            now = self._now()
            belongs = failure.belongs or second_of(failure.modified or now)
            payload = failure.payload
            data = payload.encode("utf-8", errors="surrogatepass") if isinstance(payload, str) else payload
            debt = TradeDebt(
                shop=shop,
                tid=tid,
                source=failure.source,
                kind=failure.kind,
                reason=failure.reason,
                belongs=belongs,
                modified=failure.modified,
                stored=failure.stored,
                payload=data or None,  # nothing new: the row keeps the bytes it has
            )
            await self._store.record_unresolved(debt, at=now, delay=self.delay, history=history)
        if history:
            self._counter.inc(reason=failure.kind)
        logger.warning(
            "trade failure recorded: %s",
            failure.reason,
            extra={"action": "trade_failure_recorded", "tid": tid, "shop": shop},
        )

    async def settle(
        self, result: ApplyResult, *, source: str, shop: str | None = None, belongs: Interval | None = None
    ) -> None:
        """Record what an apply could not store whole (`refused`, `flawed`) and count the text it
        replaced (its dead letters were written in the apply's own transaction)."""
        if result.replaced:
            self._counter.inc(len(result.replaced), reason=TEXT_REPLACED)
        for rejected, stored in [(r, False) for r in result.refused] + [(r, True) for r in result.flawed]:
            failure = TradeFailure.of_rejection(rejected, source=source, shop=shop, stored=stored)
            if belongs is not None:
                failure = dataclasses.replace(failure, belongs=belongs)
            await self.record(failure)


async def apply_fetched(
    store: TradeWriter,
    trades: Sequence[Trade],
    *,
    source: str,
    failures: TradeFailures,
    shop: str | None = None,
    belongs: Interval | None = None,
) -> ApplyResult:
    """Apply fetched trades (the guarded upsert); each trade the store could not keep whole is recorded
    as a trade failure (`TradeFailures.settle`; `shop` for trades that name none, `belongs` the stretch
    they belong to, as a backfill's window) before this returns."""
    result = await store.apply_trades(trades, source=source)
    await failures.settle(result, source=source, shop=shop, belongs=belongs)
    return result
