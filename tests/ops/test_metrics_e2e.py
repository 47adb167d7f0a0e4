"""/metrics scraped after a real run agrees with what the other side saw: the stand-in's TMC server and
TOP gateway counted the same confirms, deliveries, fullinfo calls and bans, and the database holds one
feed row per change the histogram observed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest
from pydantic import SecretStr

from daemon.metrics import DaemonMetrics
from simulator.standin import StandIn, StandInConfig
from simulator.tmc_server import TmcServerConfig
from taobao.client import RetryPolicy, TopClient
from taobao.errors import RateLimited
from taobao.fields import TRADE_FULLINFO_GET
from taobao.limiter import TopRateLimiter
from tests.integration.harness import daemon_settings, wait_for
from tests.ops.helpers import base_url, get, metric, parse_metrics, running

CHANGES = 60


@pytest.fixture(scope="module")
async def standin() -> AsyncIterator[StandIn]:
    stand_in = StandIn(
        StandInConfig(
            seed=31,
            shops=3,
            market_rate=0,
            history_trades=50,
            tmc=TmcServerConfig(confirm_timeout=60, seed=31),
        )
    )
    async with stand_in:
        yield stand_in


async def test_metrics_after_a_run_equal_what_the_standin_saw(
    standin: StandIn, migrated_database: str
) -> None:
    tmc, gateway = standin.tmc.stats, standin.stats
    async with running(daemon_settings(standin, migrated_database)) as service:
        await wait_for(lambda: tmc.connections == 1, 10, "the daemon to connect")
        standin.market.step(CHANGES)
        await wait_for(
            lambda: tmc.confirmed == tmc.published == CHANGES and service.pipeline.dispatcher.held_count == 0,
            20,
            "every change to be confirmed",
        )
        async with aiohttp.ClientSession() as http:
            status, text = await get(http, base_url(service) + "/metrics")
    assert status == 200
    m = parse_metrics(text)

    assert metric(m, "order_sync_tmc_messages_confirmed_total") == tmc.confirmed == CHANGES
    assert (
        metric(m, "order_sync_tmc_messages_received_total")
        == tmc.delivered + tmc.redelivered + tmc.duplicated
    )
    fullinfo = metric(m, "order_sync_top_calls_total", method=TRADE_FULLINFO_GET)
    assert fullinfo == gateway.calls[TRADE_FULLINFO_GET] > 0
    assert metric(m, "order_sync_top_calls_total", method=TRADE_FULLINFO_GET, outcome="ok") == fullinfo
    assert metric(m, "order_sync_fullinfo_fetches_total", outcome="ok") == fullinfo
    assert fullinfo <= CHANGES  # coalescing only ever saves calls
    assert metric(m, "order_sync_tmc_connected") == 1
    assert metric(m, "order_sync_tmc_connects_total") == tmc.connections == 1
    assert "order_sync_tmc_reconnect_stall_seconds_count" in m  # there from the first scrape
    assert metric(m, "order_sync_tmc_reconnect_stall_seconds_count") == 0  # one connection, no reconnect
    for idle in ("order_sync_tmc_messages_held", "order_sync_tids_queued", "order_sync_fullinfo_in_flight"):
        assert metric(m, idle) == 0, idle

    committed = metric(m, "order_sync_store_batches_total", outcome="committed")
    assert committed > 0
    assert metric(m, "order_sync_store_apply_seconds_count") == committed
    assert metric(m, "order_sync_store_apply_seconds_sum") > 0
    conn = await asyncpg.connect(migrated_database)
    try:
        feed_rows = await conn.fetchval("SELECT count(*) FROM trade_changes WHERE source = 'stream'")
    finally:
        await conn.close()
    assert metric(m, "order_sync_change_commit_lag_seconds_count") == feed_rows > 0


async def test_bans_and_their_seconds_equal_the_gateways(standin: StandIn) -> None:
    def rate_limited_answers() -> int:
        return sum(n for key, n in standin.stats.errors.items() if key.startswith("7:"))

    before = rate_limited_answers()
    tids = sorted(standin.truth(digests=False).trades)[:6]
    shop = standin.shops[0].session
    standin.faults.rate_limit_per_second = 1
    try:
        client = TopClient(
            app_key=standin.app_key,
            app_secret=SecretStr(standin.app_secret),
            api_url=standin.api_url,
            limiter=TopRateLimiter(500),
            retry=RetryPolicy(max_tries=1, max_ban_wait=0),  # a ban goes back to the caller at once
        )
        metrics = DaemonMetrics()
        metrics.watch_top_client(client.stats)
        async with client:
            # All sent before the first answer, so at most one per wall-clock second gets through.
            results = await asyncio.gather(
                *(client.trade_fullinfo(shop, tid) for tid in tids), return_exceptions=True
            )
    finally:
        standin.faults.rate_limit_per_second = 0
        standin.gateway.injector.clear_bans()
    bans = [r for r in results if isinstance(r, RateLimited)]
    assert len(bans) >= len(tids) - 2

    m = parse_metrics(metrics.registry.render())
    assert metric(m, "order_sync_top_bans_total") == len(bans) == rate_limited_answers() - before
    assert metric(m, "order_sync_top_ban_seconds_total") == sum(b.ban_seconds for b in bans) >= len(bans)
    assert metric(m, "order_sync_top_calls_total", outcome="rate_limited") == len(bans)
