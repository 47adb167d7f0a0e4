"""/readyz over a real socket flips with the world: the database dropped under the daemon and created
again, the TMC stream cut for longer than the grace, a shop whose session TOP rejects. Each time the
JSON body names the failing check and why."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest

from simulator.standin import StandIn, StandInConfig
from simulator.tmc_server import TmcServerConfig
from tests.conftest import ADMIN_DSN, create_database, drop_database
from tests.database_server import database_of
from tests.integration.harness import daemon_settings, permit_every_shop, wait_for_async
from tests.ops.helpers import readyz, running


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    stand_in = StandIn(
        StandInConfig(
            seed=77,
            shops=2,
            market_rate=0,
            history_trades=30,
            tmc=TmcServerConfig(confirm_timeout=60, seed=77),
        )
    )
    async with stand_in:
        yield stand_in


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_readyz_fails_while_the_database_is_gone_and_recovers(
    standin: StandIn, http: aiohttp.ClientSession
) -> None:
    dsn = await create_database()
    name = database_of(dsn)
    try:
        async with running(daemon_settings(standin, dsn, ready_db_timeout_seconds=2)) as service:

            async def status_is(code: int) -> bool:
                return (await readyz(http, service))[0] == code

            await wait_for_async(lambda: status_is(200), 10, "the daemon to be ready")
            _, body = await readyz(http, service)
            assert body["checks"]["postgres"]["ok"] is True
            assert body["checks"]["stream"] == {"ok": True, "detail": "connected"}

            await drop_database(dsn)  # terminates the pool's connections too
            await wait_for_async(lambda: status_is(503), 10, "/readyz to notice the database is gone")
            _, body = await readyz(http, service)
            assert body["ready"] is False
            assert body["checks"]["postgres"]["ok"] is False
            assert body["checks"]["postgres"]["detail"].startswith("unreachable (")
            assert any(problem.startswith("postgres: unreachable") for problem in body["problems"])
            assert body["checks"]["stream"]["ok"] is True  # only the database is blamed

            admin = await asyncpg.connect(ADMIN_DSN)
            try:
                await admin.execute(f'CREATE DATABASE "{name}"')
            finally:
                await admin.close()
            await wait_for_async(lambda: status_is(200), 10, "/readyz to see the database again")
    finally:
        await drop_database(dsn)


async def test_readyz_fails_when_the_stream_stays_down_beyond_the_grace(
    standin: StandIn, http: aiohttp.ClientSession, migrated_database: str
) -> None:
    settings = daemon_settings(standin, migrated_database, ready_stream_grace_seconds=0.3)
    async with running(settings) as service:

        async def status_is(code: int) -> bool:
            return (await readyz(http, service))[0] == code

        await wait_for_async(lambda: status_is(200), 10, "the daemon to be ready")
        standin.tmc.faults.refuse_connects_for(1.5)
        assert standin.tmc.drop_connections() == 1
        await wait_for_async(lambda: status_is(503), 10, "/readyz to report the stream down")
        _, body = await readyz(http, service)
        stream = body["checks"]["stream"]
        # Polled every few milliseconds, so the reconnect cannot have happened in between.
        assert stream["ok"] is False, body
        assert stream["detail"].startswith("disconnected for "), stream
        assert stream["detail"].endswith("(grace 0.3 s)")
        assert body["checks"]["postgres"]["ok"] is True

        await wait_for_async(lambda: status_is(200), 15, "the stream to come back once connects are accepted")
        assert standin.tmc.stats.rejected_upgrades >= 1  # it really was refused in between


async def test_readyz_names_a_shop_paused_for_a_rejected_session(
    standin: StandIn, http: aiohttp.ClientSession, migrated_database: str
) -> None:
    good, bad = standin.shops
    # Both were permitted while their sessions were good (an earlier run): TMC delivers the bad one's
    # messages, and fetching them meets the revoked session.
    await permit_every_shop(standin)
    shops = [{"nick": good.nick, "session": good.session}, {"nick": bad.nick, "session": "6100-revoked"}]
    async with running(daemon_settings(standin, migrated_database, taobao_shops=shops)) as service:

        async def only_its_permit_failed() -> bool:
            # Its permit cannot be renewed either: the one problem until it trades.
            _, body = await readyz(http, service)
            permits = body["checks"]["permits"]
            return body["problems"] == [f"permits: {permits['detail']}"] and bad.nick in permits["detail"]

        await wait_for_async(only_its_permit_failed, 10, "the daemon to be up, the bad shop not permitted")
        for _ in range(100):  # the market picks shops at random: step until the bad one trades
            if any(change.seller_nick == bad.nick for change in standin.market.step(2)):
                break
        else:
            raise AssertionError("the market never changed a trade of the second shop")

        async def paused() -> bool:
            return "1 shop(s) paused: session rejected" in (await readyz(http, service))[1]["problems"]

        await wait_for_async(paused, 10, "/readyz to report the paused shop")
        _, body = await readyz(http, service)
    assert body["shops"] == {good.nick: "active", bad.nick: "paused"}
    assert body["checks"]["shops"] == {"ok": False, "detail": "1 shop(s) paused: session rejected"}
    assert "1 shop(s) paused: session rejected" in body["problems"]
    assert "27" in body["paused"][bad.nick]  # TOP's code for an invalid session, as the reason
    assert "6100-revoked" not in str(body)
