"""What the TMC stream has proven, per shop, watched from the side of the channel.

The stream proves a stretch of `modified` time for a shop when the connection was up all through it
and every message received for the shop with a time in it has been committed
(docs/design.md#coverage-ledger). Conservatively:

* a segment starts when a connection is made (`Connected.at`): what was published while we were away
  is a gap, even though TMC normally keeps it for us (pushes do get lost, docs/sync-rules.md#push-loss);
* it reaches `min(now - settle, the oldest message still not committed)`: a message counts from the
  moment it is received until the dispatcher confirms it (it only does so after the commit); a
  message handed back (Failed) stays open, since its trade is not committed; `settle` covers pushes
  still in transit;
* it ends at the disconnect, at the same bound;
* while TOP calls are paused app-wide (docs/design.md#app-wide-pause) it stops where the pause began:
  messages received then cannot be fetched, so the stream proves nothing until the pause clears.

With several replicas (`replicas.replica_set`), the other replicas' oldest uncommitted messages bound
the proof too (`bound_by_peers`), and this replica publishes its own (`hold`), including, for a while
after a disconnect, the messages it had not committed when the connection ended (TMC redelivers them
to another connection).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from common.intervals import Interval
from taobao.tmc.events import TmcMessage

logger = logging.getLogger(__name__)

ANY_SHOP = ""  # messages that name no shop hold back every shop's proof
# How long messages left uncommitted at a disconnect keep holding the other replicas' proof: TMC
# redelivers them at once when it sees the connection close, after its confirm timeout (~1 min) if not.
RELEASED_HOLD = timedelta(seconds=120)


class StreamWatch:
    def __init__(
        self,
        shops: Iterable[str],
        *,
        settle: timedelta,
        now: Callable[[], datetime],
        rate_window: timedelta = timedelta(hours=1),
        paused_since: Callable[[], datetime | None] = lambda: None,
        observe_time: Callable[[datetime, datetime], None] = lambda published, received: None,
    ) -> None:
        """`observe_time(published, received)` hears every message's time (a clock skew floor)."""
        self._paused_since = paused_since
        self._observe_time = observe_time
        # The shops the stream proves, and since when (None: since the segment began). A shop joins
        # once TMC delivers its messages (its permit succeeded) and leaves when it is no longer served.
        self._followed: dict[str, datetime | None] = dict.fromkeys(shops)
        self.settle = settle
        self._now = now
        self._rate_window = rate_window
        self._pending: dict[int, tuple[str, datetime]] = {}
        self.segment_start: datetime | None = None  # None while disconnected
        self._recorded: dict[str, datetime] = {}  # how far each shop's current segment was proven
        self.last_message: dict[str, datetime] = {}
        self.last_push: dict[str, datetime] = {}  # the last message received per shop (not a connect)
        self._recent: dict[str, deque[datetime]] = {shop: deque() for shop in self._followed}
        self.received_count = 0
        self._peer_bound: datetime | None = None
        self._released: tuple[datetime, datetime] | None = None  # (oldest held at a disconnect, when)

    @property
    def connected(self) -> bool:
        return self.segment_start is not None

    @property
    def shops(self) -> list[str]:
        return list(self._followed)

    def follows(self, shop: str) -> bool:
        return shop in self._followed

    def follow(self, shop: str, since: datetime) -> None:
        """The stream carries `shop`'s changes from `since` on (no proof of it before that)."""
        if shop not in self._followed:
            self._followed[shop] = since
            self._recent.setdefault(shop, deque())
            self._recorded.pop(shop, None)
            if self.connected:
                self.last_message[shop] = max(self.last_message.get(shop, since), since)

    def unfollow(self, shop: str) -> None:
        """`shop` is no longer served, or its messages are not delivered: the stream proves nothing of it."""
        self._followed.pop(shop, None)
        self._recorded.pop(shop, None)

    # ---- what the channel reports ------------------------------------------------------------------

    def received(self, message: TmcMessage) -> None:
        now = self._now()
        if message.time is not None:
            self._observe_time(message.time, now)
        shop = message.nick if message.nick in self._followed else ANY_SHOP
        at = now if message.time is None else min(message.time, now)
        known = self._pending.get(message.id)
        if known is None or at < known[1]:
            self._pending[message.id] = (shop, at)
        self.received_count += 1
        if shop != ANY_SHOP:
            self.last_message[shop] = now
            self.last_push[shop] = now
            recent = self._recent[shop]
            recent.append(now)
            while recent and recent[0] < now - self._rate_window:
                recent.popleft()

    def settled(self, message_id: int) -> None:
        """The message's trade state (or a newer one) is committed, or it was quarantined."""
        self._pending.pop(message_id, None)

    def connected_at(self, at: datetime) -> None:
        self.segment_start = at
        self._recorded = {}
        for shop in self.shops:
            # Silence is measured from the connect when nothing came yet.
            self.last_message.setdefault(shop, at)
            self.last_message[shop] = max(self.last_message[shop], at)

    def disconnected_at(self, at: datetime) -> dict[str, Interval]:
        """Close the segment; returns what it proved per shop that was not recorded yet."""
        provable = self.provable(at)
        self.segment_start = None
        if self._pending:
            self._released = (min(t for _, t in self._pending.values()), at)
        self._pending.clear()  # unconfirmed messages come back on the next connection, if at all
        return provable

    # ---- what the reconciler asks ------------------------------------------------------------------

    def watermark(self, shop: str, now: datetime) -> datetime:
        """How far the stream has proven `shop` by `now` (ignoring whether it is connected)."""
        bound = now - self.settle
        for pending_shop, at in self._pending.values():
            if pending_shop in (shop, ANY_SHOP) and at < bound:
                bound = at
        if self._peer_bound is not None and self._peer_bound < bound:
            bound = self._peer_bound
        paused = self._paused_since()
        if paused is not None and paused - self.settle < bound:
            bound = paused - self.settle
        return bound

    def hold(self) -> datetime | None:
        """The oldest message time this replica holds uncommitted (any shop), for the other replicas."""
        times = [at for _, at in self._pending.values()]
        if self._released is not None:
            oldest, released_at = self._released
            if self._now() - released_at < RELEASED_HOLD:
                times.append(oldest)
            else:
                self._released = None
        return min(times) if times else None

    def bound_by_peers(self, bound: datetime | None) -> None:
        """The oldest message the other replicas hold uncommitted (None: none): no proof beyond it."""
        self._peer_bound = bound

    def provable(self, now: datetime) -> dict[str, Interval]:
        """Per shop, the part of the current segment proven since it was last recorded."""
        start = self.segment_start
        if start is None:
            return {}
        out: dict[str, Interval] = {}
        for shop, since in list(self._followed.items()):
            first = start if since is None else max(start, since)
            end = self.watermark(shop, now)
            begin = max(first, self._recorded.get(shop, first))
            if end > begin:
                out[shop] = Interval(first, end)
        return out

    def recorded(self, shop: str, end: datetime) -> None:
        self._recorded[shop] = max(end, self._recorded.get(shop, end))

    def proven_end(self, shop: str) -> datetime | None:
        """Where the current (or just closed) segment's recorded proof for `shop` ends."""
        return self._recorded.get(shop)

    def silent_for(self, shop: str, now: datetime) -> timedelta | None:
        last = self.last_message.get(shop)
        return None if last is None else now - last

    def expected_messages(self, shop: str, span: timedelta, now: datetime) -> float:
        """Messages `shop` would normally send in `span`, from its rate over the last hour (before the
        current silence: a silence does not lower its own expectation)."""
        recent = self._recent.get(shop)
        if not recent:
            return 0.0
        while recent and recent[0] < now - self._rate_window:
            recent.popleft()
        if not recent:
            return 0.0
        observed = max((recent[-1] - recent[0]).total_seconds(), 1.0)
        return len(recent) / observed * span.total_seconds()

    def reset_silence(self, shop: str, now: datetime) -> None:
        self.last_message[shop] = now
