"""The stream's series: messages received, coalesced, confirmed and left for redelivery; fetches and
commits by outcome; how long commits take and how far each change lags behind Taobao."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from common.metrics import Registry
from listener.ports import TradeStore
from listener.session import SessionCounters
from store.fetch_apply import dead_letter_counter
from store.types import ApplyResult
from store.unresolved import TradeDebt
from taobao.models import Trade

# Seconds. A stream commit is one transaction of up to SYNC_BATCH_SIZE trades.
APPLY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Seconds from Taobao's `modified` stamp (one-second resolution) to our commit.
CHANGE_LAG_BUCKETS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)
# Fine below a minute: a reconnect after a short drop should take a second or two (reconnect delay,
# backfill before resume, handshake).
STALL_BUCKETS = (0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 120.0, 300.0, 900.0)
# Label values shown at 0 from the start (listener.workers and listener.batcher count these).
FETCH_OUTCOMES = ("ok", "session_expired", "permanent_error", "retry_later", "not_there_yet")
BATCH_OUTCOMES = ("committed", "failed")
UNCONFIRMED_REASONS = ("fetch_failed", "shop_paused", "shutdown", "not_applied", "dead_letter_failed")
ACK_CALLS = ("confirm", "fail")


class ListenerMetrics:
    """The stream's series. Without a registry it keeps its own (unit tests)."""

    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = registry or Registry()
        r = self.registry
        self.received = r.counter("tmc_messages_received_total", "TMC data messages handed to the dispatcher")
        self.duplicates = r.counter(
            "tmc_messages_duplicate_total", "Deliveries of a message id that was already being handled"
        )
        self.coalesced = r.counter(
            "tmc_messages_coalesced_total", "Messages that joined a tid already waiting for a fetch"
        )
        self.confirmed = r.counter("tmc_messages_confirmed_total", "Messages confirmed to the TMC server")
        self.left_unconfirmed = r.counter(
            "tmc_messages_unconfirmed_total", "Messages left for redelivery, by reason", labels=("reason",)
        )
        self.ack_errors = r.counter(
            "tmc_ack_errors_total", "Confirm or fail calls that raised", labels=("call",)
        )
        self.dead_letters = dead_letter_counter(r)  # the one series the reconciler counts in too
        self.fetches = r.counter(
            "fullinfo_fetches_total",
            "Stream fullinfo fetches by outcome (after retries)",
            labels=("outcome",),
        )
        self.batches = r.counter(
            "store_batches_total", "Stream commit batches by outcome", labels=("outcome",)
        )
        self.trades_committed = r.counter("trades_committed_total", "Trades in committed stream batches")
        self.apply_seconds = r.histogram(
            "store_apply_seconds",
            "Time to commit one stream batch (upsert, change feed, NOTIFY)",
            APPLY_BUCKETS,
        )
        self.change_lag = r.histogram(
            "change_commit_lag_seconds",
            "From a trade's modified time at Taobao to the commit of that change here (stream)",
            CHANGE_LAG_BUCKETS,
        )
        self.reconnect_stall = r.histogram(
            "tmc_reconnect_stall_seconds",
            "From a TMC disconnect to the next connect: reconnect delay, backfill before resume, handshake",
            STALL_BUCKETS,
        )
        for counter, label, values in (
            (self.fetches, "outcome", FETCH_OUTCOMES),
            (self.batches, "outcome", BATCH_OUTCOMES),
            (self.left_unconfirmed, "reason", UNCONFIRMED_REASONS),
            (self.ack_errors, "call", ACK_CALLS),
        ):
            for value in values:
                counter.touch(**{label: value})


# What the TMC session saw besides data messages, one series per kind (`SessionCounters`): each is a
# sign of a broken or newer server, or of a defect in the handler.
SESSION_EVENTS: dict[str, str] = {
    "foreign_token": "foreign_token",
    "unexpected_kind": "unexpected",
    "undecodable": "decode_errors",
    "unknown_header": "unknown_headers",
    "oversize": "oversize",
    "handler_error": "handler_errors",
    "quarantined": "quarantined",
    "server_error": "server_errors",
}


def watch_session_counters(registry: Registry, counters: SessionCounters) -> None:
    """Export the TMC session's counters as `tmc_session_events_total{kind=...}`. `undecodable` counts
    every frame dead-lettered unread, unknown headers and oversize frames included."""
    registry.counter_from(
        "tmc_session_events_total",
        "TMC frames the session did not hand on as data messages, and handler failures, by kind",
        lambda: [({"kind": kind}, float(getattr(counters, name))) for kind, name in SESSION_EVENTS.items()],
    )


class MeasuredStore:
    """The store as the stream's commit batcher sees it: each commit is timed, and each changed trade's
    lag behind Taobao is observed (the trades it could not store are recorded by `store.fetch_apply`)."""

    def __init__(
        self, store: TradeStore, metrics: ListenerMetrics, clock: Callable[[], datetime] | None = None
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._clock = clock or (lambda: datetime.now(UTC))

    async def apply_trades(self, trades: Sequence[Trade], *, source: str) -> ApplyResult:
        started = time.perf_counter()
        result = await self._store.apply_trades(trades, source=source)
        self._metrics.apply_seconds.observe(time.perf_counter() - started)
        if result.changed:
            now = self._clock()
            changed = set(result.changed)
            for trade in trades:
                if trade.tid in changed and trade.modified is not None:
                    self._metrics.change_lag.observe(max(0.0, (now - trade.modified).total_seconds()))
        return result

    async def dead_letter(
        self,
        *,
        source: str,
        reason: str,
        payload: bytes | str,
        tid: int | None = None,
        shop: str | None = None,
    ) -> None:
        await self._store.dead_letter(source=source, reason=reason, payload=payload, tid=tid, shop=shop)

    async def record_unresolved(
        self, debt: TradeDebt, *, at: datetime, delay: Callable[[int], float], history: bool
    ) -> int:
        return await self._store.record_unresolved(debt, at=at, delay=delay, history=history)
