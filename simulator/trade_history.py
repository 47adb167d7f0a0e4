"""Where a trade created before the market opened stands now: a final status that fits its age and the
times of its milestones."""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass

from simulator.lifecycle import (
    BUYER_SIGNED,
    CLOSED,
    CLOSED_BY_TAOBAO,
    CONSIGNED_PART,
    FINISHED,
    NO_CREATE_PAY,
    UNPAID,
    WAIT_BUYER_CONFIRM,
)


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
    (
        3600,
        (
            (NO_CREATE_PAY, 5),
            ("WAIT_BUYER_PAY", 25),
            ("WAIT_SELLER_SEND_GOODS", 55),
            (CLOSED_BY_TAOBAO, 10),
            (CLOSED, 1),
            (CONSIGNED_PART, 2),
            (WAIT_BUYER_CONFIRM, 2),
        ),
    ),
    (
        3 * 86400,
        (
            ("WAIT_BUYER_PAY", 3),
            ("WAIT_SELLER_SEND_GOODS", 20),
            (CONSIGNED_PART, 3),
            (WAIT_BUYER_CONFIRM, 45),
            (FINISHED, 12),
            (CLOSED_BY_TAOBAO, 12),
            (CLOSED, 5),
        ),
    ),
    (
        15 * 86400,
        (
            ("WAIT_SELLER_SEND_GOODS", 2),
            (WAIT_BUYER_CONFIRM, 25),
            (BUYER_SIGNED, 1),
            (FINISHED, 55),
            (CLOSED_BY_TAOBAO, 12),
            (CLOSED, 5),
        ),
    ),
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
