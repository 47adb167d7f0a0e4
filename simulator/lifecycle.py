"""Trade states, the legal moves between them and the TMC topic each move announces.

Pure tables (docs/top-api.md#trade-statuses, docs/top-api.md#state-machine,
docs/tmc-protocol.md#trade-topics); the market follows them and the tests check against them.
"""

from __future__ import annotations

NO_CREATE_PAY = "TRADE_NO_CREATE_PAY"
WAIT_BUYER_PAY = "WAIT_BUYER_PAY"
WAIT_SELLER_SEND = "WAIT_SELLER_SEND_GOODS"
CONSIGNED_PART = "SELLER_CONSIGNED_PART"
WAIT_BUYER_CONFIRM = "WAIT_BUYER_CONFIRM_GOODS"
BUYER_SIGNED = "TRADE_BUYER_SIGNED"
FINISHED = "TRADE_FINISHED"
CLOSED = "TRADE_CLOSED"
CLOSED_BY_TAOBAO = "TRADE_CLOSED_BY_TAOBAO"

ALL_STATUSES: tuple[str, ...] = (
    NO_CREATE_PAY,
    WAIT_BUYER_PAY,
    WAIT_SELLER_SEND,
    CONSIGNED_PART,
    WAIT_BUYER_CONFIRM,
    BUYER_SIGNED,
    FINISHED,
    CLOSED,
    CLOSED_BY_TAOBAO,
    # Valid query values the market never produces.
    "PAY_PENDING",
    "WAIT_PRE_AUTH_CONFIRM",
    "PAID_FORBID_CONSIGN",
)
UNPAID = frozenset({NO_CREATE_PAY, WAIT_BUYER_PAY})
PAID_OPEN = frozenset({WAIT_SELLER_SEND, CONSIGNED_PART, WAIT_BUYER_CONFIRM, BUYER_SIGNED})
TERMINAL = frozenset({FINISHED, CLOSED, CLOSED_BY_TAOBAO})

# Query-only composites for the `status` parameter (docs/top-api.md#trade-statuses).
STATUS_QUERY_GROUPS: dict[str, frozenset[str]] = {
    "ALL_WAIT_PAY": frozenset({WAIT_BUYER_PAY, NO_CREATE_PAY}),
    "ALL_CLOSED": frozenset({CLOSED, CLOSED_BY_TAOBAO}),
}

# Status moves a single change may make; a change may also keep the status (memo, fee, address...).
LEGAL_MOVES: dict[str, frozenset[str]] = {
    NO_CREATE_PAY: frozenset({WAIT_BUYER_PAY, CLOSED_BY_TAOBAO}),
    WAIT_BUYER_PAY: frozenset({WAIT_SELLER_SEND, CLOSED_BY_TAOBAO}),
    WAIT_SELLER_SEND: frozenset({CONSIGNED_PART, WAIT_BUYER_CONFIRM, CLOSED}),
    CONSIGNED_PART: frozenset({WAIT_BUYER_CONFIRM, CLOSED}),
    WAIT_BUYER_CONFIRM: frozenset({BUYER_SIGNED, FINISHED, CLOSED}),
    BUYER_SIGNED: frozenset({FINISHED, CLOSED}),
    FINISHED: frozenset(),
    CLOSED: frozenset(),
    CLOSED_BY_TAOBAO: frozenset(),
}
CREATE_STATUSES = frozenset({NO_CREATE_PAY, WAIT_BUYER_PAY})


def is_legal_move(before: str, after: str) -> bool:
    return before == after or after in LEGAL_MOVES.get(before, frozenset())


TOPIC_PREFIX = "taobao_trade_"

# TMC content keys per topic (docs/tmc-protocol.md#trade-topics), in the order the table lists them. Optional
# keys the market has no value for are left out.
_COMMON = ("buyer_nick", "buyer_open_uid", "oid", "payment", "seller_nick", "status", "tid", "type")
TOPIC_FIELDS: dict[str, tuple[str, ...]] = {
    "TradeCreate": _COMMON,
    "TradeAlipayCreate": _COMMON,
    "TradeModifyFee": _COMMON,
    "TradeClose": (
        "buyer_nick",
        "buyer_open_uid",
        "num_iid",
        "oid",
        "payment",
        "seller_nick",
        "status",
        "tid",
        "type",
    ),
    "TradeBuyerPay": (
        "adjust_fee",
        "alipay_no",
        "buyer_nick",
        "buyer_open_uid",
        "oid",
        "payment",
        "post_fee",
        "seller_nick",
        "tid",
        "type",
    ),
    "TradeBuyerStepPay": ("buyer_nick", "buyer_open_uid", "oid", "payment", "seller_nick", "tid", "type"),
    "TradeSellerShip": _COMMON,
    "TradePartlySellerShip": _COMMON,
    "TradeDelayConfirmPay": _COMMON,
    "TradeSuccess": _COMMON,
    "TradeChanged": _COMMON,
    "TradePartlyRefund": _COMMON,
    "TradeMemoModified": (
        "action_type",
        "buyer_nick",
        "buyer_open_uid",
        "oid",
        "payment",
        "seller_flag",
        "seller_memo",
        "seller_nick",
        "status",
        "tid",
        "type",
    ),
    "TradeLogisticsAddressChanged": ("buyer_nick", "buyer_open_uid", "tid"),
    "TradeRated": (
        "buyer_nick",
        "buyer_open_uid",
        "oid",
        "payment",
        "rater",
        "seller_nick",
        "status",
        "tid",
        "type",
    ),
}


def full_topic(name: str) -> str:
    return TOPIC_PREFIX + name
