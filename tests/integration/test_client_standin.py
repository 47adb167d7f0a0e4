"""The TOP client against the stand-in over a real socket (issue: foundation): what a list read
returns against the truth, the default-type trap, and how each class of error is handled."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from pydantic import SecretStr

from simulator.clock import ManualClock
from simulator.standin import StandIn, StandInConfig
from taobao.client import RetryPolicy, TopClient
from taobao.errors import TradeNotFound
from taobao.fields import TRADE_FULLINFO_GET
from taobao.limiter import TopRateLimiter
from tests.simulator.toputil import TopCaller, top_time

FAST = RetryPolicy(max_tries=8, max_time=30.0, base_delay=0.01, max_delay=0.05, max_ban_wait=5.0)


@pytest.fixture(scope="module")
async def standin() -> AsyncIterator[StandIn]:
    # A manual clock: changes made while a window is paged get a later `modified`, as they would in
    # production where windows end in the past.
    clock = ManualClock(datetime.now(UTC))
    stand_in = StandIn(StandInConfig(seed=5, shops=2, market_rate=0, history_trades=0), clock=clock)
    async with stand_in:
        yield stand_in


@pytest.fixture
async def client(standin: StandIn) -> AsyncIterator[TopClient]:
    standin.faults.update({"isp_error_rate": 0.0, "rate_limit_per_second": 0})
    standin.gateway.injector.clear_bans()
    standin.stats.reset()
    async with TopClient(
        app_key=standin.app_key,
        app_secret=SecretStr(standin.app_secret),
        api_url=standin.api_url,
        limiter=TopRateLimiter(1000),
        retry=FAST,
    ) as top:
        yield top


async def list_window(
    client: TopClient, session: str, start: datetime, end: datetime, between_pages: Callable[[], object]
) -> set[int]:
    """Every tid increment.get lists for the window, pages walked from the last to the first."""
    first = await client.trades_sold_increment_get(
        session, start_modified=start, end_modified=end, page_no=1, page_size=20, use_has_next=False
    )
    pages = -(-(first.total_results or 0) // 20)
    seen: set[int] = set()
    for page_no in range(pages, 0, -1):
        between_pages()
        page = await client.trades_sold_increment_get(
            session, start_modified=start, end_modified=end, page_no=page_no, page_size=20
        )
        seen.update(t.tid for t in page.trades)
    return seen


async def test_paging_backwards_while_the_market_trades_misses_nothing_the_truth_had(
    standin: StandIn, client: TopClient
) -> None:
    clock = standin.market.clock
    assert isinstance(clock, ManualClock)
    standin.market.step(400)
    end = clock.now()
    start = end - timedelta(hours=1)
    shop = standin.shops[0]
    truth = standin.truth(shop=shop.nick, digests=False).trades
    before = {tid for tid, trade in truth.items() if start <= trade.modified}
    assert len(before) > 40  # several pages
    clock.advance(2)

    def trade_on() -> None:
        standin.market.step(5)  # trades modified now leave the window and shift the rest of it

    seen = await list_window(client, shop.session, start, end, trade_on)
    after = standin.truth(shop=shop.nick, digests=False).trades
    moved = {tid for tid in before if after[tid].modified > end}
    assert moved, "the market did modify listed trades while the window was paged"
    assert before - moved <= seen
    # What left the window is in the next one.
    assert moved <= await list_window(client, shop.session, end, clock.now(), lambda: None)


async def test_omitting_type_misses_trades_the_client_sees(standin: StandIn, client: TopClient) -> None:
    standin.market.step(300)
    shop = standin.shops[1]
    end = standin.market.clock.now()
    start = end - timedelta(hours=1)
    listed = await client.trades_sold_increment_get(
        shop.session, start_modified=start, end_modified=end, page_no=1, use_has_next=False
    )
    async with aiohttp.ClientSession() as http:
        caller = TopCaller(http, standin.api_url, standin.app_key, standin.app_secret, shop.session)
        bare = await caller.ok(
            "taobao.trades.sold.increment.get",
            fields="tid,type",
            start_modified=top_time(start),
            end_modified=top_time(end),
            page_size="100",
        )
    assert listed.total_results is not None
    assert bare["total_results"] < listed.total_results  # the default subset hides some types
    calls = standin.stats.calls_of("taobao.trades.sold.increment.get")
    ours = [c for c in calls if str(c.params.get("partner_id", "")).startswith("taobao-order-sync")]
    assert ours
    assert all(c.params.get("type") for c in ours)  # the client never leaves `type` out


async def test_a_ban_is_waited_out(standin: StandIn, client: TopClient) -> None:
    shop = standin.shops[0]
    standin.market.step(60)
    tids = list(dict.fromkeys(c.tid for c in standin.market.changes if c.seller_nick == shop.nick))[-12:]
    standin.faults.update({"rate_limit_per_second": 5, "ban_seconds": 1})
    trades = [await client.trade_fullinfo(shop.session, tid) for tid in tids]
    assert [t.tid for t in trades] == tids
    assert client.stats.bans >= 1
    assert sum(n for key, n in standin.stats.errors.items() if key.startswith("7:")) >= 1


async def test_isp_errors_are_retried_and_isv_errors_are_not(standin: StandIn, client: TopClient) -> None:
    shop = standin.shops[0]
    standin.market.step(50)
    tids = [c.tid for c in standin.market.changes if c.seller_nick == shop.nick][-10:]
    standin.faults.update({"isp_error_rate": 0.4})
    trades = [await client.trade_fullinfo(shop.session, tid) for tid in tids]
    assert [t.tid for t in trades] == tids
    assert client.stats.retries[TRADE_FULLINFO_GET] >= 1
    standin.faults.update({"isp_error_rate": 0.0})
    standin.stats.reset()
    with pytest.raises(TradeNotFound):
        await client.trade_fullinfo(shop.session, 1234567890123456789)
    assert len(standin.stats.calls_of(TRADE_FULLINFO_GET)) == 1
