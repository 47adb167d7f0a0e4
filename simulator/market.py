"""The order market: seeded shops whose trades are created, paid, shipped, finished, closed, refunded and
edited, every change bumping `modified` and announced as a `MarketChange`.

It is the stand-in's ground truth. The gateway reads it (with list lag applied), the TMC server turns its
changes into pushes, tests compare what the service stored with it.

Every trade keeps a short history of versions so list calls can show what Taobao's lagging list
indexes would show (docs/top-api.md#data-delay); a version is a raw dict, or for untouched history trades a
small `Skeleton` rebuilt on demand.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from simulator import catalog
from simulator.clock import Clock, SystemClock, from_seconds, whole_seconds
from simulator.lifecycle import (
    BUYER_SIGNED,
    CLOSED,
    CLOSED_BY_TAOBAO,
    CONSIGNED_PART,
    FINISHED,
    LEGAL_MOVES,
    NO_CREATE_PAY,
    TOPIC_FIELDS,
    WAIT_BUYER_CONFIRM,
    WAIT_BUYER_PAY,
    WAIT_SELLER_SEND,
    full_topic,
)
from simulator.shops import Shop, ShopPicker, make_shops
from simulator.trade_history import plan_history
from simulator.trade_orders import refund_id
from simulator.trade_types import pick_type
from simulator.trade_values import cents, money, top_time
from simulator.tradegen import MAX_ORDERS, TID_BASE, TID_GRID, Skeleton, TradeFactory, trade_seed
from simulator.truth import TradeTruth, TruthSnapshot, trade_digest
from taobao.timefmt import parse_top_time

logger = logging.getLogger(__name__)

RawTrade = dict[str, Any]
Payload = RawTrade | Skeleton
# (modified epoch seconds, the trade as it was from then on)
Version = tuple[int, Payload]
ChangeListener = Callable[["MarketChange"], None]


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


@dataclass(frozen=True, slots=True)
class TruthRows:
    """What a truth snapshot is built from, captured at one instant."""

    rows: list[tuple[int, int, str, str, int, int, Payload]]
    change_count: int
    counters: dict[str, int]


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


@dataclass(slots=True)
class TradeRecord:
    """Index fields of one trade (current state) and its recent versions, oldest first."""

    tid: int
    shop: int
    type: str
    created: int
    status: str
    modified: int
    versions: list[Version]

    @property
    def current(self) -> Payload:
        return self.versions[-1][1]


class _Pool:
    """A set of tids with O(1) add, remove and uniform random pick."""

    __slots__ = ("_items", "_pos")

    def __init__(self) -> None:
        self._items: list[int] = []
        self._pos: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._items)

    def add(self, tid: int) -> None:
        if tid not in self._pos:
            self._pos[tid] = len(self._items)
            self._items.append(tid)

    def remove(self, tid: int) -> None:
        index = self._pos.pop(tid)
        last = self._items.pop()
        if index < len(self._items):
            self._items[index] = last
            self._pos[last] = index

    def pick(self, rng: random.Random) -> int:
        return self._items[rng.randrange(len(self._items))]


# (action, weight, statuses it applies to)
_ACTIONS: tuple[tuple[str, int, tuple[str, ...]], ...] = (
    ("create", 20, ()),
    ("alipay_create", 6, (NO_CREATE_PAY,)),
    ("pay", 18, (WAIT_BUYER_PAY,)),
    ("close_unpaid", 5, (NO_CREATE_PAY, WAIT_BUYER_PAY)),
    ("modify_fee", 3, (NO_CREATE_PAY, WAIT_BUYER_PAY)),
    ("partly_ship", 3, (WAIT_SELLER_SEND,)),
    ("ship", 14, (WAIT_SELLER_SEND, CONSIGNED_PART)),
    ("delay_confirm", 1, (WAIT_BUYER_CONFIRM,)),
    ("finish", 12, (WAIT_BUYER_CONFIRM, BUYER_SIGNED)),
    ("refund", 4, (WAIT_SELLER_SEND, CONSIGNED_PART, WAIT_BUYER_CONFIRM, BUYER_SIGNED)),
    ("memo", 6, tuple(LEGAL_MOVES)),
    ("address", 3, (NO_CREATE_PAY, WAIT_BUYER_PAY, WAIT_SELLER_SEND)),
    ("rate", 3, (FINISHED,)),
)
_ACTION_TOTAL = sum(weight for _, weight, _ in _ACTIONS)
_MAX_BURST = 1000


def _copy_trade(raw: RawTrade) -> RawTrade:
    """Copy deep enough that the new version can be edited without touching the old one."""
    new = dict(raw)
    new["orders"] = {"order": [dict(order) for order in raw["orders"]["order"]]}
    return new


class Market:
    """Seeded shops and their trades. Not thread-safe: drive it from one event loop."""

    def __init__(self, config: MarketConfig | None = None, clock: Clock | None = None) -> None:
        self.config = config or MarketConfig()
        self.clock: Clock = clock or SystemClock()
        self._rng = random.Random(self.config.seed)
        self.shops: tuple[Shop, ...] = make_shops(self._rng, self.config.shops)
        self._factory = TradeFactory(self.shops)
        self._shop_picker = ShopPicker(len(self.shops))
        self._records: dict[int, TradeRecord] = {}
        self._by_created: list[list[tuple[int, int]]] = [[] for _ in self.shops]
        self._by_modified: list[list[tuple[int, int]]] = [[] for _ in self.shops]
        self._pools: dict[str, _Pool] = {status: _Pool() for status in LEGAL_MOVES}
        self._listeners: list[ChangeListener] = []
        self._changes: list[MarketChange] = []
        self._digests: dict[int, tuple[Payload, str]] = {}
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
        return len(self._records)

    def record(self, tid: int) -> TradeRecord | None:
        return self._records.get(tid)

    def materialize(self, payload: Payload) -> RawTrade:
        """The raw trade of a version. Safe from another thread: versions are never edited in place."""
        if isinstance(payload, Skeleton):
            return self._factory.build(payload)
        return payload

    def trade(self, tid: int) -> RawTrade | None:
        """The trade as it is now (fullinfo view). The dict is shared: do not edit it."""
        rec = self._records.get(tid)
        return None if rec is None else self.materialize(rec.current)

    def visible_version(self, rec: TradeRecord, cutoff: int | None) -> Version | None:
        """The newest version whose `modified` is at or before `cutoff` (None: the current one)."""
        if cutoff is None or rec.modified <= cutoff:
            return rec.versions[-1]
        for version in reversed(rec.versions):
            if version[0] <= cutoff:
                return version
        if rec.created <= cutoff:
            # The trade existed but its versions that old were dropped (retention) or never recorded
            # (history trades): the oldest kept one is the best answer.
            return rec.versions[0]
        return None

    def created_between(self, shop: int, start: int, end: int) -> list[TradeRecord]:
        """Trades of `shop` with start <= created <= end, by created ascending."""
        index = self._by_created[shop]
        lo = bisect.bisect_left(index, (start, -1))
        hi = bisect.bisect_right(index, (end, 2**63))
        return [self._records[tid] for _, tid in index[lo:hi]]

    def modified_candidates(self, shop: int, start: int, end: int, cutoff: int | None) -> list[TradeRecord]:
        """Trades that may have a visible version with start <= modified <= end: those whose current
        `modified` is in the window, plus (under lag) those changed after max(end, cutoff)."""
        index = self._by_modified[shop]
        lo = bisect.bisect_left(index, (start, -1))
        hi = bisect.bisect_right(index, (end, 2**63))
        tids = [tid for _, tid in index[lo:hi]]
        if cutoff is not None:
            tail = bisect.bisect_right(index, (max(end, cutoff), 2**63))
            tids.extend(tid for _, tid in index[max(tail, hi):])
        return [self._records[tid] for tid in tids]

    def records(self, shop: int | None = None) -> Iterable[TradeRecord]:
        if shop is None:
            return self._records.values()
        return (self._records[tid] for _, tid in self._by_created[shop])

    @property
    def changes(self) -> Sequence[MarketChange]:
        """Every change kept, in seq order (see MarketConfig.change_log_limit)."""
        return self._changes

    @property
    def change_count(self) -> int:
        return self._seq

    def truth(
        self, shop: str | None = None, digests: bool = True, tids: Iterable[int] | None = None
    ) -> TruthSnapshot:
        """A snapshot of the current state of (some) trades. The first digest of an untouched history
        trade costs a rebuild (about 50 µs); digests are cached per version."""
        return self.build_truth(self.truth_rows(shop, tids), digests)

    def truth_rows(self, shop: str | None = None, tids: Iterable[int] | None = None) -> TruthRows:
        """Step one of a snapshot, cheap, on the loop: which trades, in which version, and the counters."""
        shop_i = None if shop is None else self.shop_index(shop)
        if shop is not None and shop_i is None:
            chosen: list[TradeRecord] = []
        elif tids is not None:
            chosen = [self._records[t] for t in tids if t in self._records]
        elif shop_i is not None:
            chosen = list(self.records(shop_i))
        else:
            chosen = list(self._records.values())
        rows = [
            (rec.tid, rec.shop, rec.status, rec.type, rec.created, rec.modified, rec.current)
            for rec in chosen
            if shop_i is None or rec.shop == shop_i
        ]
        return TruthRows(rows, self._seq, dict(self.counters))

    def build_truth(self, rows: TruthRows, digests: bool = True) -> TruthSnapshot:
        """Step two: digests and the snapshot. Safe in a worker thread (it reads immutable versions)."""
        trades: dict[int, TradeTruth] = {}
        cache = self._digests
        for tid, shop, status, trade_type, created, modified, payload in rows.rows:
            digest = None
            if digests:
                cached = cache.get(tid)
                if cached is not None and cached[0] is payload:
                    digest = cached[1]
                else:
                    digest = trade_digest(self.materialize(payload))
                    cache[tid] = (payload, digest)
            trades[tid] = TradeTruth(
                tid=tid,
                seller_nick=self.shops[shop].nick,
                status=status,
                type=trade_type,
                created=from_seconds(created),
                modified=from_seconds(modified),
                digest=digest,
            )
        return TruthSnapshot(
            trades=trades, change_count=rows.change_count, last_seq=rows.change_count, counters=rows.counters
        )

    # ----- history -----------------------------------------------------------------------------------

    def _new_tid(self, rng: random.Random) -> int:
        while True:
            tid = TID_BASE + rng.randrange(10**17 // TID_GRID) * TID_GRID
            if tid not in self._records:
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
        new_by_shop: list[list[TradeRecord]] = [[] for _ in self.shops]
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
            )
            versions: list[Version] = [(plan.modified, sk)]
            rec = TradeRecord(tid, shop, trade_type, created, plan.status, plan.modified, versions)
            self._records[tid] = rec
            self._pools[plan.status].add(tid)
            new_by_shop[shop].append(rec)
        for shop, recs in enumerate(new_by_shop):
            self._by_created[shop].extend((r.created, r.tid) for r in recs)
            self._by_created[shop].sort()
            self._by_modified[shop].extend((r.modified, r.tid) for r in recs)
            self._by_modified[shop].sort()
        self.counters["history_trades"] += count

    # ----- stepping ----------------------------------------------------------------------------------

    def step(self, n: int = 1) -> list[MarketChange]:
        """Make exactly `n` changes now (deterministic for a given seed and clock)."""
        return [self._one_change() for _ in range(n)]

    def _now(self) -> int:
        return whole_seconds(self.clock.now())

    def _one_change(self) -> MarketChange:
        r = self._rng.randrange(_ACTION_TOTAL)
        action, statuses = _ACTIONS[-1][0], _ACTIONS[-1][2]
        for name, weight, applies_to in _ACTIONS:
            if r < weight:
                action, statuses = name, applies_to
                break
            r -= weight
        if action != "create":
            tid = self._pick_trade(statuses)
            if tid is not None:
                return self._apply(action, self._records[tid])
        return self._create()

    def _pick_trade(self, statuses: tuple[str, ...]) -> int | None:
        total = sum(len(self._pools[s]) for s in statuses)
        if total == 0:
            return None
        r = self._rng.randrange(total)
        for status in statuses:
            size = len(self._pools[status])
            if r < size:
                return self._pools[status].pick(self._rng)
            r -= size
        return None

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
        )
        raw = self._factory.build(sk)
        typed = self.typed_buyer_message(tid) if self.typed_buyer_message is not None else None
        if typed is not None:
            raw["buyer_message"] = typed
            raw["has_buyer_message"] = True
        rec = TradeRecord(tid, shop, trade_type, now, status, now, [(now, raw)])
        self._records[tid] = rec
        self._pools[status].add(tid)
        bisect.insort(self._by_created[shop], (now, tid))
        bisect.insort(self._by_modified[shop], (now, tid))
        self.counters["trades_created"] += 1
        return self._emit(rec, raw, "TradeCreate", {"oid": raw["orders"]["order"][0]["oid"]})

    def _apply(self, action: str, rec: TradeRecord) -> MarketChange:
        now = max(self._now(), rec.modified)
        stamp = top_time(now)
        raw = _copy_trade(self.materialize(rec.current))
        orders: list[dict[str, Any]] = raw["orders"]["order"]
        extra: dict[str, Any] = {"oid": orders[0]["oid"]}
        rng = self._rng
        topic: str

        if action == "alipay_create":
            topic = "TradeAlipayCreate"
            self._set_status(raw, WAIT_BUYER_PAY)
        elif action == "pay":
            if raw.get("step_trade_status") == "FRONT_NOPAID_FINAL_NOPAID":
                topic = "TradeBuyerStepPay"
                raw["step_trade_status"] = "FRONT_PAID_FINAL_NOPAID"
                raw["step_paid_fee"] = money(cents(raw["payment"]) * 3 // 10)
            else:
                topic = "TradeBuyerPay"
                self._set_status(raw, WAIT_SELLER_SEND)
                raw["pay_time"] = stamp
                raw["alipay_no"] = f"2024{rng.randrange(10**23, 10**24)}"
                raw["alipay_id"] = 2088_000_000_000_000 + rng.randrange(10**12)
                raw["available_confirm_fee"] = raw["payment"]
                raw.pop("timeout_action_time", None)
                if "step_trade_status" in raw:
                    raw["step_trade_status"] = "FRONT_PAID_FINAL_PAID"
                    raw["step_paid_fee"] = raw["payment"]
        elif action == "close_unpaid":
            topic = "TradeClose"
            self._set_status(raw, CLOSED_BY_TAOBAO)
            raw["end_time"] = stamp
            raw.pop("timeout_action_time", None)
            for order in orders:
                order["end_time"] = stamp
        elif action == "modify_fee":
            topic = "TradeModifyFee"
            base = cents(raw["total_fee"]) - cents(raw["discount_fee"]) + cents(raw["post_fee"])
            adjust = -rng.randrange(0, max(base // 10, 1))
            raw["adjust_fee"] = money(adjust)
            raw["payment"] = money(base + adjust)
            if len(orders) == 1:
                orders[0]["adjust_fee"] = money(adjust)
                orders[0]["payment"] = raw["payment"]
        elif action in ("partly_ship", "ship"):
            waiting = [
                o for o in orders if o["status"] == WAIT_SELLER_SEND and o["refund_status"] == "NO_REFUND"
            ]
            partial = action == "partly_ship" and len(waiting) >= 2
            shipping = waiting[:1] if partial else waiting
            for order in shipping:
                order["status"] = WAIT_BUYER_CONFIRM
                order["consign_time"] = stamp
                if raw["shipping_type"] != "virtual":
                    order["logistics_company"] = rng.choice(catalog.LOGISTICS_COMPANIES)
                    order["invoice_no"] = str(rng.randrange(10**11, 10**12))
            if shipping:
                extra["oid"] = shipping[0]["oid"]
            raw["consign_time"] = stamp
            if partial:
                topic = "TradePartlySellerShip"
                raw["status"] = CONSIGNED_PART
                raw["is_part_consign"] = True
            else:
                topic = "TradeSellerShip"
                raw["status"] = WAIT_BUYER_CONFIRM
                raw["timeout_action_time"] = top_time(now + 10 * 86400)
        elif action == "delay_confirm":
            topic = "TradeDelayConfirmPay"
            current = raw.get("timeout_action_time")
            base_s = now if current is None else max(now, self._parse_stamp(current))
            raw["timeout_action_time"] = top_time(base_s + 3 * 86400)
        elif action == "finish" and raw["type"] == "cod" and rec.status == WAIT_BUYER_CONFIRM:
            topic = "TradeChanged"
            self._set_status(raw, BUYER_SIGNED)
            raw["cod_status"] = "SIGN_IN"
        elif action == "finish":
            topic = "TradeSuccess"
            self._set_status(raw, FINISHED)
            raw["end_time"] = stamp
            raw["seller_can_rate"] = True
            raw.pop("timeout_action_time", None)
            refunded = sum(cents(o["payment"]) for o in orders if o["refund_status"] == "SUCCESS")
            received = max(cents(raw["payment"]) - refunded, 0)
            raw["received_payment"] = money(received)
            raw["commission_fee"] = money(received // 100)
            for order in orders:
                order["end_time"] = stamp
        elif action == "refund":
            open_orders = [o for o in orders if o["refund_status"] == "NO_REFUND"]
            order = open_orders[rng.randrange(len(open_orders))]
            order["refund_status"] = "SUCCESS"
            order["refund_id"] = refund_id(order["oid"])
            order["status"] = CLOSED
            order["end_time"] = stamp
            extra["oid"] = order["oid"]
            remaining = cents(raw["available_confirm_fee"]) - cents(order["payment"])
            raw["available_confirm_fee"] = money(max(remaining, 0))
            if len(open_orders) == 1:
                topic = "TradeClose"
                raw["status"] = CLOSED
                raw["end_time"] = stamp
                raw.pop("timeout_action_time", None)
            else:
                topic = "TradePartlyRefund"
        elif action == "memo":
            topic = "TradeMemoModified"
            raw["seller_memo"] = rng.choice(catalog.SELLER_MEMOS)
            raw["seller_flag"] = rng.randrange(0, 6)
            extra["action_type"] = "seller"
        elif action == "address":
            topic = "TradeLogisticsAddressChanged"
            state, city, district, zip_code = rng.choice(catalog.REGIONS)
            raw.update(
                receiver_state=state,
                receiver_city=city,
                receiver_district=district,
                receiver_zip=zip_code,
                receiver_address=f"{rng.choice(catalog.STREETS)}{rng.randrange(1, 999)}号**",
                oaid=f"{rng.getrandbits(128):032x}",
            )
        elif action == "rate":
            topic = "TradeRated"
            rater = "seller" if raw.get("buyer_rate") and not raw.get("seller_rate") else "buyer"
            raw[f"{rater}_rate"] = True
            for order in orders:
                order[f"{rater}_rate"] = True
            extra["rater"] = rater
        else:  # pragma: no cover - the action table and this chain are kept in step
            raise AssertionError(action)

        raw["modified"] = stamp
        self._store_version(rec, now, raw)
        return self._emit(rec, raw, topic, extra)

    def edit_buyer_memo(self, tid: int, text: str) -> MarketChange:
        """The buyer edits the trade's buyer memo to `text` (any characters: this is what the buyer
        typed). A real change: `modified` moves and a TradeMemoModified is announced."""
        rec = self._records.get(tid)
        if rec is None:
            raise ValueError(f"unknown tid {tid}")
        now = max(self._now(), rec.modified)
        raw = _copy_trade(self.materialize(rec.current))
        raw["buyer_memo"] = text
        raw["modified"] = top_time(now)
        self._store_version(rec, now, raw)
        return self._emit(rec, raw, "TradeMemoModified", {"oid": raw["orders"]["order"][0]["oid"],
                                                          "action_type": "buyer"})  # fmt: skip

    @staticmethod
    def _parse_stamp(value: str) -> int:
        return whole_seconds(parse_top_time(value))

    @staticmethod
    def _set_status(raw: RawTrade, status: str) -> None:
        raw["status"] = status
        for order in raw["orders"]["order"]:
            if order["status"] != CLOSED:
                order["status"] = status

    def _store_version(self, rec: TradeRecord, now: int, raw: RawTrade) -> None:
        shop_index = self._by_modified[rec.shop]
        old_key = (rec.modified, rec.tid)
        pos = bisect.bisect_left(shop_index, old_key)
        if pos < len(shop_index) and shop_index[pos] == old_key:
            del shop_index[pos]
        bisect.insort(shop_index, (now, rec.tid))
        if raw["status"] != rec.status:
            self._pools[rec.status].remove(rec.tid)
            self._pools[raw["status"]].add(rec.tid)
        rec.status = raw["status"]
        rec.modified = now
        versions = rec.versions
        versions.append((now, raw))
        horizon = now - self.config.version_retention_seconds
        while len(versions) > 1 and versions[1][0] <= horizon:
            del versions[0]

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
