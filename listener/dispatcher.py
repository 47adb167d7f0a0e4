"""Between the TMC session and the worker pool: per-tid coalescing, bounded memory, message lifecycle.

Every TMC message the dispatcher accepts is *held* until it is settled in exactly one way:
confirmed (after the commit that covers it, or after its dead-letter row is written), or left
unconfirmed (the server redelivers it); `listener.acks` sends either. Holding is bounded by
`max_events` and by `max_bytes` of content (`listener.capacity`); when a bound is reached `submit()`
waits, which stops the session's handing on and pulling: that is the backpressure
(docs/design.md#capacity-before-work).

Coalescing (docs/tmc-protocol.md#duplicates: bursts per order are normal). For one tid:
  * queued, no fetch yet     → a new message joins the queued item; one fetch covers all of them;
  * a fetch is in flight     → the new message waits; when the fetch ends exactly one more fetch is
                               queued carrying every message that arrived meanwhile;
so a message is only ever covered by a fetch that *started after it was received*
(docs/design.md#confirm-after-commit: the committed state is then at least as new as the one it announced).

Retry later (`retry_later`): a fetch whose trade is not there yet (the detail store lags the push) puts
its messages back, still held, and the tid is queued again after a delay; messages that arrive meanwhile
join it. Held messages keep the stream's proof behind them (`reconciler.stream_watch`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import SecretStr

from listener.acks import Acks
from listener.capacity import DEFAULT_MAX_HELD_BYTES, HoldBudget, held_size
from listener.idle import IdleWorkers
from listener.metrics import ListenerMetrics
from listener.ports import MessageAcker, MessageWatch, TradeStore
from listener.trade_events import Rejection, parse_trade_event
from taobao.tmc.events import TmcMessage

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WorkItem:
    """One fetch to do: the messages it covers were all received before it was handed out."""

    tid: int
    shop: str
    session: SecretStr = field(repr=False)
    message_ids: tuple[int, ...]
    # The oldest of the messages' times (publish time, or receipt when the message has none), and how
    # long the oldest has been held (monotonic seconds): what a lagging detail store is measured by.
    oldest_time: datetime | None = None
    held_for: float = 0.0
    retries: int = 0  # times this tid was put back by `retry_later` since its messages came


@dataclass(slots=True)
class _Held:
    message: TmcMessage
    tid: int
    shop: str
    size: int  # held_size(message)
    received: float = field(default_factory=time.monotonic)


@dataclass(slots=True)
class _TidState:
    shop: str
    waiting: list[int] = field(default_factory=list)  # received, not yet covered by a started fetch
    queued: bool = False
    fetching: bool = False
    retries: int = 0
    delayed: asyncio.TimerHandle | None = None  # a retry_later waiting to queue it again


class Dispatcher:
    def __init__(
        self,
        *,
        sessions: Mapping[str, SecretStr],
        store: TradeStore,
        max_events: int,
        metrics: ListenerMetrics,
        max_bytes: int = DEFAULT_MAX_HELD_BYTES,
        acker: MessageAcker | None = None,
        watch: MessageWatch | None = None,
    ) -> None:
        # Read live: the daemon's shop book changes while it runs (store.shop_book).
        self._sessions = sessions
        self._watch = watch
        self._acks = Acks(store=store, metrics=metrics, acker=acker, watch=watch)
        self._budget = HoldBudget(max_count=max_events, max_bytes=max_bytes)
        self._metrics = metrics

        self._held: dict[int, _Held] = {}
        self._tids: dict[int, _TidState] = {}
        # Ready tids per shop, served round-robin so one busy shop cannot starve the others.
        self._ready: dict[str, deque[int]] = {}
        self._rotation: deque[str] = deque()
        self._paused: dict[str, str] = {}

        self._idle_workers = IdleWorkers()  # a queued tid wakes one of them
        self._settled = asyncio.Event()
        self._settled.set()
        self._activity = asyncio.Event()
        self._intake_closed = False
        self._accepting = 0  # submit() calls between arrival and holding/settling their message
        self._parked_release = asyncio.Event()
        self.intake_count = 0  # messages submitted, for idle detection
        self.parked_count = 0

        registry = metrics.registry
        registry.gauge("tmc_messages_held", "Messages received and not yet settled", self._gauge_held)
        registry.gauge("tids_queued", "Tids waiting for a worker", self._gauge_queued)
        registry.gauge("fullinfo_in_flight", "Stream fetches in progress", self._gauge_in_flight)
        registry.gauge("shop_paused", "1 while a shop's session is rejected", self._gauge_paused)

    def settle_through(self, acker: MessageAcker) -> None:
        """Confirm and fail messages through `acker`: the channel that delivers them to `submit`, made
        after the dispatcher since it is given `submit`."""
        self._acks.settle_through(acker)

    # ----------------------------------------------------------------- intake (the session's handler)

    async def submit(self, message: TmcMessage) -> None:
        """Take one message. Returns once it is held (or settled); waits while `max_events` are held."""
        if self._watch is not None:
            self._watch.received(message)
        self._metrics.received.inc()
        self.intake_count += 1
        self._activity.set()
        # A message being dead-lettered or handed back is not held, yet not settled either: count it
        # so that `wait_settled()` (drain, burst mode) does not return while its ack is on the way.
        self._accepting += 1
        self._settled.clear()
        try:
            park = await self._accept(message)
        finally:
            self._accepting -= 1
            self._update_settled()
        if park:
            await self._park(message)

    async def _accept(self, message: TmcMessage) -> bool:
        """Hold or settle `message`; True when intake closed first and the caller must park."""
        if self._intake_closed:
            return True
        if message.id in self._held:
            self._duplicate(message)
            return False

        parsed = parse_trade_event(message)
        if isinstance(parsed, Rejection):
            await self._acks.quarantine(message, parsed.kind, parsed.reason, tid=None, shop=None)
            return False
        shop = parsed.shop
        if shop is None or shop not in self._sessions:
            reason = f"seller {shop!r} is not an active shop" if shop else "message names no seller"
            await self._acks.quarantine(message, "unknown_shop", reason, tid=parsed.tid, shop=shop)
            return False

        # Take capacity before taking the work (docs/design.md#capacity-before-work).
        size = held_size(message)
        await self._budget.wait_for_room(size)
        if self._intake_closed:
            return True
        if message.id in self._held:  # the same id arrived again while this one waited
            self._duplicate(message)
            return False
        if shop in self._paused:
            await self._acks.fail_unheld(message, "shop_paused", self._paused[shop])
            return False
        self._hold(message, parsed.tid, shop, size)
        return False

    def _hold(self, message: TmcMessage, tid: int, shop: str, size: int) -> None:
        self._held[message.id] = _Held(message, tid, shop, size)
        self._budget.take(size)
        self._settled.clear()
        state = self._tids.get(tid)
        if state is None:
            state = self._tids[tid] = _TidState(shop=shop)
        elif state.queued or state.fetching or state.delayed is not None:
            self._metrics.coalesced.inc()
        state.waiting.append(message.id)
        if not state.queued and not state.fetching and state.delayed is None:
            self._enqueue(tid, state)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "held message for tid %d (%s)",
                tid,
                message.topic,
                extra={"action": "message_held", "tid": tid, "shop": shop, "message_id": message.id},
            )

    def _duplicate(self, message: TmcMessage) -> None:
        # The first delivery is confirmed when its fetch commits; confirming one copy is enough.
        self._metrics.duplicates.inc()
        log.debug(
            "message delivered again while held",
            extra={"action": "message_duplicate", "message_id": message.id},
        )

    async def _park(self, message: TmcMessage) -> None:
        """Intake is closed: hold the session's reader here (nothing more is read) until the service
        lets go at the end of the drain; the message stays unconfirmed and is redelivered."""
        self.parked_count += 1
        await self._parked_release.wait()

    # ------------------------------------------------------------------------- worker side

    async def next_work(self) -> WorkItem:
        """The next tid to fetch, round-robin across shops; marks it in flight."""
        while not self._rotation:
            await self._idle_workers.wait()
        shop = self._rotation.popleft()
        tids = self._ready[shop]
        tid = tids.popleft()
        if tids:
            self._rotation.append(shop)
        else:
            del self._ready[shop]
        state = self._tids[tid]
        state.queued = False
        state.fetching = True
        ids = tuple(state.waiting)
        state.waiting.clear()
        held = [self._held[mid] for mid in ids if mid in self._held]
        times = [h.message.time for h in held if h.message.time is not None]
        oldest = min((h.received for h in held), default=time.monotonic())
        return WorkItem(
            tid=tid,
            shop=shop,
            session=self._sessions[shop],
            message_ids=ids,
            oldest_time=min(times, default=None),
            held_for=time.monotonic() - oldest,
            retries=state.retries,
        )

    async def finish_fetch(self, item: WorkItem) -> None:
        """The fetch for `item` ended (whatever its outcome). Messages that arrived meanwhile get exactly
        one more fetch, or are left unconfirmed if the shop was paused in the meantime."""
        state = self._tids.get(item.tid)
        if state is None:
            return
        state.fetching = False
        if state.delayed is not None:
            return  # put back by retry_later: its timer queues it
        if not state.waiting:
            del self._tids[item.tid]
            return
        if item.shop in self._paused:
            ids = list(state.waiting)
            del self._tids[item.tid]
            await self.leave_unconfirmed(ids, "shop_paused", self._paused[item.shop])
            return
        self._enqueue(item.tid, state)

    def retry_later(self, item: WorkItem, delay: float) -> None:
        """Put `item`'s messages back, still held, and queue the tid again after `delay` seconds (its
        trade is not there yet). Called by the worker before `finish_fetch`."""
        state = self._tids.get(item.tid)
        if state is None or item.shop in self._paused:
            return
        state.waiting[:0] = [mid for mid in item.message_ids if mid in self._held]
        state.retries += 1
        state.delayed = asyncio.get_running_loop().call_later(delay, self._retry_due, item.tid, state)
        log.info(
            "trade not there yet; fetching it again in %.1f s",
            delay,
            extra={
                "action": "fetch_retry_later",
                "tid": item.tid,
                "shop": item.shop,
                "attempt": state.retries,
            },
        )

    def _retry_due(self, tid: int, state: _TidState) -> None:
        state.delayed = None
        if self._tids.get(tid) is not state or state.fetching or state.queued:
            return  # its shop was paused meanwhile (the state was dropped), or it is on its way already
        if state.waiting:
            self._enqueue(tid, state)
        else:
            del self._tids[tid]

    def _enqueue(self, tid: int, state: _TidState) -> None:
        state.queued = True
        queue = self._ready.get(state.shop)
        if queue is None:
            queue = self._ready[state.shop] = deque()
            self._rotation.append(state.shop)
        queue.append(tid)
        self._idle_workers.wake_one()

    # ------------------------------------------------------------------------- shops

    def is_paused(self, shop: str) -> bool:
        return shop in self._paused

    @property
    def paused_shops(self) -> dict[str, str]:
        return dict(self._paused)

    async def pause_shop(self, shop: str, reason: str) -> None:
        """Stop fetching for `shop` (its session was rejected). Its queued messages are left unconfirmed.

        Why not park them in memory or confirm them: memory must stay bounded while the shop is paused
        for hours, and confirming would drop the server's copy before the change is committed
        (docs/design.md#confirm-after-commit). The server redelivers them; once a new session is configured
        and the service restarts, the reconciler backfills the paused window from the coverage ledger, which
        never marked it proven (docs/design.md#coverage-ledger)."""
        if shop in self._paused:
            return
        self._paused[shop] = reason
        log.error(
            "shop paused: its session was rejected (%s); configure a new session for it",
            reason,
            extra={"action": "shop_paused", "shop": shop},
        )
        await self._let_go(shop, "shop_paused", reason)

    def fetch_again_if_renewed(self, item: WorkItem) -> bool:
        """`item`'s fetch was rejected (code 27) with a session the shop no longer has: it was renewed
        while the fetch was in flight. Put the messages back, still held, to be fetched with the new
        session (`finish_fetch` queues them); pausing would stop the shop with nothing left to resume it,
        since the renewal has already reached the book. False: the rejected session is the current one."""
        current = self._sessions.get(item.shop)
        state = self._tids.get(item.tid)
        if current is None or state is None or current.get_secret_value() == item.session.get_secret_value():
            return False
        state.waiting[:0] = [mid for mid in item.message_ids if mid in self._held]
        log.info(
            "a call made with the shop's previous session was rejected; fetching again with the new one",
            extra={"action": "fetch_stale_session", "tid": item.tid, "shop": item.shop},
        )
        return True

    async def retire_shop(self, shop: str) -> None:
        """`shop` was removed or paused in the registry: its queued messages are left unconfirmed (the
        server hands them back, and they are settled as an unknown seller's or, after a resume, fetched)."""
        self._paused.pop(shop, None)
        await self._let_go(shop, "shop_retired", "the shop is no longer served")

    def resume_shop(self, shop: str) -> None:
        """`shop` has a new session: fetch for it again."""
        if self._paused.pop(shop, None) is not None:
            log.info("shop resumed with a new session", extra={"action": "shop_resumed", "shop": shop})

    async def _let_go(self, shop: str, kind: str, reason: str) -> None:
        ids: list[int] = []
        self._ready.pop(shop, None)
        if shop in self._rotation:
            self._rotation.remove(shop)
        for tid, state in list(self._tids.items()):
            if state.shop != shop:
                continue
            ids += state.waiting
            state.waiting.clear()
            state.queued = False
            if state.delayed is not None:
                state.delayed.cancel()
                state.delayed = None
            if not state.fetching:
                del self._tids[tid]
        await self.leave_unconfirmed(ids, kind, reason)

    # ------------------------------------------------------------------------- settling

    async def confirm(self, message_ids: Iterable[int]) -> None:
        """Confirm held messages whose trade state is committed (the batcher calls this after commit)."""
        held = self._still_held(message_ids)
        await self._acks.confirm_all(held)
        for message_id in held:
            self._release(message_id)

    async def leave_unconfirmed(self, message_ids: Iterable[int], kind: str, reason: str) -> None:
        """Give held messages back to the server: it redelivers them later. Failed tells it now rather
        than after its confirm timeout, and keeps its count of our unconfirmed messages low."""
        for message_id in self._still_held(message_ids):
            self._metrics.left_unconfirmed.inc(reason=kind)
            await self._acks.fail(message_id, reason)
            self._release(message_id)

    def _still_held(self, message_ids: Iterable[int]) -> list[int]:
        return [mid for mid in message_ids if mid in self._held]

    def _release(self, message_id: int) -> None:
        # Released only once the ack went out, so a drain that sees nothing held has nothing in transit.
        held = self._held.pop(message_id, None)
        if held is None:
            return
        self._budget.give_back(held.size)
        self._update_settled()
        self._activity.set()

    def _update_settled(self) -> None:
        if not self._held and not self._accepting:
            self._settled.set()

    # ------------------------------------------------------------------------- draining and state

    def close_intake(self) -> None:
        """From now on `submit()` holds nothing new; it parks the caller (see `_park`)."""
        self._intake_closed = True
        self._budget.close()  # wake submitters waiting for capacity so they park instead

    def release_parked(self) -> None:
        """Let parked `submit()` calls return (their messages stay unconfirmed)."""
        self._parked_release.set()

    async def wait_settled(self) -> None:
        """Until no message is held or being accepted: everything received was committed and
        confirmed, or otherwise settled (parked deliveries during a stop do not count)."""
        while self._held or self._accepting:
            await self._settled.wait()

    async def wait_activity(self) -> None:
        """Until something is submitted or settled after this call."""
        self._activity.clear()
        await self._activity.wait()

    @property
    def is_settled(self) -> bool:
        return not self._held and not self._accepting

    def held_ids(self) -> list[int]:
        return list(self._held)

    @property
    def held_count(self) -> int:
        return len(self._held)

    @property
    def in_flight_count(self) -> int:
        return sum(1 for state in self._tids.values() if state.fetching)

    def has_backlog(self) -> bool:
        """Tids are waiting for a worker: every worker is busy and more fetches are sure to follow."""
        return bool(self._rotation)

    @property
    def queued_count(self) -> int:
        return sum(len(queue) for queue in self._ready.values())

    def _gauge_held(self) -> list[tuple[dict[str, str], float]]:
        return [({}, float(self.held_count))]

    def _gauge_queued(self) -> list[tuple[dict[str, str], float]]:
        return [({}, float(self.queued_count))]

    def _gauge_in_flight(self) -> list[tuple[dict[str, str], float]]:
        return [({}, float(self.in_flight_count))]

    def _gauge_paused(self) -> list[tuple[dict[str, str], float]]:
        return [({"shop": shop}, 1.0 if shop in self._paused else 0.0) for shop in sorted(self._sessions)]
