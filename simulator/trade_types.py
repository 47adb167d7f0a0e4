"""Trade types: the ones the `type` parameter accepts, the default query subset, and how often the
market creates each."""

from __future__ import annotations

import bisect
import random

# Types the gateway returns when `type` is omitted (docs/top-api.md#default-type-subset: the simulator's
# choice among conflicting sources).
DEFAULT_QUERY_TYPES = frozenset({"fixed", "auction", "auto_delivery", "ec", "cod", "step"})

# Every value the `type` parameter accepts (docs/top-api.md#trade-types) plus `fenxiao`, which trades carry.
KNOWN_TYPES = frozenset(
    {
        "fixed",
        "auction",
        "guarantee_trade",
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
    }
)
# `guarantee_trade` is a query combination, never a trade's own type.
TYPE_QUERY_GROUPS: dict[str, frozenset[str]] = {"guarantee_trade": frozenset({"fixed", "auction"})}
# Types whose goods are not shipped: no postage, no logistics company, no invoice number.
VIRTUAL_TYPES = frozenset({"ec", "auto_delivery", "eticket"})

# Share of each type among new trades: about 22 % fall outside the default query subset.
TYPE_WEIGHTS: tuple[tuple[str, int], ...] = (
    ("fixed", 55),
    ("auction", 1),
    ("auto_delivery", 3),
    ("ec", 3),
    ("cod", 3),
    ("step", 5),
    ("fenxiao", 8),
    ("o2o_offlinetrade", 3),
    ("nopaid", 3),
    ("tmall_i18n", 3),
    ("eticket", 1),
    ("pre_auth_type", 1),
    ("instant_trade", 1),
)
_TYPE_NAMES = tuple(name for name, _ in TYPE_WEIGHTS)
_TYPE_CUM: list[int] = []
_acc = 0
for _, _w in TYPE_WEIGHTS:
    _acc += _w
    _TYPE_CUM.append(_acc)


def pick_type(rng: random.Random) -> str:
    return _TYPE_NAMES[bisect.bisect_right(_TYPE_CUM, int(rng.random() * _acc))]
