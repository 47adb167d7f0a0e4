"""The changes the market makes to its trades: what kinds there are, how often each happens, which
statuses each fits, and what each does to a copy of the trade and which TMC topic announces it
(docs/tmc-protocol.md#trade-topics).

A change edits a fresh copy (see copy_trade): versions already handed out are never edited in place.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from simulator import catalog
from simulator.clock import whole_seconds
from simulator.lifecycle import (
    BUYER_SIGNED,
    CLOSED,
    CLOSED_BY_TAOBAO,
    CONSIGNED_PART,
    FINISHED,
    LEGAL_MOVES,
    NO_CREATE_PAY,
    WAIT_BUYER_CONFIRM,
    WAIT_BUYER_PAY,
    WAIT_SELLER_SEND,
)
from simulator.trade_orders import Order, refund_id
from simulator.trade_values import cents, money, top_time
from simulator.tradegen import RawTrade
from taobao.timefmt import parse_top_time

# A change's TMC topic (short name) and the content fields it adds to the trade's own.
Announcement = tuple[str, dict[str, Any]]


@dataclass(slots=True)
class Edit:
    """One change in the making."""

    raw: RawTrade  # the copy being edited
    orders: list[Order]  # raw's sub-orders
    status: str  # the trade's status before the change
    now: int
    stamp: str  # `now` as a TOP time
    rng: random.Random
    extra: dict[str, Any]  # content fields beyond the trade's own (the sub-order the change is about...)


def copy_trade(raw: RawTrade) -> RawTrade:
    """Copy deep enough that the new version can be edited without touching the old one."""
    new = dict(raw)
    new["orders"] = {"order": [dict(order) for order in raw["orders"]["order"]]}
    return new


def set_status(raw: RawTrade, status: str) -> None:
    """The trade's status, and that of every sub-order not closed by a refund."""
    raw["status"] = status
    for order in raw["orders"]["order"]:
        if order["status"] != CLOSED:
            order["status"] = status


def _alipay_create(e: Edit) -> str:
    set_status(e.raw, WAIT_BUYER_PAY)
    return "TradeAlipayCreate"


def _pay(e: Edit) -> str:
    raw = e.raw
    if raw.get("step_trade_status") == "FRONT_NOPAID_FINAL_NOPAID":
        # A step (presale) trade pays its deposit first.
        raw["step_trade_status"] = "FRONT_PAID_FINAL_NOPAID"
        raw["step_paid_fee"] = money(cents(raw["payment"]) * 3 // 10)
        return "TradeBuyerStepPay"
    set_status(raw, WAIT_SELLER_SEND)
    raw["pay_time"] = e.stamp
    raw["alipay_no"] = f"2024{e.rng.randrange(10**23, 10**24)}"
    raw["alipay_id"] = 2088_000_000_000_000 + e.rng.randrange(10**12)
    raw["available_confirm_fee"] = raw["payment"]
    raw.pop("timeout_action_time", None)
    if "step_trade_status" in raw:
        raw["step_trade_status"] = "FRONT_PAID_FINAL_PAID"
        raw["step_paid_fee"] = raw["payment"]
    return "TradeBuyerPay"


def _close_unpaid(e: Edit) -> str:
    set_status(e.raw, CLOSED_BY_TAOBAO)
    e.raw["end_time"] = e.stamp
    e.raw.pop("timeout_action_time", None)
    for order in e.orders:
        order["end_time"] = e.stamp
    return "TradeClose"


def _modify_fee(e: Edit) -> str:
    raw = e.raw
    base = cents(raw["total_fee"]) - cents(raw["discount_fee"]) + cents(raw["post_fee"])
    adjust = -e.rng.randrange(0, max(base // 10, 1))
    raw["adjust_fee"] = money(adjust)
    raw["payment"] = money(base + adjust)
    if len(e.orders) == 1:
        e.orders[0]["adjust_fee"] = money(adjust)
        e.orders[0]["payment"] = raw["payment"]
    return "TradeModifyFee"


def _ship(e: Edit, *, partly: bool) -> str:
    """Ship every waiting sub-order, or (partly, when two or more wait) only the first."""
    raw = e.raw
    waiting = [o for o in e.orders if o["status"] == WAIT_SELLER_SEND and o["refund_status"] == "NO_REFUND"]
    partial = partly and len(waiting) >= 2
    shipping = waiting[:1] if partial else waiting
    for order in shipping:
        order["status"] = WAIT_BUYER_CONFIRM
        order["consign_time"] = e.stamp
        if raw["shipping_type"] != "virtual":
            order["logistics_company"] = e.rng.choice(catalog.LOGISTICS_COMPANIES)
            order["invoice_no"] = str(e.rng.randrange(10**11, 10**12))
    if shipping:
        e.extra["oid"] = shipping[0]["oid"]
    raw["consign_time"] = e.stamp
    if partial:
        raw["status"] = CONSIGNED_PART
        raw["is_part_consign"] = True
        return "TradePartlySellerShip"
    raw["status"] = WAIT_BUYER_CONFIRM
    raw["timeout_action_time"] = top_time(e.now + 10 * 86400)
    return "TradeSellerShip"


def _delay_confirm(e: Edit) -> str:
    current = e.raw.get("timeout_action_time")
    base = e.now if current is None else max(e.now, whole_seconds(parse_top_time(current)))
    e.raw["timeout_action_time"] = top_time(base + 3 * 86400)
    return "TradeDelayConfirmPay"


def _finish(e: Edit) -> str:
    raw = e.raw
    if raw["type"] == "cod" and e.status == WAIT_BUYER_CONFIRM:
        # Cash on delivery: the buyer signs for the goods first, and the trade finishes later.
        set_status(raw, BUYER_SIGNED)
        raw["cod_status"] = "SIGN_IN"
        return "TradeChanged"
    set_status(raw, FINISHED)
    raw["end_time"] = e.stamp
    raw["seller_can_rate"] = True
    raw.pop("timeout_action_time", None)
    refunded = sum(cents(o["payment"]) for o in e.orders if o["refund_status"] == "SUCCESS")
    received = max(cents(raw["payment"]) - refunded, 0)
    raw["received_payment"] = money(received)
    raw["commission_fee"] = money(received // 100)
    for order in e.orders:
        order["end_time"] = e.stamp
    return "TradeSuccess"


def _refund(e: Edit) -> str:
    """One open sub-order is refunded; the trade closes with its last."""
    raw = e.raw
    open_orders = [o for o in e.orders if o["refund_status"] == "NO_REFUND"]
    order = open_orders[e.rng.randrange(len(open_orders))]
    order["refund_status"] = "SUCCESS"
    order["refund_id"] = refund_id(order["oid"])
    order["status"] = CLOSED
    order["end_time"] = e.stamp
    e.extra["oid"] = order["oid"]
    remaining = cents(raw["available_confirm_fee"]) - cents(order["payment"])
    raw["available_confirm_fee"] = money(max(remaining, 0))
    if len(open_orders) > 1:
        return "TradePartlyRefund"
    raw["status"] = CLOSED
    raw["end_time"] = e.stamp
    raw.pop("timeout_action_time", None)
    return "TradeClose"


def _memo(e: Edit) -> str:
    e.raw["seller_memo"] = e.rng.choice(catalog.SELLER_MEMOS)
    e.raw["seller_flag"] = e.rng.randrange(0, 6)
    e.extra["action_type"] = "seller"
    return "TradeMemoModified"


def _address(e: Edit) -> str:
    rng = e.rng
    state, city, district, zip_code = rng.choice(catalog.REGIONS)
    e.raw.update(
        receiver_state=state,
        receiver_city=city,
        receiver_district=district,
        receiver_zip=zip_code,
        receiver_address=f"{rng.choice(catalog.STREETS)}{rng.randrange(1, 999)}号**",
        oaid=f"{rng.getrandbits(128):032x}",
    )
    return "TradeLogisticsAddressChanged"


def _rate(e: Edit) -> str:
    raw = e.raw
    rater = "seller" if raw.get("buyer_rate") and not raw.get("seller_rate") else "buyer"
    raw[f"{rater}_rate"] = True
    for order in e.orders:
        order[f"{rater}_rate"] = True
    e.extra["rater"] = rater
    return "TradeRated"


class ChangeKind(NamedTuple):
    name: str
    weight: int
    applies_to: tuple[str, ...]  # the statuses of the trades it may change
    edit: Callable[[Edit], str] | None  # None: "create", which makes a new trade instead


# The order matters: the market's dice walk it (see pick_kind).
CHANGE_KINDS: tuple[ChangeKind, ...] = (
    ChangeKind("create", 20, (), None),
    ChangeKind("alipay_create", 6, (NO_CREATE_PAY,), _alipay_create),
    ChangeKind("pay", 18, (WAIT_BUYER_PAY,), _pay),
    ChangeKind("close_unpaid", 5, (NO_CREATE_PAY, WAIT_BUYER_PAY), _close_unpaid),
    ChangeKind("modify_fee", 3, (NO_CREATE_PAY, WAIT_BUYER_PAY), _modify_fee),
    ChangeKind("partly_ship", 3, (WAIT_SELLER_SEND,), lambda e: _ship(e, partly=True)),
    ChangeKind("ship", 14, (WAIT_SELLER_SEND, CONSIGNED_PART), lambda e: _ship(e, partly=False)),
    ChangeKind("delay_confirm", 1, (WAIT_BUYER_CONFIRM,), _delay_confirm),
    ChangeKind("finish", 12, (WAIT_BUYER_CONFIRM, BUYER_SIGNED), _finish),
    ChangeKind("refund", 4, (WAIT_SELLER_SEND, CONSIGNED_PART, WAIT_BUYER_CONFIRM, BUYER_SIGNED), _refund),
    ChangeKind("memo", 6, tuple(LEGAL_MOVES), _memo),
    ChangeKind("address", 3, (NO_CREATE_PAY, WAIT_BUYER_PAY, WAIT_SELLER_SEND), _address),
    ChangeKind("rate", 3, (FINISHED,), _rate),
)
_BY_NAME = {kind.name: kind for kind in CHANGE_KINDS}
_TOTAL_WEIGHT = sum(kind.weight for kind in CHANGE_KINDS)


def pick_kind(rng: random.Random) -> ChangeKind:
    """A kind of change, by weight."""
    r = rng.randrange(_TOTAL_WEIGHT)
    for kind in CHANGE_KINDS:
        if r < kind.weight:
            return kind
        r -= kind.weight
    return CHANGE_KINDS[-1]


def apply_change(name: str, raw: RawTrade, status: str, now: int, rng: random.Random) -> Announcement:
    """Make change `name` to `raw` (a copy of a trade in `status`) at `now`."""
    kind = _BY_NAME.get(name)
    if kind is None or kind.edit is None:
        raise ValueError(f"{name!r} is not a change to an existing trade")
    orders: list[Order] = raw["orders"]["order"]
    edit = Edit(raw, orders, status, now, top_time(now), rng, {"oid": orders[0]["oid"]})
    return kind.edit(edit), edit.extra


def edit_buyer_memo(raw: RawTrade, text: str) -> Announcement:
    """The buyer's memo becomes `text` (whatever the buyer typed)."""
    raw["buyer_memo"] = text
    return "TradeMemoModified", {"oid": raw["orders"]["order"][0]["oid"], "action_type": "buyer"}
