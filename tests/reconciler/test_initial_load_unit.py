"""A new shop's initial load (reconciler/initial_load.py, history.py, new_shops.py) over the in-memory
storage and the fake TOP, on which TOPATS is retired as on today's platform: the load falls back to
sold.get day by day, resumes from its finished parts, proves the history, and its report goes on with the
increment from today 00:00 (GMT+8)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from common.intervals import Interval
from reconciler.load_plan import local_midnight
from store.coverage import ProvenBy
from store.gap_reports import Cause, Outcome
from store.initial_loads import SOLD_GET
from taobao.errors import RetryableTopError
from tests.reconciler.fakes import T0, Unit, unit_config, unit_reconciler

SHOP = "shop-a"


def history(unit: Unit) -> tuple[list[int], list[int]]:
    """Trades created on each of the last three days (one modified since), and some made today."""
    today = local_midnight(T0)
    old = []
    for day in range(1, 4):
        for i in range(4):
            created = today - timedelta(days=day) + timedelta(hours=2 + i)
            old.append(
                unit.top.change(SHOP, 1000 * day + i, created + timedelta(minutes=30), created=created).tid
            )
    fresh = [
        unit.top.change(
            SHOP, 9000 + i, today + timedelta(minutes=20 + i), created=today + timedelta(minutes=i)
        ).tid
        for i in range(3)
    ]
    return old, fresh


async def test_a_new_shops_history_is_loaded_proven_and_followed_by_the_increment() -> None:
    unit = unit_reconciler(config=unit_config(initial_load_days=3))
    old, fresh = history(unit)
    await unit.reconciler.gate()  # plans the load; it runs beside the stream, not in the gate
    await unit.reconciler.loads_done()
    state = await unit.reconciler.loader.state(SHOP)
    assert state is not None
    assert (state.done, state.method, state.trades) == (True, SOLD_GET, len(old))
    assert [c["start"] for c in unit.top.calls_of("sold_get")] == [
        state.since + timedelta(days=d) for d in range(3)
    ]
    assert len(unit.top.calls_of("topats")) == 1  # tried once, then day by day through sold.get
    assert set(unit.db.trades.rows) == set(old) | set(fresh)
    assert await unit.reconciler.ledger.intervals(SHOP, kinds=[ProvenBy.INITIAL_LOAD]) == [
        Interval(state.since, state.until)
    ]
    [report] = await unit.reconciler.reports.recent(10)
    assert report.cause == Cause.INITIAL_LOAD.value
    assert report.progress_until is not None
    assert report.progress_until >= state.until  # the increment goes on from today 00:00
    unit.clock.advance(10)
    await unit.reconciler.tick()
    done = await unit.reconciler.reports.get(report.id)
    assert done.outcome == Outcome.RECOVERED.value
    assert await unit.reconciler.ledger.gaps(SHOP, state.since, T0) == []


async def test_an_interrupted_load_resumes_from_its_first_unfinished_part() -> None:
    unit = unit_reconciler(config=unit_config(initial_load_days=3))
    history(unit)
    await unit.reconciler.start()
    state = await unit.reconciler.loader.state(SHOP)
    assert state is not None
    second_day = state.since + timedelta(days=1)
    unit.top.day_errors[second_day] = RetryableTopError("HTTP 502")  # after the client's own retries
    await unit.reconciler.recover(fresh=True)  # the load stops at the second day, until the next round
    await unit.reconciler.loads_done()
    assert [p.state for p in await unit.reconciler.loader.parts(SHOP)] == ["done", "pending", "pending"]
    calls = len(unit.top.calls_of("sold_get"))
    await unit.reconciler.recover(fresh=True)
    await unit.reconciler.loads_done()
    assert [p.state for p in await unit.reconciler.loader.parts(SHOP)] == ["done"] * 3
    resumed = unit.top.calls_of("sold_get")[calls:]
    assert resumed[0]["start"] == second_day  # the finished day is not read again
    done = await unit.reconciler.loader.state(SHOP)
    assert done is not None
    assert done.done


async def test_the_gate_does_not_wait_for_a_new_shops_load() -> None:
    unit = unit_reconciler(config=unit_config(initial_load_days=3))
    history(unit)
    released = asyncio.Event()
    reading = asyncio.Event()
    list_page = unit.top.trades_sold_get

    async def slow_page(*args: Any, **kwargs: Any) -> Any:
        reading.set()
        await released.wait()  # a load that takes hours, as far as the gate can tell
        return await list_page(*args, **kwargs)

    unit.top.trades_sold_get = slow_page  # type: ignore[method-assign]
    async with asyncio.timeout(5):
        await unit.reconciler.gate()  # returns: the stream may resume for everybody
        await reading.wait()  # while the load runs beside it
    state = await unit.reconciler.loader.state(SHOP)
    assert state is not None
    assert not state.done
    released.set()
    await unit.reconciler.loads_done()
    done = await unit.reconciler.loader.state(SHOP)
    assert done is not None
    assert done.done


async def test_a_load_beside_the_stream_ends_with_the_side_task() -> None:
    """The daemon closes its TOP client and pool once its tasks end: a load left running would call
    them after (an HTTP session opened again and never closed)."""
    unit = unit_reconciler(config=unit_config(initial_load_days=3))
    history(unit)
    reading = asyncio.Event()
    cancelled = asyncio.Event()
    list_page = unit.top.trades_sold_get

    async def endless_page(*args: Any, **kwargs: Any) -> Any:
        reading.set()
        try:
            await asyncio.Event().wait()  # a load that takes hours
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return await list_page(*args, **kwargs)

    unit.top.trades_sold_get = endless_page  # type: ignore[method-assign]
    side_task = asyncio.create_task(unit.reconciler.run())
    async with asyncio.timeout(5):
        await reading.wait()
    side_task.cancel()
    async with asyncio.timeout(5):
        await asyncio.gather(side_task, return_exceptions=True)
    assert cancelled.is_set()
    assert not unit.reconciler._loads
