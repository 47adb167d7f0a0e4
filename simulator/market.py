"""The order market: seeded shops whose trades are created, paid, shipped, finished, closed, refunded and
edited, every change bumping `modified` and announced as a `MarketChange`.

It is the stand-in's ground truth. The gateway reads it (with list lag applied), the TMC server turns its
changes into pushes, tests compare what the service stored with it.

Every trade keeps a short history of versions so list calls can show what Taobao's lagging list
indexes would show (docs/top-api.md#data-delay); a version is a raw dict, or for untouched history trades a
small `Skeleton` rebuilt on demand. The parts: trade_index (records and indexes), trade_changes (what
each change does), tradegen (building trades), trade_history (history trades' states), truth (snapshots).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from simulator.clock import Clock, SystemClock, from_seconds, whole_seconds
from simulator.lifecycle import LEGAL_MOVES, NO_CREATE_PAY, TOPIC_FIELDS, WAIT_BUYER_PAY, full_topic
from simulator.shops import Shop, ShopPicker, make_shops
from simulator.trade_changes import Announcement, apply_change, copy_trade, edit_buyer_memo, pick_kind
from simulator.trade_history import plan_history
from simulator.trade_index import Payload, TradeIndex, TradeRecord, Version
from simulator.trade_types import pick_type
from simulator.trade_values import top_time
from simulator.tradegen import MAX_ORDERS, TID_BASE, TID_GRID, RawTrade, Skeleton, TradeFactory, trade_seed
from simulator.truth import TruthBuilder, TruthRows, TruthSnapshot

__all__ = ["ChangeListener", "Market", "MarketChange", "MarketConfig", "Payload", "TradeRecord", "Version"]

logger = logging.getLogger(__name__)

ChangeListener = Callable[["MarketChange"], None]
_MAX_BURST = 1000
# Snapshots of fewer trades are built on the loop: a thread costs more than their digests.
_THREAD_FROM_ROWS = 2000


@dataclass(frozen=True, slots=True)
class MarketChange:
    """One change to one trade, as the TMC channel would announce it."""

    seq: int
    tid: int
    seller_nick: str
    seller_id: int
    topic: str  # full TMC topic, e.g. "taobao_trade_TradeBuyerPay"
    modified: datetime
    content: dict[str, Any]  # the topic's TMC content fields (docs/tmc-protocol.md#trade-topics)
    status: str  # the trade's status after the change


@dataclass
class MarketConfig:
    seed: int = 1
    shops: int = 3
    # Trades created over the last `history_days` days before the market opens (initial-load tests).
    history_trades: int = 0
    history_days: int = 90
    # Changes per second when the market runs on its own.
    rate: float = 5.0
    # Older versions are dropped once a newer one is this old; list lag beyond it shows the oldest kept.
    version_retention_seconds: int = 3600
    # Cap on the change log kept for truth (None keeps all); seq numbers keep counting.
    change_log_limit: int | None = None
    # Bytes of buyer's message on every trade (0: the usual short ones): fullinfo answers that large.
    trade_text_bytes: int = 0


class Market:
    """Seeded shops and their trades. Not thread-safe: drive it from one event loop."""

    def __init__(self, config: MarketConfig | None = None, clock: Clock | None = None) -> None:
        self.config = config or MarketConfig()
        self.clock: Clock = clock or SystemClock()
        self._rng = random.Random(self.config.seed)
        self.shops: tuple[Shop, ...] = make_shops(self._rng, self.config.shops)
        self._factory = TradeFactory(self.shops, self.config.trade_text_bytes)
        self._shop_picker = ShopPicker(len(self.shops))
        self._index = TradeIndex(len(self.shops), LEGAL_MOVES)
        self._truth = TruthBuilder(self.materialize, [shop.nick for shop in self.shops])
        self._listeners: list[ChangeListener] = []
        self._changes: list[MarketChange] = []
        self._dropped_changes = 0
        self._seq = 0
        self.counters: Counter[str] = Counter()
        self._rate = self.config.rate
        self._task: asyncio.Task[None] | None = None
        self._running = asyncio.Event()
        self._running.set()
        # Called with each new trade's tid: the buyer message the buyer typed instead of the generated
        # one, or None. Hooked up by whoever owns the knob (the stand-in's odd_text_rate).
        self.typed_buyer_message: Callable[[int], str | None] | None = None
        if self.config.history_trades:
            self.generate_history(self.config.history_trades, self.config.history_days)

    def shop_index(self, nick: str) -> int | None:
        for i, shop in enumerate(self.shops):
            if shop.nick == nick:
                return i
        return None

    # ----- listeners ---------------------------------------------------------------------------------

    def add_change_listener(self, fn: ChangeListener) -> None:
        """`fn` is called synchronously, in order, for every change after it is applied."""
        self._listeners.append(fn)

    def remove_change_listener(self, fn: ChangeListener) -> None:
        self._listeners.remove(fn)

    # ----- reading -----------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._index)

    def record(self, tid: int) -> TradeRecord | None:
        return self._index.get(tid)

    def materialize(self, payload: Payload) -> RawTrade:
        """The raw trade of a version. Safe from another thread: versions are never edited in place."""
        if isinstance(payload, Skeleton):
            return self._factory.build(payload)
        return payload

    def trade(self, tid: int) -> RawTrade | None:
        """The trade as it is now (fullinfo view). The dict is shared: do not edit it."""
        rec = self._index.get(tid)
        return None if rec is None else self.materialize(rec.current)

    def visible_version(self, rec: TradeRecord, cutoff: int | None) -> Version | None:
        """The newest version whose `modified` is at or before `cutoff` (None: the current one)."""
        return rec.visible_version(cutoff)

    def created_between(self, shop: int, start: int, end: int) -> list[TradeRecord]:
        """Trades of `shop` with start <= created <= end, by created ascending."""
        return self._index.created_between(shop, start, end)

    def modified_candidates(self, shop: int, start: int, end: int, cutoff: int | None) -> list[TradeRecord]:
        """See TradeIndex.modified_candidates."""
        return self._index.modified_candidates(shop, start, end, cutoff)

    def records(self, shop: int | None = None) -> Iterable[TradeRecord]:
        return self._index.all() if shop is None else self._index.of_shop(shop)

    @property
    def changes(self) -> Sequence[MarketChange]:
        """Every change kept, in seq order (see MarketConfig.change_log_limit)."""
        return self._changes

    @property
    def change_count(self) -> int:
        return self._seq

    # ----- truth -------------------------------------------------------------------------------------

    def truth(
        self, shop: str | None = None, digests: bool = True, tids: Iterable[int] | None = None
    ) -> TruthSnapshot:
        """A snapshot of the current state of (some) trades. The first digest of an untouched history
        trade costs a rebuild (about 50 µs); digests are cached per version."""
        return self.build_truth(self.truth_rows(shop, tids), digests)

    def truth_rows(self, shop: str | None = None, tids: Iterable[int] | None = None) -> TruthRows:
        """Step one of a snapshot, cheap, on the loop: which trades, in which version, and the counters."""
        shop_i = None if shop is None else self.shop_index(shop)
        chosen: Iterable[TradeRecord]
        if shop is not None and shop_i is None:
            chosen = []
        elif tids is not None:
            chosen = [self._index[t] for t in tids if t in self._index]
        else:
            chosen = self.records(shop_i)
        picked = [rec for rec in chosen if shop_i is None or rec.shop == shop_i]
        return TruthRows.of(picked, self._seq, dict(self.counters))

    def build_truth(self, rows: TruthRows, digests: bool = True) -> TruthSnapshot:
        """Step two: digests and the snapshot. Safe in a worker thread (it reads immutable versions)."""
        return self._truth.build(rows, digests)

    async def truth_async(
        self, shop: str | None = None, digests: bool = True, tids: Iterable[int] | None = None
    ) -> TruthSnapshot:
        """Like truth(), but digests are computed in a worker thread so a large snapshot (100k history
        trades take seconds the first time) does not stall the gateway and the push channel."""
        rows = self.truth_rows(shop, tids)
        if not digests or len(rows.rows) < _THREAD_FROM_ROWS:
            return self.build_truth(rows, digests)
        return await asyncio.to_thread(self.build_truth, rows, digests)

    # ----- history -----------------------------------------------------------------------------------

    def _new_tid(self, rng: random.Random) -> int:
        while True:
            tid = TID_BASE + rng.randrange(10**17 // TID_GRID) * TID_GRID
            if tid not in self._index:
                return tid

    @staticmethod
    def _order_count(rng: random.Random) -> int:
        r = rng.random()
        if r < 0.7:
            return 1
        if r < 0.9:
            return 2
        return rng.randrange(3, MAX_ORDERS + 1)

    def generate_history(self, count: int, days: int = 90) -> None:
        """Add `count` trades created over the last `days` days, each in a state that fits its age.
        They predate the market's opening, so they announce no changes. Costs about 10 µs a trade."""
        rng = random.Random(self.config.seed * 7_919 + 17)
        now = whole_seconds(self.clock.now())
        span = max(days * 86400 - 60, 1)
        for _ in range(count):
            created = now - 60 - int(rng.random() * span)
            shop = self._shop_picker.pick(rng)
            trade_type = pick_type(rng)
            n_orders = self._order_count(rng)
            tid = self._new_tid(rng)
            plan = plan_history(rng, created, now, trade_type, n_orders)
            sk = Skeleton(
                tid, shop, trade_type, plan.status, created, plan.modified, plan.pay_time, plan.consign_time,
                plan.end_time, n_orders, trade_seed(self.config.seed, tid),
            )  # fmt: skip
            versions: list[Version] = [(plan.modified, sk)]
            rec = TradeRecord(tid, shop, trade_type, created, plan.status, plan.modified, versions)
            self._index.add(rec, keep_sorted=False)
        self._index.sort()
        self.counters["history_trades"] += count

    # ----- stepping ----------------------------------------------------------------------------------

    def step(self, n: int = 1) -> list[MarketChange]:
        """Make exactly `n` changes now (deterministic for a given seed and clock)."""
        return [self._one_change() for _ in range(n)]

    def _now(self) -> int:
        return whole_seconds(self.clock.now())

    def _one_change(self) -> MarketChange:
        kind = pick_kind(self._rng)
        if kind.edit is not None:
            tid = self._index.pick(self._rng, kind.applies_to)
            if tid is not None:
                return self._apply(kind.name, self._index[tid])
        return self._create()  # a create, or a change no trade fits yet

    def _create(self) -> MarketChange:
        rng = self._rng
        now = self._now()
        tid = self._new_tid(rng)
        shop = self._shop_picker.pick(rng)
        trade_type = pick_type(rng)
        status = NO_CREATE_PAY if rng.random() < 0.15 else WAIT_BUYER_PAY
        sk = Skeleton(
            tid, shop, trade_type, status, now, now, None, None, None, self._order_count(rng),
            trade_seed(self.config.seed, tid),
        )  # fmt: skip
        raw = self._factory.build(sk)
        typed = self.typed_buyer_message(tid) if self.typed_buyer_message is not None else None
        if typed is not None:
            raw["buyer_message"] = typed
            raw["has_buyer_message"] = True
        rec = TradeRecord(tid, shop, trade_type, now, status, now, [(now, raw)])
        self._index.add(rec)
        self.counters["trades_created"] += 1
        return self._emit(rec, raw, "TradeCreate", {"oid": raw["orders"]["order"][0]["oid"]})

    def _apply(self, action: str, rec: TradeRecord) -> MarketChange:
        """Make the change `action` (see trade_changes.CHANGE_KINDS) to the trade."""
        return self._change(rec, lambda raw, now: apply_change(action, raw, rec.status, now, self._rng))

    def edit_buyer_memo(self, tid: int, text: str) -> MarketChange:
        """The buyer edits the trade's buyer memo to `text` (any characters: this is what the buyer
        typed). A real change: `modified` moves and a TradeMemoModified is announced."""
        rec = self._index.get(tid)
        if rec is None:
            raise ValueError(f"unknown tid {tid}")
        return self._change(rec, lambda raw, _now: edit_buyer_memo(raw, text))

    def _change(self, rec: TradeRecord, edit: Callable[[RawTrade, int], Announcement]) -> MarketChange:
        """Edit a copy of the trade's current version, keep it as the newest version, announce it."""
        now = max(self._now(), rec.modified)
        raw = copy_trade(self.materialize(rec.current))
        topic, extra = edit(raw, now)
        raw["modified"] = top_time(now)
        self._index.update(rec, now, raw["status"])
        rec.add_version(now, raw, self.config.version_retention_seconds)
        return self._emit(rec, raw, topic, extra)

    def _emit(self, rec: TradeRecord, raw: RawTrade, topic_name: str, extra: dict[str, Any]) -> MarketChange:
        source = dict(raw)
        source.update(extra)
        content = {key: source[key] for key in TOPIC_FIELDS[topic_name] if key in source}
        self._seq += 1
        shop = self.shops[rec.shop]
        change = MarketChange(
            seq=self._seq,
            tid=rec.tid,
            seller_nick=shop.nick,
            seller_id=shop.user_id,
            topic=full_topic(topic_name),
            modified=from_seconds(rec.modified),
            content=content,
            status=rec.status,
        )
        self.counters[topic_name] += 1
        self._changes.append(change)
        limit = self.config.change_log_limit
        if limit is not None and len(self._changes) > limit * 2:
            # Trim in batches so appends stay O(1) on average.
            self._dropped_changes += len(self._changes) - limit
            del self._changes[: len(self._changes) - limit]
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:
                logger.exception(
                    "market change listener failed",
                    extra={"action": "market_listener_failed", "tid": rec.tid},
                )
        return change

    # ----- running on its own ------------------------------------------------------------------------

    @property
    def rate(self) -> float:
        return self._rate

    def set_rate(self, rate: float) -> None:
        if rate < 0:
            raise ValueError("rate must be >= 0")
        self._rate = rate

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def start(self, rate: float | None = None) -> None:
        """Run `rate` changes per second in the background on the current event loop."""
        if rate is not None:
            self.set_rate(rate)
        if self.running:
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name="market-run")

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            if not self._running.is_set() or self._rate <= 0:
                if self._rate <= 0:
                    await asyncio.sleep(0.2)  # rate 0 means idle; re-read the rate now and then
                await self._running.wait()
                next_at = loop.time()
                continue
            interval = 1.0 / self._rate
            now = loop.time()
            if now < next_at:
                await asyncio.sleep(next_at - now)
                continue
            due = min(int((now - next_at) / interval) + 1, _MAX_BURST)
            self.step(due)
            next_at += due * interval
            if loop.time() - next_at > 1.0:
                next_at = loop.time()  # fell far behind: do not try to catch up
