"""Odd values real trades and real answers carry, and which side of the truth each one is on.

* The trade really holds it: a buyer typed a NUL or a lone surrogate (broken input methods and copy-paste
  do this) into the buyer message or memo. The market's truth holds the character; the answer carries
  it as the JSON escapes `\\u0000` / `\\ud800` (valid JSON text). A client has to store something
  PostgreSQL accepts and still count the trade as current.
* The answer is broken: a time before year 1, an exponent no decimal type holds, "N/A" for money,
  arrays nested thousands deep. Upstream systems produce these; the truth keeps the real value and
  the answer is right again once the fault is off (`FaultKnobs.odd_values_*`).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from simulator.top_protocol import RawJson

# NUL between two words, and a high surrogate with no low one after it at the end.
ODD_BUYER_TEXT = "请尽快发货\x00谢谢\ud800"
# Midnight on 0001-01-01 in GMT+8 is 16:00 on 0000-12-31 in UTC: a year no datetime type holds.
BEFORE_YEAR_ONE = "0001-01-01 00:00:00"
# Parsed as a float it quietly becomes 0.0; parsed as a decimal its exponent breaks quantizing.
TINY_NUMBER = "1E-20000"
NOT_MONEY = "N/A"


def nested_arrays(depth: int) -> RawJson:
    """`[[[…]]]`, `depth` levels: deeper than recursive JSON parsers go by default (Python's: ~1000)."""
    return RawJson("[" * depth + "]" * depth)


def break_trade(
    trade: dict[str, Any],
    kinds: Collection[str],
    requested: Collection[str],
    *,
    date_field: str,
    number_field: str,
    money_field: str,
    nested_field: str,
    nesting_depth: int,
) -> None:
    """Put the broken values of `kinds` into `trade` (an answer's copy, never a market version). The
    date, number and money land only in fields the caller asked for (`requested`), whether or not the
    trade has a value there; the extension field comes unasked."""
    if "date" in kinds and date_field in requested:
        trade[date_field] = BEFORE_YEAR_ONE
    if "number" in kinds and number_field in requested:
        trade[number_field] = RawJson(TINY_NUMBER)
    if "money" in kinds and money_field in requested:
        trade[money_field] = NOT_MONEY
    if "nested" in kinds:
        trade[nested_field] = nested_arrays(nesting_depth)
