"""`order-sync backfill` in its own process, killed with SIGKILL half-way: the ledger holds only windows
whose every trade is in the database (no false "complete" interval), and the next run resumes from
where the report's proof stopped instead of starting over (the report may trail the ledger by the
window in flight at the kill: the ledger is written first)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from common.intervals import Interval
from reconciler.plan import floor_second
from simulator.compare import compare_with_market
from simulator.standin import StandIn, StandInConfig
from store.coverage import ProvenBy
from store.gap_reports import Cause, Outcome
from store.pg import PgStore
from taobao.fields import TRADE_FULLINFO_GET, TRADES_SOLD_INCREMENT_GET
from taobao.timefmt import format_top_time, parse_top_time
from tests.reconciler.conftest import make_reconciler, small_config, top_client, wait_for_async

ROOT = Path(__file__).resolve().parents[2]
WINDOW = timedelta(seconds=3600)  # SYNC_BACKFILL_WINDOW_SECONDS below


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    stand_in = StandIn(StandInConfig(seed=33, shops=1, market_rate=0, history_trades=1500, history_days=3))
    async with stand_in:
        stand_in.faults.latency_ms = 3  # a few ms per call, so the kill lands in the middle
        yield stand_in


def backfill_env(standin: StandIn, dsn: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TAOBAO_", "SYNC_", "DATABASE_"))}
    env.update(
        DATABASE_URL=dsn,
        TAOBAO_APP_KEY=standin.app_key,
        TAOBAO_APP_SECRET=standin.app_secret,
        TAOBAO_API_URL=standin.api_url,
        TAOBAO_TMC_URL=standin.tmc_url or "",
        TAOBAO_SHOPS=json.dumps([{"nick": s.nick, "session": s.session} for s in standin.shops]),
        SYNC_API_RATE="1000",
        SYNC_OVERLAP_SECONDS="60",
        SYNC_SAFETY_LAG_SECONDS="1",
        SYNC_BACKFILL_WINDOW_SECONDS=str(int(WINDOW.total_seconds())),
        SYNC_BACKFILL_CONCURRENCY="4",
        LOG_LEVEL="WARNING",
        LOG_FORMAT="text",
        PYTHONPATH=str(ROOT),
    )
    return env


def stored_in(standin: StandIn, interval: Interval) -> list[int]:
    return [
        rec.tid
        for rec in standin.market.records()
        if interval.start.timestamp() <= rec.modified < interval.end.timestamp()
    ]


async def test_a_backfill_killed_half_way_leaves_no_false_proof_and_resumes(
    standin: StandIn, pg: PgStore, dsn: str, tmp_path: Path
) -> None:
    shop = standin.shops[0].nick
    now = datetime.now(UTC)
    since, until = floor_second(now - timedelta(days=3)), floor_second(now - timedelta(minutes=10))
    log = (tmp_path / "backfill.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "daemon.cli",
        "backfill",
        "--shop",
        shop,
        "--since",
        format_top_time(since),
        "--until",
        format_top_time(until),
        env=backfill_env(standin, dsn),
        cwd=tmp_path,
        stdout=log,
        stderr=log,
    )

    async def some_windows_proven() -> bool:
        count = await pg.pool.fetchval("SELECT count(*) FROM coverage WHERE proven_by = 'backfill'")
        return bool(count) and len(standin.stats.calls_of(TRADE_FULLINFO_GET)) > 150

    try:
        await wait_for_async(some_windows_proven, 30, "the backfill to prove its first windows")
        process.send_signal(signal.SIGKILL)
        await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        log.close()
    assert process.returncode == -signal.SIGKILL

    async with top_client(standin) as client:
        reconciler = make_reconciler(standin, pg, client, small_config(overlap=timedelta(seconds=60)))
        proven = await reconciler.ledger.intervals(shop, kinds=[ProvenBy.BACKFILL])
        assert proven
        # No false "complete": every trade of every proven stretch is in the database, current.
        for interval in proven:
            comparison = await compare_with_market(pg.pool, standin.market, stored_in(standin, interval))
            assert comparison.ok, (interval, comparison.to_json())
        window = Interval(since, until)
        assert await reconciler.ledger.gaps(shop, since, until)  # killed before the end
        (report,) = await reconciler.reports.open_reports(shop)
        assert report.cause == Cause.MANUAL.value
        assert report.outcome is None
        assert report.progress_until is not None
        # Each window is proven in the ledger first, then added to the report (so the report never
        # claims more than the ledger holds): a kill between the two commits leaves the report one
        # window behind the ledger, never ahead, and the next run reads that window again.
        assert proven[-1].end - WINDOW <= report.progress_until <= proven[-1].end

        # The next run picks the open report up where its proof stopped.
        calls_before = len(standin.stats.calls_of(TRADES_SOLD_INCREMENT_GET))
        await reconciler.recover(fresh=True)
        resumed = standin.stats.calls_of(TRADES_SOLD_INCREMENT_GET)[calls_before:]
        first_start = parse_top_time(resumed[0].params["start_modified"])
        assert first_start == report.progress_until - timedelta(seconds=60)  # only the overlap is re-read
        final = await reconciler.reports.get(report.id)
        assert final.outcome == Outcome.RECOVERED.value
        assert await reconciler.ledger.gaps(shop, since, until) == []
        comparison = await compare_with_market(pg.pool, standin.market, stored_in(standin, window))
        assert comparison.ok, comparison.to_json()
        assert comparison.checked > 500
