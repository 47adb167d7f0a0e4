"""The shop keeper at start with many shops: permits go many at a time but never more than its workers,
and their outcomes reach the registry in a few batched writes, not one per shop."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from pydantic import SecretStr

from daemon.shop_keeper import PERMIT_TRUSTED_FOR, ShopKeeper
from store.memory_shops import MemoryShops
from store.shops import PermitOutcome, ShopRecord
from taobao.limiter import Priority
from taobao.transport import TopTransport
from tests.reconciler.conftest import wait_for, wait_for_async

SHOPS = 200
WORKERS = 16


class SlowPermits:
    """Answers `taobao.tmc.user.permit` after a moment, counting the calls in flight."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.most_in_flight = 0
        self.calls = 0

    async def call(
        self, method: str, params: Mapping[str, Any], *, session: str | None, priority: Priority
    ) -> dict[str, Any]:
        self.calls += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.005)  # the answer's round trip
            return {"is_success": True}
        finally:
            self.in_flight -= 1


class CountingShops(MemoryShops):
    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    async def record_permits(self, outcomes: Sequence[PermitOutcome]) -> None:
        self.batches.append(len(outcomes))
        await asyncio.sleep(0.01)  # a database write takes a while; permits go on meanwhile
        await super().record_permits(outcomes)


async def test_many_shops_are_permitted_many_at_a_time_and_recorded_in_batches() -> None:
    client = SlowPermits()
    registry = CountingShops()
    nicks = [f"shop-{n:03}" for n in range(SHOPS)]
    await registry.seed([(nick, SecretStr(f"session-{nick}")) for nick in nicks])
    keeper = ShopKeeper(cast(TopTransport, client), registry, None, workers=WORKERS)
    keeper.permit_all({nick: ShopRecord(nick, SecretStr(f"session-{nick}")) for nick in nicks})
    task = asyncio.create_task(keeper.run())
    try:
        await wait_for(lambda: keeper.permitted == set(nicks), 20, "every shop permitted")

        async def recorded() -> bool:
            return all(r.permitted_at is not None for r in await registry.records())

        await wait_for_async(recorded, 10, "every permit recorded")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert client.calls == SHOPS
    assert 1 < client.most_in_flight <= WORKERS
    assert sum(registry.batches) >= SHOPS
    assert len(registry.batches) < SHOPS // 4, registry.batches


async def test_a_shop_taken_over_is_permitted_again_only_when_its_recorded_permit_is_old() -> None:
    client = SlowPermits()
    registry = MemoryShops()
    session = SecretStr("session-shop")
    await registry.seed([("recent", session), ("old", session)])
    clock = [datetime(2026, 12, 6, tzinfo=UTC)]
    await registry.record_permits(
        [
            PermitOutcome("recent", clock[0] - timedelta(hours=1), None),
            PermitOutcome("old", clock[0] - PERMIT_TRUSTED_FOR - timedelta(minutes=1), None),
        ]
    )
    keeper = ShopKeeper(
        cast(TopTransport, client),
        registry,
        None,
        now=lambda: clock[0],
        sessions={"recent": session, "old": session},
    )
    keeper.leadership_changed("acquired", "recent")
    keeper.leadership_changed("acquired", "old")
    task = asyncio.create_task(keeper.run())
    try:
        await wait_for(lambda: keeper.permitted == {"recent", "old"}, 10, "both shops taken as permitted")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert client.calls == 1  # the old permit was made again; the recent one trusted
