"""Builds fullinfo-shaped raw trades (docs/top-api.md#value-formats): money strings, GMT+8 time strings, int64
ids, orders double-wrapped as {"order": [...]}.

A trade's look (buyer, items, address...) comes from its own seeded RNG, so a trade can be rebuilt
identically from a small `Skeleton`. That is how a history of 100k trades stays small in memory: only
trades the market later changes are kept as dicts. The parts are drawn in a fixed order (buyer, region,
delivery, sub-orders, the trade's own fields, notes, payment, status): reorder them and every seeded
market changes.
"""

from __future__ import annotations

import base64
import random
from typing import Any, NamedTuple

from simulator import catalog
from simulator.lifecycle import BUYER_SIGNED, CONSIGNED_PART, FINISHED, TERMINAL, UNPAID, WAIT_BUYER_CONFIRM
from simulator.shops import Shop
from simulator.trade_orders import Delivery, Orders, build_orders, settle_orders
from simulator.trade_types import VIRTUAL_TYPES
from simulator.trade_values import money, top_time

RawTrade = dict[str, Any]

TID_BASE = 2_800_000_000_000_000_000
# Tids sit on a grid of 16 so a trade's sub-order ids (tid + 1 … tid + 5) never meet another trade's.
TID_GRID = 16
MAX_ORDERS = 5


class Skeleton(NamedTuple):
    """Everything a history trade needs to be rebuilt: its index fields, its times and its own seed."""

    tid: int
    shop: int
    type: str
    status: str
    created: int
    modified: int
    pay_time: int | None
    consign_time: int | None
    end_time: int | None
    n_orders: int
    seed: int


def trade_seed(market_seed: int, tid: int) -> int:
    return (market_seed * 0x9E3779B97F4A7C15 + tid) & 0xFFFF_FFFF_FFFF_FFFF


def long_buyer_message(size: int) -> str:
    """A buyer's message of `size` bytes of UTF-8 (one byte more at most), the catalog's messages
    repeated: mostly Chinese, with the tabs and line breaks buyers type."""
    unit = "；".join(catalog.BUYER_MESSAGES)
    text = unit * (size // len(unit.encode()) + 1)
    return text.encode()[:size].decode(errors="ignore")


class TradeFactory:
    """Turns skeletons into raw fullinfo dicts. Thread-safe: it only reads its arguments.

    `text_bytes` (0: off) gives every trade a buyer's message that long, so a fullinfo answer weighs
    about that much: what a trade with hundreds of sub-orders weighs, carried in a text field the
    service stores verbatim without indexing (Taobao itself caps a buyer's message far lower). One
    string object is shared by every trade, so the stand-in's own memory does not grow with it."""

    def __init__(self, shops: tuple[Shop, ...], text_bytes: int = 0) -> None:
        self._shops = shops
        self._long_message = long_buyer_message(text_bytes) if text_bytes else None

    def build(self, sk: Skeleton) -> RawTrade:
        rng = random.Random(sk.seed)
        shop = self._shops[sk.shop]
        buyer = _buyer(rng)
        region = rng.choice(catalog.REGIONS)
        delivery = _delivery(rng, sk.type)
        shipped = sk.consign_time is not None
        parts = build_orders(
            rng,
            tid=sk.tid,
            status=sk.status,
            consign_stamp=top_time(sk.consign_time or sk.created) if shipped else None,
            seller_type="B" if shop.nick.endswith(("店", "official")) else "C",
            delivery=delivery,
            count=sk.n_orders,
        )
        payment = parts.total - parts.discount + delivery.post_fee
        raw = _trade_fields(rng, sk, shop.nick, buyer, delivery, parts, payment)
        raw.update(_receiver(rng, region))
        raw["orders"] = {"order": parts.orders}
        _notes(rng, raw)
        if self._long_message is not None:
            raw["buyer_message"] = self._long_message
            raw["has_buyer_message"] = True
        if parts.discount:
            raw["promotion_details"] = _promotion(rng, sk.tid, parts.discount)
        if sk.pay_time is not None:
            raw["pay_time"] = top_time(sk.pay_time or sk.created)
            raw["alipay_no"] = f"2024{rng.randrange(10**23, 10**24)}"
            raw["alipay_id"] = 2088_000_000_000_000 + rng.randrange(10**12)
        _status_fields(rng, sk, raw, payment)
        settle_orders(parts.orders, sk.status, raw["end_time"] if "end_time" in raw else raw["modified"])
        return raw


def _buyer(rng: random.Random) -> tuple[str, str]:
    """The buyer's masked nick and open uid."""
    nick = rng.choice(catalog.BUYER_PREFIXES) + rng.choice(catalog.SURNAMES) + "**" + str(rng.randrange(10))
    uid_bytes = rng.getrandbits(128).to_bytes(16, "big")
    return nick, "AAH" + base64.urlsafe_b64encode(uid_bytes).decode()[:21]


def _delivery(rng: random.Random, trade_type: str) -> Delivery:
    virtual = trade_type in VIRTUAL_TYPES
    shipping_type = "virtual" if virtual else rng.choice(catalog.SHIPPING_TYPES)
    post_fee = 0 if virtual or shipping_type == "free" else rng.choice((0, 600, 800, 1000, 1200))
    return Delivery(virtual, shipping_type, post_fee, rng.choice(catalog.LOGISTICS_COMPANIES))


def _trade_fields(
    rng: random.Random,
    sk: Skeleton,
    seller_nick: str,
    buyer: tuple[str, str],
    delivery: Delivery,
    parts: Orders,
    payment: int,
) -> RawTrade:
    """The trade's own fields up to the receiver: ids, parties, times, money, flags."""
    first = parts.orders[0]
    return {
        "tid": sk.tid,
        "tid_str": str(sk.tid),
        "status": sk.status,
        "type": sk.type,
        "seller_nick": seller_nick,
        "buyer_nick": buyer[0],
        "buyer_open_uid": buyer[1],
        "title": seller_nick,
        "created": top_time(sk.created),
        "modified": top_time(sk.modified),
        "payment": money(payment),
        "total_fee": money(parts.total),
        "post_fee": money(delivery.post_fee),
        "discount_fee": money(parts.discount),
        "adjust_fee": "0.00",
        "received_payment": "0.00",
        "commission_fee": "0.00",
        "available_confirm_fee": money(payment) if sk.pay_time is not None else "0.00",
        "point_fee": 0,
        "real_point_fee": 0,
        "buyer_obtain_point_fee": 0,
        "num": first["num"] if sk.n_orders == 1 else 0,
        "num_iid": first["num_iid"],
        "price": first["price"],
        "pic_path": first["pic_path"],
        "shipping_type": delivery.shipping_type,
        "trade_from": rng.choice(catalog.TRADE_FROMS),
        "has_post_fee": delivery.post_fee > 0,
        "is_part_consign": sk.status == CONSIGNED_PART,
        "seller_flag": 0,
        "buyer_rate": False,
        "seller_rate": False,
        "seller_can_rate": sk.status == FINISHED,
    }


def _receiver(rng: random.Random, region: tuple[str, str, str, str]) -> RawTrade:
    """Where the goods go, masked as Taobao masks it."""
    state, city, district, zip_code = region
    return {
        "receiver_name": rng.choice(catalog.SURNAMES) + "**",
        "receiver_state": state,
        "receiver_city": city,
        "receiver_district": district,
        "receiver_address": f"{rng.choice(catalog.STREETS)}{rng.randrange(1, 999)}号**",
        "receiver_zip": zip_code,
        "receiver_mobile": f"1{rng.randrange(30, 99)}{rng.randrange(1000, 9999)}****",
        "oaid": f"{rng.getrandbits(128):032x}",
    }


def _notes(rng: random.Random, raw: RawTrade) -> None:
    """The buyer's message and the seller's memo, on some trades."""
    if rng.random() < 0.35:
        raw["buyer_message"] = rng.choice(catalog.BUYER_MESSAGES)
        raw["has_buyer_message"] = True
    if rng.random() < 0.15:
        raw["seller_memo"] = rng.choice(catalog.SELLER_MEMOS)
        raw["seller_flag"] = rng.randrange(1, 6)


def _promotion(rng: random.Random, tid: int, discount: int) -> dict[str, Any]:
    detail = {
        "id": tid,
        "promotion_name": "店铺优惠",
        "discount_fee": money(discount),
        "promotion_id": f"shopbonus-{rng.randrange(10**8)}",
    }
    return {"promotion_detail": [detail]}


def _status_fields(rng: random.Random, sk: Skeleton, raw: RawTrade, payment: int) -> None:
    """The fields the trade's status and milestones decide: shipping, timeouts, step and cod states,
    the end and what a finished trade settled."""
    paid = sk.pay_time is not None
    if sk.consign_time is not None:
        raw["consign_time"] = top_time(sk.consign_time or sk.created)
    if sk.status == WAIT_BUYER_CONFIRM and sk.consign_time is not None:
        raw["timeout_action_time"] = top_time(sk.consign_time + 10 * 86400)
    elif sk.status in UNPAID:
        raw["timeout_action_time"] = top_time(sk.created + 86400)
    if sk.type == "step":
        raw["step_trade_status"] = "FRONT_PAID_FINAL_PAID" if paid else "FRONT_NOPAID_FINAL_NOPAID"
        raw["step_paid_fee"] = money(payment) if paid else "0.00"
    if sk.type == "cod":
        raw["cod_fee"] = "0.00"
        raw["cod_status"] = "SIGN_IN" if sk.status in (BUYER_SIGNED, FINISHED) else "NEW_CREATED"
    if sk.status in TERMINAL and sk.end_time is not None:
        raw["end_time"] = top_time(sk.end_time)
    if sk.status == FINISHED:
        raw["received_payment"] = money(payment)
        raw["commission_fee"] = money(payment // 100)
        raw["buyer_rate"] = rng.random() < 0.6
