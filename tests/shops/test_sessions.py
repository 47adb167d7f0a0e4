"""Sessions that expire, over real sockets and PostgreSQL: with a refresh token the session is renewed
before it expires (and at once on code 27) with no message lost; without one the expiry is announced
ahead, the shop is paused at expiry and recovers everything once a new session is added."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from simulator.standin import StandIn
from store.pg import PgStore
from store.shops import ShopStatus
from taobao.shop_calls import TOKEN_REFRESH
from tests.reconciler.conftest import wait_for, wait_for_async
from tests.shops.conftest import Running, in_sync, loaded, running_daemon, shops_standin


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    config = shops_standin(27, shops=2, history_trades=40, redelivery=0.5, require_permits=True)
    async with StandIn(config) as stand_in:
        yield stand_in


async def session_of(running: Running, nick: str) -> str:
    record = await running.registry.get(nick)
    assert record is not None
    return record.session.get_secret_value()


async def renewed(running: Running, nick: str, old: str) -> None:
    async def changed() -> bool:
        return await session_of(running, nick) != old and running.book[nick].get_secret_value() != old

    await wait_for_async(changed, 15, f"{nick}'s session to be renewed and served")


async def test_a_session_is_renewed_before_it_expires_with_no_message_lost(
    standin: StandIn, pg: PgStore, dsn: str
) -> None:
    shop, other = standin.shops
    async with running_daemon(standin, pg, dsn, [other], sync_session_renew_seconds=2) as running:
        refresh = SecretStr(standin.gateway.auth.refresh_token_for(shop.nick))
        expires = datetime.now(UTC) + timedelta(seconds=4)
        session = SecretStr(shop.session)
        await running.registry.add(shop.nick, session, refresh_token=refresh, expires_at=expires)
        await loaded(running, shop.nick)
        standin.market.step(20)
        await renewed(running, shop.nick, shop.session)
        standin.gateway.auth.revoke(shop.session)  # the old session no longer works
        standin.market.step(20)
        for nick in (shop.nick, other.nick):
            await in_sync(running, standin, pg, nick)
        await wait_for(
            lambda: standin.tmc.stats.confirmed == standin.tmc.stats.published, 15, "every push confirmed"
        )
        record = await running.registry.get(shop.nick)
        assert record is not None
        assert record.expires_at is not None
        assert record.expires_at > expires  # the stand-in's expires_in counted from the renewal
        assert running.daemon.service.pipeline.dispatcher.paused_shops == {}


async def test_code_27_renews_at_once_where_a_refresh_token_is_held(
    standin: StandIn, pg: PgStore, dsn: str
) -> None:
    shop, other = standin.shops
    async with running_daemon(standin, pg, dsn, [other]) as running:
        refresh = SecretStr(standin.gateway.auth.refresh_token_for(shop.nick))
        await running.registry.add(shop.nick, SecretStr(shop.session), refresh_token=refresh)
        await loaded(running, shop.nick)
        standin.gateway.auth.revoke(shop.session)  # revoked early: no expiry was known
        standin.market.step(30)
        await renewed(running, shop.nick, shop.session)
        await in_sync(running, standin, pg, shop.nick)
        assert len(standin.stats.calls_of(TOKEN_REFRESH)) == 1


async def test_without_a_refresh_token_the_shop_is_announced_paused_and_recovers_with_a_new_session(
    standin: StandIn, pg: PgStore, dsn: str
) -> None:
    shop, other = standin.shops
    async with running_daemon(standin, pg, dsn, [other]) as running:
        expires = datetime.now(UTC) + timedelta(seconds=3)
        await running.registry.add(shop.nick, SecretStr(shop.session), expires_at=expires)
        await loaded(running, shop.nick)
        _, details = await running.daemon.service.readiness()
        assert shop.nick in details["sessions"]["expiring"]  # announced ahead, still ready
        assert "order_sync_shop_session_expires_seconds" in running.daemon.service.metrics_text()

        async def paused() -> bool:
            record = await running.registry.get(shop.nick)
            return record is not None and record.status is ShopStatus.PAUSED

        await wait_for_async(paused, 15, "the shop to be paused at expiry")
        await wait_for(lambda: shop.nick not in running.book, 5, "the daemon to stop serving it")
        standin.gateway.auth.revoke(shop.session)
        standin.market.step(30)  # missed while paused

        fresh = standin.gateway.auth.new_session(shop.nick)
        await running.registry.add(shop.nick, SecretStr(fresh))
        await wait_for(lambda: shop.nick in running.book, 5, "the daemon to serve it again")
        for nick in (shop.nick, other.nick):
            await in_sync(running, standin, pg, nick)
