"""Builds fullinfo-shaped raw trades (docs/top-api.md#value-formats): money strings, GMT+8 time strings, int64
ids, orders double-wrapped as {"order": [...]}.

A trade's look (buyer, items, address...) comes from its own seeded RNG, so a trade can be rebuilt
identically from a small `Skeleton`. That is how a history of 100k trades stays small in memory: only
trades the market later changes are kept as dicts.
"""

from __future__ import annotations

import base64
import bisect
import random
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from simulator import catalog
from simulator.lifecycle import (
    BUYER_SIGNED,
    CLOSED,
    CLOSED_BY_TAOBAO,
    CONSIGNED_PART,
    FINISHED,
    NO_CREATE_PAY,
    TERMINAL,
    UNPAID,
    WAIT_BUYER_CONFIRM,
)

# Types the gateway returns when `type` is omitted (docs/top-api.md#default-type-subset: the simulator's
# choice among conflicting sources).
DEFAULT_QUERY_TYPES = frozenset({"fixed", "auction", "auto_delivery", "ec", "cod", "step"})

# Every value the `type` parameter accepts (docs/top-api.md#trade-types) plus `fenxiao`, which trades carry.
KNOWN_TYPES = frozenset(
    {
        "fixed", "auction", "guarantee_trade", "step", "independent_simple_trade", "independent_shop_trade",
        "auto_delivery", "ec", "cod", "game_equipment", "shopex_trade", "netcn_trade", "external_trade",
        "instant_trade", "b2c_cod", "hotel_trade", "super_market_trade", "super_market_cod_trade", "taohua",
        "waimai", "o2o_offlinetrade", "nopaid", "eticket", "tmall_i18n", "insurance_plus", "finance",
        "pre_auth_type", "lazada", "fenxiao",
    }
)
# `guarantee_trade` is a query combination, never a trade's own type.
TYPE_QUERY_GROUPS: dict[str, frozenset[str]] = {"guarantee_trade": frozenset({"fixed", "auction"})}

# Share of each type among new trades: about 22 % fall outside the default query subset.
TYPE_WEIGHTS: tuple[tuple[str, int], ...] = (
    ("fixed", 55), ("auction", 1), ("auto_delivery", 3), ("ec", 3), ("cod", 3), ("step", 5),
    ("fenxiao", 8), ("o2o_offlinetrade", 3), ("nopaid", 3), ("tmall_i18n", 3), ("eticket", 1),
    ("pre_auth_type", 1), ("instant_trade", 1),
)
_TYPE_NAMES = tuple(name for name, _ in TYPE_WEIGHTS)
_TYPE_CUM: list[int] = []
_acc = 0
for _, _w in TYPE_WEIGHTS:
    _acc += _w
    _TYPE_CUM.append(_acc)

_GMT8_OFFSET = 8 * 3600
TID_BASE = 2_800_000_000_000_000_000
# Tids sit on a grid of 16 so a trade's sub-order ids (tid + 1 … tid + 5) never meet another trade's.
TID_GRID = 16
MAX_ORDERS = 5


def top_time(epoch_seconds: int) -> str:
    """Epoch seconds → `yyyy-MM-dd HH:mm:ss` GMT+8 (fast path for the hot loops)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch_seconds + _GMT8_OFFSET))


def money(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    cents = abs(cents)
    return f"{sign}{cents // 100}.{cents % 100:02d}"


def cents(value: str) -> int:
    negative = value.startswith("-")
    whole, _, frac = value.lstrip("-").partition(".")
    amount = int(whole or "0") * 100 + int((frac + "00")[:2])
    return -amount if negative else amount


def pick_type(rng: random.Random) -> str:
    return _TYPE_NAMES[bisect.bisect_right(_TYPE_CUM, int(rng.random() * _acc))]


@dataclass(frozen=True, slots=True)
class Shop:
    nick: str
    user_id: int
    session: str = field(repr=False)


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


class TradeFactory:
    """Turns skeletons into raw fullinfo dicts. Thread-safe: it only reads its arguments."""

    def __init__(self, shops: tuple[Shop, ...]) -> None:
        self._shops = shops

    def build(self, sk: Skeleton) -> dict[str, Any]:
        rng = random.Random(sk.seed)
        shop = self._shops[sk.shop]
        buyer_nick = rng.choice(catalog.BUYER_PREFIXES) + rng.choice(catalog.SURNAMES) + "**" + str(
            rng.randrange(10)
        )
        uid_bytes = rng.getrandbits(128).to_bytes(16, "big")
        buyer_open_uid = "AAH" + base64.urlsafe_b64encode(uid_bytes).decode()[:21]
        state, city, district, zip_code = rng.choice(catalog.REGIONS)
        paid = sk.pay_time is not None
        shipped = sk.consign_time is not None
        virtual = sk.type in ("ec", "auto_delivery", "eticket")
        shipping_type = "virtual" if virtual else rng.choice(catalog.SHIPPING_TYPES)
        post_fee = 0 if virtual or shipping_type == "free" else rng.choice((0, 600, 800, 1000, 1200))
        logistics = rng.choice(catalog.LOGISTICS_COMPANIES)

        orders: list[dict[str, Any]] = []
        total = discount_total = 0
        for k in range(sk.n_orders):
            item = rng.choice(catalog.ITEMS)
            num = 1 if rng.random() < 0.8 else rng.randrange(2, 4)
            price = item.price_cents
            discount = rng.choice((0, 0, 0, 100, 500)) if price > 1000 else 0
            line = price * num
            total += line
            discount_total += discount
            oid = sk.tid if sk.n_orders == 1 else sk.tid + 1 + k
            num_iid = 600_000_000_000 + (item.cid * 7919 + k) % 99_999_999_999
            order: dict[str, Any] = {
                "oid": oid,
                "oid_str": str(oid),
                "num_iid": num_iid,
                "title": item.title,
                "pic_path": f"https://img.alicdn.com/bao/uploaded/i{k + 1}/{num_iid}.jpg",
                "price": money(price),
                "num": num,
                "total_fee": money(line - discount),
                "payment": money(line - discount),
                "discount_fee": money(discount),
                "adjust_fee": "0.00",
                "divide_order_fee": money(line - discount),
                "part_mjz_discount": "0.00",
                "status": sk.status,
                "refund_status": "NO_REFUND",
                "cid": item.cid,
                "seller_type": "B" if shop.nick.endswith(("店", "official")) else "C",
                "buyer_rate": False,
                "seller_rate": False,
                "is_oversold": False,
                "order_from": "WAP,WAP",
                "shipping_type": shipping_type,
                "snapshot_url": f"l:{oid}_1",
                "outer_iid": f"SPU{item.cid % 100000:05d}",
            }
            if item.skus:
                sku_index = rng.randrange(len(item.skus))
                order["sku_id"] = str(4_000_000_000_000 + item.cid * 10 + sku_index)
                order["sku_properties_name"] = item.skus[sku_index]
                order["outer_sku_id"] = f"SKU{item.cid % 100000:05d}-{sku_index}"
            if shipped:
                order["consign_time"] = top_time(sk.consign_time or sk.created)
                if not virtual:
                    order["logistics_company"] = logistics
                    order["invoice_no"] = f"{rng.randrange(10**11, 10**12)}"
            orders.append(order)

        if sk.n_orders == 1:
            # Single-order trades: Order.payment includes postage (docs/top-api.md#trade-fullinfo-get).
            orders[0]["payment"] = money(total - discount_total + post_fee)
        payment = total - discount_total + post_fee

        raw: dict[str, Any] = {
            "tid": sk.tid,
            "tid_str": str(sk.tid),
            "status": sk.status,
            "type": sk.type,
            "seller_nick": shop.nick,
            "buyer_nick": buyer_nick,
            "buyer_open_uid": buyer_open_uid,
            "title": shop.nick,
            "created": top_time(sk.created),
            "modified": top_time(sk.modified),
            "payment": money(payment),
            "total_fee": money(total),
            "post_fee": money(post_fee),
            "discount_fee": money(discount_total),
            "adjust_fee": "0.00",
            "received_payment": "0.00",
            "commission_fee": "0.00",
            "available_confirm_fee": money(payment) if paid else "0.00",
            "point_fee": 0,
            "real_point_fee": 0,
            "buyer_obtain_point_fee": 0,
            "num": orders[0]["num"] if sk.n_orders == 1 else 0,
            "num_iid": orders[0]["num_iid"],
            "price": orders[0]["price"],
            "pic_path": orders[0]["pic_path"],
            "shipping_type": shipping_type,
            "trade_from": rng.choice(catalog.TRADE_FROMS),
            "has_post_fee": post_fee > 0,
            "is_part_consign": sk.status == CONSIGNED_PART,
            "seller_flag": 0,
            "buyer_rate": False,
            "seller_rate": False,
            "seller_can_rate": sk.status == FINISHED,
            "receiver_name": rng.choice(catalog.SURNAMES) + "**",
            "receiver_state": state,
            "receiver_city": city,
            "receiver_district": district,
            "receiver_town": "",
            "receiver_address": f"{rng.choice(catalog.STREETS)}{rng.randrange(1, 999)}号**",
            "receiver_zip": zip_code,
            "receiver_mobile": f"1{rng.randrange(30, 99)}{rng.randrange(1000, 9999)}****",
            "receiver_country": "",
            "oaid": f"{rng.getrandbits(128):032x}",
            "orders": {"order": orders},
        }
        if raw["receiver_town"] == "":
            del raw["receiver_town"]
        if raw["receiver_country"] == "":
            del raw["receiver_country"]
        if rng.random() < 0.35:
            raw["buyer_message"] = rng.choice(catalog.BUYER_MESSAGES)
            raw["has_buyer_message"] = True
        if rng.random() < 0.15:
            raw["seller_memo"] = rng.choice(catalog.SELLER_MEMOS)
            raw["seller_flag"] = rng.randrange(1, 6)
        if discount_total:
            raw["promotion_details"] = {
                "promotion_detail": [
                    {
                        "id": sk.tid,
                        "promotion_name": "店铺优惠",
                        "discount_fee": money(discount_total),
                        "promotion_id": f"shopbonus-{rng.randrange(10**8)}",
                    }
                ]
            }
        if paid:
            raw["pay_time"] = top_time(sk.pay_time or sk.created)
            raw["alipay_no"] = f"2024{rng.randrange(10**23, 10**24)}"
            raw["alipay_id"] = 2088_000_000_000_000 + rng.randrange(10**12)
        if shipped:
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
        if sk.status == CLOSED:
            for order in orders:
                order["refund_status"] = "SUCCESS"
                order["refund_id"] = str(order["oid"] + 70_000_000_000_000_000)
                order["end_time"] = raw.get("end_time", raw["modified"])
        elif sk.status in TERMINAL:
            for order in orders:
                order["end_time"] = raw.get("end_time", raw["modified"])
        if sk.status == CONSIGNED_PART:
            # The first sub-order went out, the rest wait.
            orders[0]["status"] = WAIT_BUYER_CONFIRM
            for order in orders[1:]:
                order["status"] = "WAIT_SELLER_SEND_GOODS"
                order.pop("consign_time", None)
                order.pop("logistics_company", None)
                order.pop("invoice_no", None)
        return raw


@dataclass(frozen=True, slots=True)
class HistoryPlan:
    """The status a history trade ended in and the times of its milestones."""

    status: str
    pay_time: int | None
    consign_time: int | None
    end_time: int | None
    modified: int


# Final status weights by the trade's age (seconds). Older trades are mostly settled.
_AGE_BANDS: tuple[tuple[int, tuple[tuple[str, int], ...]], ...] = (
    (3600, ((NO_CREATE_PAY, 5), ("WAIT_BUYER_PAY", 25), ("WAIT_SELLER_SEND_GOODS", 55),
            (CLOSED_BY_TAOBAO, 10), (CLOSED, 1), (CONSIGNED_PART, 2), (WAIT_BUYER_CONFIRM, 2))),
    (3 * 86400, (("WAIT_BUYER_PAY", 3), ("WAIT_SELLER_SEND_GOODS", 20), (CONSIGNED_PART, 3),
                 (WAIT_BUYER_CONFIRM, 45), (FINISHED, 12), (CLOSED_BY_TAOBAO, 12), (CLOSED, 5))),
    (15 * 86400, (("WAIT_SELLER_SEND_GOODS", 2), (WAIT_BUYER_CONFIRM, 25), (BUYER_SIGNED, 1), (FINISHED, 55),
                  (CLOSED_BY_TAOBAO, 12), (CLOSED, 5))),
    (10**12, ((FINISHED, 80), (CLOSED_BY_TAOBAO, 13), (CLOSED, 7))),
)

_BAND_TABLES: tuple[tuple[int, tuple[tuple[str, ...], list[int]]], ...] = tuple(
    (limit, (tuple(name for name, _ in band), [sum(w for _, w in band[: i + 1]) for i in range(len(band))]))
    for limit, band in _AGE_BANDS
)


def plan_history(rng: random.Random, created: int, now: int, trade_type: str, n_orders: int) -> HistoryPlan:
    """Pick a final status that fits the trade's age, and milestone times that never pass `now`."""
    age = max(now - created, 1)
    names, cum = next(band for limit, band in _BAND_TABLES if age < limit)
    status = names[bisect.bisect_right(cum, int(rng.random() * cum[-1]))]
    if status == CONSIGNED_PART and n_orders < 2:
        status = WAIT_BUYER_CONFIRM
    if status == BUYER_SIGNED and trade_type != "cod":
        status = WAIT_BUYER_CONFIRM
    pay = consign = end = None
    if status == CLOSED_BY_TAOBAO:
        end = created + int((now - created) * rng.uniform(0.01, 0.3))
    elif status not in UNPAID:
        pay = created + min(int(age * 0.05), 5 + int(rng.random() * 3595))
        if status in (CONSIGNED_PART, WAIT_BUYER_CONFIRM, BUYER_SIGNED, FINISHED) or (
            status == CLOSED and rng.random() < 0.5
        ):
            consign = pay + int((now - pay) * rng.uniform(0.02, 0.3))
        if status in (FINISHED, CLOSED):
            base = consign if consign is not None else pay
            end = base + int((now - base) * rng.uniform(0.1, 0.6))
    last = end if end is not None else consign if consign is not None else pay if pay is not None else created
    modified = last
    if rng.random() < 0.1:
        # A later memo or rating bumped `modified` without changing the status.
        modified = last + int((now - last) * rng.random())
    return HistoryPlan(status, pay, consign, end, modified)
