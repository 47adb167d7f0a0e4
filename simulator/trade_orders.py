"""A trade's sub-orders (`orders.order`): items, quantities, prices and discounts, and what shipping and
the trade's end left on each.

Every draw comes from the trade's own RNG, in a fixed order, so a trade rebuilds identically.
"""

from __future__ import annotations

import random
from typing import Any, NamedTuple

from simulator import catalog
from simulator.lifecycle import CLOSED, CONSIGNED_PART, TERMINAL, WAIT_BUYER_CONFIRM
from simulator.trade_values import money

Order = dict[str, Any]


class Delivery(NamedTuple):
    """How a trade's goods travel: the same for all its sub-orders."""

    virtual: bool
    shipping_type: str
    post_fee: int  # cents
    logistics_company: str


class Orders(NamedTuple):
    orders: list[Order]
    total: int  # cents, before discounts
    discount: int  # cents


def build_orders(
    rng: random.Random,
    *,
    tid: int,
    status: str,
    consign_stamp: str | None,
    seller_type: str,
    delivery: Delivery,
    count: int,
) -> Orders:
    """`count` sub-orders in `status`; shipped ones (a `consign_stamp`) carry logistics."""
    orders: list[Order] = []
    total = discount_total = 0
    for k in range(count):
        oid = tid if count == 1 else tid + 1 + k
        order, line, discount = _order(rng, oid, k, status, seller_type, delivery)
        if consign_stamp is not None:
            order["consign_time"] = consign_stamp
            if not delivery.virtual:
                order["logistics_company"] = delivery.logistics_company
                order["invoice_no"] = f"{rng.randrange(10**11, 10**12)}"
        orders.append(order)
        total += line
        discount_total += discount
    if count == 1:
        # Single-order trades: Order.payment includes postage (docs/top-api.md#trade-fullinfo-get).
        orders[0]["payment"] = money(total - discount_total + delivery.post_fee)
    return Orders(orders, total, discount_total)


def _order(
    rng: random.Random, oid: int, k: int, status: str, seller_type: str, delivery: Delivery
) -> tuple[Order, int, int]:
    """The `k`th sub-order, its line total and its discount (cents)."""
    item = rng.choice(catalog.ITEMS)
    num = 1 if rng.random() < 0.8 else rng.randrange(2, 4)
    price = item.price_cents
    discount = rng.choice((0, 0, 0, 100, 500)) if price > 1000 else 0
    line = price * num
    num_iid = 600_000_000_000 + (item.cid * 7919 + k) % 99_999_999_999
    order: Order = {
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
        "status": status,
        "refund_status": "NO_REFUND",
        "cid": item.cid,
        "seller_type": seller_type,
        "buyer_rate": False,
        "seller_rate": False,
        "is_oversold": False,
        "order_from": "WAP,WAP",
        "shipping_type": delivery.shipping_type,
        "snapshot_url": f"l:{oid}_1",
        "outer_iid": f"SPU{item.cid % 100000:05d}",
    }
    if item.skus:
        sku_index = rng.randrange(len(item.skus))
        order["sku_id"] = str(4_000_000_000_000 + item.cid * 10 + sku_index)
        order["sku_properties_name"] = item.skus[sku_index]
        order["outer_sku_id"] = f"SKU{item.cid % 100000:05d}-{sku_index}"
    return order, line, discount


def settle_orders(orders: list[Order], status: str, end_stamp: str) -> None:
    """What the trade's status says of its sub-orders: a closed trade refunded them all, an ended one
    ended them, a partly shipped one shipped only the first."""
    if status == CLOSED:
        for order in orders:
            order["refund_status"] = "SUCCESS"
            order["refund_id"] = refund_id(order["oid"])
            order["end_time"] = end_stamp
    elif status in TERMINAL:
        for order in orders:
            order["end_time"] = end_stamp
    if status == CONSIGNED_PART:
        orders[0]["status"] = WAIT_BUYER_CONFIRM
        for order in orders[1:]:
            order["status"] = "WAIT_SELLER_SEND_GOODS"
            order.pop("consign_time", None)
            order.pop("logistics_company", None)
            order.pop("invoice_no", None)


def refund_id(oid: int) -> str:
    """The id of a sub-order's refund (one refund per sub-order)."""
    return str(oid + 70_000_000_000_000_000)
