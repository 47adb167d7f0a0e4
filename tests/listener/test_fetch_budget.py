"""The fetch budget: a fetch starts only while held plus reserved bytes fit (listener.capacity)."""

from __future__ import annotations

import asyncio

from listener.capacity import FetchBudget, trade_size
from tests.store.factory import make_trade


async def test_a_fetch_waits_while_held_trades_fill_the_budget_and_starts_once_one_is_released() -> None:
    budget = FetchBudget(max_bytes=1000)
    await budget.reserve()
    budget.hold(300)
    budget.unreserve()
    # 300 held and three copies of the largest trade (300) for the next fetch would not fit.
    waiting = asyncio.create_task(budget.reserve())
    await asyncio.sleep(0)  # let it look at the budget
    assert not waiting.done()
    budget.release(300)
    async with asyncio.timeout(1):
        await waiting
    assert budget.reserved == 1


async def test_fetches_start_while_held_and_reserved_bytes_fit() -> None:
    budget = FetchBudget(max_bytes=1000)
    await budget.reserve()
    budget.hold(100)
    budget.unreserve()
    async with asyncio.timeout(1):
        for _ in range(3):  # 100 held + 3 × 300 reserved
            await budget.reserve()
    fourth = asyncio.create_task(budget.reserve())
    await asyncio.sleep(0)  # let it look at the budget
    assert not fourth.done()
    budget.unreserve()
    async with asyncio.timeout(1):
        await fourth


async def test_with_nothing_held_one_fetch_starts_however_large_the_trades() -> None:
    budget = FetchBudget(max_bytes=10)
    await budget.reserve()
    budget.hold(5000)
    budget.unreserve()
    budget.release(5000)
    async with asyncio.timeout(1):
        await budget.reserve()


def test_a_trade_costs_at_least_its_text() -> None:
    small = make_trade(1, 1)
    large = small.model_copy(update={"raw": {**small.raw, "buyer_memo": "x" * 100_000}})
    assert trade_size(large) - trade_size(small) >= 100_000
