"""How a raw trade spells its values (docs/top-api.md#value-formats): money as yuan strings with two
decimals, times as `yyyy-MM-dd HH:mm:ss` in GMT+8."""

from __future__ import annotations

import time

_GMT8_OFFSET = 8 * 3600


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
