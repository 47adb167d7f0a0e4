"""Shops added to and removed from a running daemon, over real sockets and PostgreSQL: an added shop's
history is loaded and its pushes streamed until the database equals the stand-in's truth for it; a
removed shop costs no more TOP calls, and its trades stay."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from simulator.standin import StandIn
from store.pg import PgStore
from tests.reconciler.conftest import wait_for
from tests.shops.conftest import Running, in_sync, loaded, running_daemon, shops_standin

INCREMENT = "taobao.trades.sold.increment.get"


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    async with StandIn(shops_standin(16, shops=3, history_trades=90)) as stand_in:
        yield stand_in


@pytest.fixture
async def running(standin: StandIn, pg: PgStore, dsn: str) -> AsyncIterator[Running]:
    async with running_daemon(standin, pg, dsn, standin.shops[:2]) as run:
        yield run


async def test_a_shop_added_while_running_is_loaded_streamed_and_ends_equal_to_the_truth(
    standin: StandIn, pg: PgStore, running: Running
) -> None:
    first, second, third = standin.shops
    await loaded(running, first.nick)
    await running.registry.add(third.nick, SecretStr(third.session))
    await wait_for(lambda: third.nick in running.book, 5, "the daemon to serve the added shop")
    await loaded(running, third.nick)

    made = standin.market.step(40)
    assert {c.seller_nick for c in made} == {first.nick, second.nick, third.nick}
    for shop in (first, second, third):
        await in_sync(running, standin, pg, shop.nick)
    fetched = {c.shop for c in standin.stats.calls_of("taobao.trade.fullinfo.get")}
    assert third.nick in fetched  # its pushes were fetched, not only its lists read


async def test_a_removed_shop_stops_costing_calls_and_keeps_its_trades(
    standin: StandIn, pg: PgStore, running: Running
) -> None:
    first, second, _ = standin.shops
    await loaded(running, first.nick)
    await loaded(running, second.nick)
    kept = await pg.pool.fetchval("SELECT count(*) FROM trades WHERE seller_nick = $1", first.nick)
    assert kept > 0
    await running.registry.remove(first.nick)
    await wait_for(lambda: first.nick not in running.book, 5, "the daemon to stop serving the shop")
    # A round that began before the removal may still read the shop; one that begins a sweep period
    # later (sweeps are due every second here) does not.
    quiet_from = datetime.now(UTC) + timedelta(seconds=1.5)
    standin.market.step(30)
    await in_sync(running, standin, pg, second.nick)

    def swept_since() -> bool:
        return any(c.at >= quiet_from for c in standin.stats.calls_of(INCREMENT, second.nick))

    await wait_for(swept_since, 15, "a sweep of the other shop after the removal")
    late = [c for c in standin.stats.log if c.shop == first.nick and c.at >= quiet_from]
    assert late == []
    # Its rows stay (a round under way at the removal may still have added some).
    assert await pg.pool.fetchval("SELECT count(*) FROM trades WHERE seller_nick = $1", first.nick) >= kept


async def test_a_shop_added_while_running_has_its_series_at_zero_before_anything_happens_to_it(
    standin: StandIn, running: Running
) -> None:
    nick = standin.shops[2].nick  # not served yet; the market makes no changes, so nothing is lost
    at_zero = [
        f'order_sync_push_lost_total{{shop="{nick}"}} 0.0',
        f'order_sync_reconciler_windows_failed_total{{shop="{nick}"}} 0.0',
        f'order_sync_reconciler_trades_recovered_total{{cause="sweep",shop="{nick}"}} 0.0',
    ]
    # Gauges whose value moves as soon as the reconciler looks at the shop: present is what counts.
    present = [f'order_sync_gaps_open{{shop="{nick}"}} ', f'order_sync_unresolved_trades{{shop="{nick}"}} ']

    def missing() -> list[str]:
        text = running.daemon.service.metrics_text()
        return [line for line in at_zero + present if line not in text]

    assert missing() == at_zero + present
    await running.registry.add(nick, SecretStr(standin.shops[2].session))
    await wait_for(lambda: not missing(), 5, "the added shop's series")
    assert standin.tmc.stats.published == 0
