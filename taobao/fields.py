"""Constants of the TOP trade APIs: method names, trade types, field lists, limits
(docs/top-api.md#trades-sold-get, docs/top-api.md#trades-sold-increment-get,
docs/top-api.md#trade-fullinfo-get, docs/top-api.md#topats)."""

from __future__ import annotations

from datetime import timedelta
from typing import Final

TRADES_SOLD_GET: Final = "taobao.trades.sold.get"
TRADES_SOLD_INCREMENT_GET: Final = "taobao.trades.sold.increment.get"
TRADE_FULLINFO_GET: Final = "taobao.trade.fullinfo.get"
TOPATS_TRADES_SOLD_GET: Final = "taobao.topats.trades.sold.get"
TOPATS_RESULT_GET: Final = "taobao.topats.result.get"

# Every value of the `type` parameter the doc lists (docs/top-api.md#trade-types), in the doc's order. Without
# `type` the list APIs return only 4 or 5 default types (the sources disagree), silently missing the rest, so
# the client always sends this list.
# - `guarantee_trade` is left out: it is a query-only combination of `fixed` and `auction`, both sent.
# - `fenxiao` is sent although only the Trade.type *response* description lists it: trades carry it,
#   and whether the parameter accepts it is unknown (docs/top-api.md#default-type-subset). A refused value
# fails loudly   (an isv.invalid-parameter error in every reconciliation, logged and reported), while leaving
# it out   would miss distribution orders silently. SYNC_TRADE_TYPES overrides the whole list.
ALL_TRADE_TYPES: Final[tuple[str, ...]] = (
    "fixed",
    "auction",
    "step",
    "independent_simple_trade",
    "independent_shop_trade",
    "auto_delivery",
    "ec",
    "cod",
    "game_equipment",
    "shopex_trade",
    "netcn_trade",
    "external_trade",
    "instant_trade",
    "b2c_cod",
    "hotel_trade",
    "super_market_trade",
    "super_market_cod_trade",
    "taohua",
    "waimai",
    "o2o_offlinetrade",
    "nopaid",
    "eticket",
    "tmall_i18n",
    "insurance_plus",
    "finance",
    "pre_auth_type",
    "lazada",
    "fenxiao",
)

# What the service stores for a trade (docs/top-api.md#trade-fields). `orders` asks for every sub-order field.
FULLINFO_FIELDS: Final = ",".join(
    (
        "tid", "tid_str", "status", "type", "seller_nick", "buyer_nick", "buyer_open_uid", "title",
        "created", "modified", "pay_time", "consign_time", "end_time", "timeout_action_time",
        "payment", "total_fee", "post_fee", "discount_fee", "adjust_fee", "received_payment",
        "commission_fee", "available_confirm_fee", "point_fee", "real_point_fee", "num", "num_iid",
        "price", "pic_path", "shipping_type", "trade_from", "alipay_no",
        "receiver_name", "receiver_state", "receiver_city", "receiver_district", "receiver_town",
        "receiver_address", "receiver_zip", "receiver_mobile", "receiver_phone", "receiver_country",
        "buyer_message", "has_buyer_message", "buyer_memo", "seller_memo", "seller_flag", "trade_memo",
        "buyer_rate", "seller_rate", "seller_can_rate", "is_part_consign", "step_trade_status",
        "step_paid_fee", "cod_fee", "cod_status", "oaid", "orders", "promotion_details", "service_orders",
    )
)  # fmt: skip

# List calls only need to say which tids changed; details come from fullinfo (docs/sync-rules.md#fields-tid).
LIST_FIELDS: Final = "tid"
# A backfill's increment lists also ask when: a trade already stored at that version is not fetched
# (docs/sync-rules.md#fields-tid-modified).
INCREMENT_LIST_FIELDS: Final = "tid,modified"

MAX_PAGE_SIZE: Final = 100

# "end_modified − start_modified ≤ 1 day"; an older doc version required strictly less than 24 h and
# whether exactly 24 h passes is unknown (docs/top-api.md#one-day-span), so the client stays one second under
# a day.
MAX_INCREMENT_SPAN: Final = timedelta(days=1) - timedelta(seconds=1)

# taobao.topats.result.get task states (docs/top-api.md#topats).
TOPATS_NEW: Final = "new"
TOPATS_DOING: Final = "doing"
TOPATS_DONE: Final = "done"
