"""Market changes for the benchmarks: plain ones as fast as the market makes them (`publish`), and
Double-11 style bursts for the end-to-end benchmark: new trades that each change several times
within a couple of seconds (order created, Alipay order created, paid, seller memo), interleaved.

The market has no public call for "apply this change to that trade", so this uses its private
`_create` / `_apply`, the same calls `Market.step` makes; the changes are real market changes (truth,
versions, TMC publish) in a legal order for each trade.
"""

from __future__ import annotations

import asyncio
import heapq
import random

from simulator.lifecycle import NO_CREATE_PAY
from simulator.market import Market


async def publish(market: Market, changes: int, chunk: int = 250) -> None:
    """`changes` ordinary market changes as fast as the market makes them, yielding between chunks so
    the TMC server pushes while the rest is published."""
    left = changes
    while left:
        step = min(chunk, left)
        market.step(step)
        left -= step
        await asyncio.sleep(0)


async def run_burst(market: Market, *, trades: int, create_window: float, span: float, seed: int = 11) -> int:
    """Create `trades` trades spread over `create_window` seconds; each then gets its follow-up changes
    at random moments within `span` seconds of its creation (0: right after it, back to back). Returns
    how many changes were made."""
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    start = loop.time()
    order = 0
    due: list[tuple[float, int, str, int]] = []
    for _ in range(trades):
        order += 1
        due.append((start + rng.uniform(0, create_window), order, "create", 0))
    heapq.heapify(due)
    made = 0
    while due:
        at, _, action, tid = due[0]
        now = loop.time()
        if at > now:
            await asyncio.sleep(at - now)  # pacing the load, not waiting for a result
            continue
        heapq.heappop(due)
        if action == "create":
            change = market._create()
            follow = (["alipay_create"] if change.status == NO_CREATE_PAY else []) + ["pay", "memo"]
            for offset, next_action in zip(sorted(rng.uniform(0, span) for _ in follow), follow, strict=True):
                order += 1
                heapq.heappush(due, (at + offset, order, next_action, change.tid))
        else:
            record = market.record(tid)
            assert record is not None
            market._apply(action, record)
        made += 1
    return made
