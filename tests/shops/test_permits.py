"""TMC delivers messages only for permitted sellers (the stand-in's `require_permits`): the daemon
permits every shop at start and every shop added later, cancels a removed one, and a shop whose permit
fails is covered by its lists and named in /readyz."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from pydantic import SecretStr

from simulator.standin import StandIn
from simulator.top_protocol import invalid
from store.pg import PgStore
from taobao.shop_calls import TMC_USER_PERMIT
from tests.reconciler.conftest import wait_for, wait_for_async
from tests.shops.conftest import in_sync, loaded, running_daemon, shops_standin


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    config = shops_standin(61, shops=3, history_trades=60, require_permits=True)
    async with StandIn(config) as stand_in:
        yield stand_in


async def test_a_daemon_started_against_a_platform_that_requires_permits_gets_every_shops_pushes(
    standin: StandIn, pg: PgStore, dsn: str
) -> None:
    async with running_daemon(standin, pg, dsn, standin.shops) as running:
        nicks = {shop.nick for shop in standin.shops}
        await wait_for(lambda: standin.permits.users == nicks, 10, "every shop permitted")
        for nick in nicks:
            await loaded(running, nick)
        made = standin.market.step(45)
        assert {c.seller_nick for c in made} == nicks
        for nick in nicks:
            await in_sync(running, standin, pg, nick)
        assert not [m for m in standin.tmc.withheld if m.reason == "not_permitted"]
        assert standin.tmc.stats.confirmed == standin.tmc.stats.published  # every push was delivered
        _, details = await running.daemon.service.readiness()
        assert details["checks"]["permits"]["ok"], details
        records = {r.nick: r for r in await running.registry.records()}
        assert all(r.permitted_at is not None and r.permit_error is None for r in records.values())


async def test_an_added_shop_is_permitted_and_a_removed_one_cancelled(
    standin: StandIn, pg: PgStore, dsn: str
) -> None:
    first, second, third = standin.shops
    async with running_daemon(standin, pg, dsn, [first, second]) as running:
        await wait_for(lambda: standin.permits.users == {first.nick, second.nick}, 10, "the two permitted")
        await running.registry.add(third.nick, SecretStr(third.session))
        await wait_for(lambda: third.nick in standin.permits.users, 10, "the added shop permitted")
        await loaded(running, third.nick)
        standin.market.step(30)
        await in_sync(running, standin, pg, third.nick)
        assert standin.stats.calls_of(TMC_USER_PERMIT, third.nick)

        await running.registry.remove(first.nick)
        await wait_for(lambda: first.nick not in standin.permits.users, 10, "the removed shop cancelled")


async def test_a_shop_whose_permit_fails_is_not_ready_and_covered_by_its_lists(
    standin: StandIn, pg: PgStore, dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second, third = standin.shops

    def refuse(shop: int, params: Mapping[str, str]) -> dict[str, Any]:
        if standin.market.shops[shop].nick == third.nick:
            raise invalid("topics", "no topic of the app may be delivered to this seller")
        return allow(shop, params)

    allow = standin.gateway.auth.permit
    monkeypatch.setattr(standin.gateway.auth, "permit", refuse)
    async with running_daemon(standin, pg, dsn, [first, second]) as running:
        await running.registry.add(third.nick, SecretStr(third.session))
        service = running.daemon.service

        async def named() -> bool:
            ready, details = await service.readiness()
            return not ready and third.nick in details["checks"]["permits"]["detail"]

        await wait_for_async(named, 15, "/readyz to name the shop whose permit failed")

        async def recorded() -> bool:
            record = await running.registry.get(third.nick)
            assert record is not None
            assert record.permitted_at is None
            return bool(record.permit_error)

        await wait_for_async(recorded, 5, "the registry to record why")
        # No pushes reach the daemon for it, yet its trades end equal to the truth: its lists alone.
        await loaded(running, third.nick)
        standin.market.step(30)
        await in_sync(running, standin, pg, third.nick)
        assert [m for m in standin.tmc.withheld if m.reason == "not_permitted"]
