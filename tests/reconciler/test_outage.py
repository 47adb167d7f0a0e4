"""The whole daemon (stream + reconciler) against the stand-in over real sockets: pushes get lost, the TMC
server goes away (it refuses connections for a few seconds, scaled down from a 20 s outage), and
messages published meanwhile are withheld for good. The database still ends equal to the stand-in's
truth, every outage has gap reports whose recovered trades are exactly what the stand-in withheld
during it, and the sweep measures the pushes lost while connected."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from simulator.compare import compare_with_market
from simulator.standin import StandIn
from store.coverage import ProvenBy
from store.gap_reports import Cause, GapReport, Outcome
from store.pg import PgStore
from taobao.limiter import TopRateLimiter
from tests.reconciler.conftest import (
    Running,
    daemon_serving,
    daemon_standin,
    small_config,
    top_client,
    wait_for,
    wait_for_async,
)

OUTAGE_SECONDS = 2.0
SAFETY_LAG = timedelta(seconds=0.5)
HELD_SECONDS = 60.0  # reconnects refused until the test lets them through (a bound if it never does)


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    async with StandIn(daemon_standin(77, history_trades=200)) as stand_in:
        yield stand_in


async def settled(standin: StandIn, running: Running) -> None:
    """Every published message that was not withheld is confirmed."""
    await wait_for(
        lambda: (
            standin.tmc.pending(standin.app_key) == 0
            and running.daemon.service.pipeline.dispatcher.is_settled
        ),
        15,
        "the stream to confirm what it was sent",
    )


async def stream_proven(running: Running, moment: datetime) -> None:
    """The stream's proof (in the ledger) reaches `moment` for every shop: pushes lost before it were
    lost while the stream claimed that time."""
    reconciler = running.daemon.reconciler
    assert reconciler is not None

    async def reached() -> bool:
        for shop in reconciler.watch.shops:
            end = await reconciler.ledger.covered_end(shop, ProvenBy.STREAM)
            if end is None or end <= moment:
                return False
        return True

    await wait_for_async(reached, 10, "the stream to prove the changes")


async def outage(
    standin: StandIn, running: Running, changes: int, *, split: bool = True, seconds: float = OUTAGE_SECONDS
) -> set[int]:
    """Cut the stream, refuse reconnects for a while, change the market meanwhile (half at once, half
    after the first refused reconnect, unless not `split`); returns the tids of the messages the
    stand-in withheld because nobody was connected.

    Not `split`: every change is made at once, and the session connects only once a gate pass that
    could read them is over (see below)."""
    tmc = standin.tmc
    withheld_before = len(tmc.withheld)
    tmc.faults.lose_while_disconnected = True
    tmc.faults.refuse_connects_for(seconds if split else HELD_SECONDS)
    cut_at = datetime.now(UTC)
    tmc.drop_connections()
    await wait_for(lambda: not running.connected, 5, "the session to notice the cut")
    if split:
        standin.market.step(changes // 2)
        refused = tmc.stats.rejected_upgrades
        await wait_for(lambda: tmc.stats.rejected_upgrades > refused, 5, "a refused reconnect")
        standin.market.step(changes - changes // 2)
    else:
        made = standin.market.step(changes)
        # A gate pass reads fresh windows up to `now - safety lag` as of its start, so one that begins
        # right after the cut cannot read these changes, and on a busy machine it can outlast a fixed
        # refusal: the session then connects right after it, the changes unread. So reconnects are
        # refused until one is refused after the changes became readable (and `seconds` have
        # passed): the gate pass before every later attempt begins after that.
        readable = max(max(c.modified for c in made) + SAFETY_LAG, cut_at + timedelta(seconds=seconds))
        await wait_for(lambda: datetime.now(UTC) >= readable, seconds + 5, "the changes to be readable")
        refused = tmc.stats.rejected_upgrades
        await wait_for(lambda: tmc.stats.rejected_upgrades > refused, 30, "a reconnect refused after that")
        tmc.faults.refuse_connects_for(0)
    await wait_for(lambda: running.connected, 3 * seconds + 15, "the session to reconnect")
    tmc.faults.lose_while_disconnected = False
    return {m.tid for m in tmc.withheld[withheld_before:] if m.reason == "disconnected" and m.tid}


def running_daemon(
    standin: StandIn, pg: PgStore, dsn: str, *, concurrent: bool, rate: float = 2000
) -> contextlib.AbstractAsyncContextManager[Running]:
    """The daemon with a quota of `rate` calls a second; `concurrent`: the stream resumes during a
    backfill rather than after it."""
    client = top_client(standin, rate=rate)
    config = small_config(
        overlap=timedelta(seconds=1),
        safety_lag=SAFETY_LAG,
        sweep_every=timedelta(seconds=1.0),
        stream_during_backfill=concurrent,
    )
    return daemon_serving(standin, pg, dsn, client, config, sync_api_rate=rate)


async def outage_reports(running: Running, since_id: int) -> list[GapReport]:
    assert running.daemon.reconciler is not None
    reports = await running.daemon.reconciler.reports.recent(500)
    return [r for r in reports if r.id > since_id and r.cause == Cause.DISCONNECT.value]


async def recovered_tids(running: Running, reports: list[GapReport]) -> set[int]:
    assert running.daemon.reconciler is not None
    tids: set[int] = set()
    for report in reports:
        rows = await running.daemon.reconciler.reports.trades(report.id)
        assert report.trades_new + report.trades_changed == len(rows)
        tids |= {row.tid for row in rows}
    return tids


async def last_report_id(running: Running) -> int:
    assert running.daemon.reconciler is not None
    recent = await running.daemon.reconciler.reports.recent(1)
    return recent[0].id if recent else 0


async def sweep_reports(running: Running) -> list[GapReport]:
    assert running.daemon.reconciler is not None
    reports = await running.daemon.reconciler.reports.recent(500)
    return [r for r in reports if r.cause == Cause.SWEEP.value]


async def swept_tids(running: Running, sweeps: list[GapReport]) -> set[int]:
    assert running.daemon.reconciler is not None
    tids: set[int] = set()
    for report in sweeps:
        tids |= {t.tid for t in await running.daemon.reconciler.reports.trades(report.id)}
    return tids


async def sweeps_recorded(running: Running, pg: PgStore) -> bool:
    """Every trade a sweep wrote (the change feed names the writer) is in a sweep's report."""
    rows = await pg.pool.fetch("SELECT DISTINCT tid FROM trade_changes WHERE source = 'sweep'")
    return {row["tid"] for row in rows} <= await swept_tids(running, await sweep_reports(running))


async def all_recovered(running: Running, since_id: int) -> bool:
    reports = await outage_reports(running, since_id)
    return bool(reports) and all(r.outcome == Outcome.RECOVERED.value for r in reports)


async def test_lost_pushes_and_outages_end_equal_to_the_truth_with_a_report_per_outage(
    standin: StandIn, pg: PgStore, dsn: str
) -> None:
    tmc, market = standin.tmc, standin.market
    async with running_daemon(standin, pg, dsn, concurrent=False) as running:
        tmc.faults.lose_fraction = 0.15  # pushes lost while connected: only the sweep finds these
        for _ in range(2):
            changes = market.step(60)
            await settled(standin, running)
            await stream_proven(running, max(c.modified for c in changes))
            before = await last_report_id(running)
            withheld = await outage(standin, running, changes=30)
            assert len(withheld) >= 10
            await wait_for_async(lambda b=before: all_recovered(running, b), 20, "the outage to be recovered")  # type: ignore[misc]
            reports = await outage_reports(running, before)
            assert {r.shop for r in reports} == {s.nick for s in standin.shops}  # one report per shop
            recovered = await recovered_tids(running, reports)
            # Everything the stand-in withheld during the outage was brought in by the outage's reports;
            # anything else they brought in was a push lost just before the cut (inside the overlap).
            assert withheld <= recovered
            lost_while_connected = {m.tid for m in tmc.withheld if m.reason == "lose_fraction"}
            assert recovered - withheld <= lost_while_connected
            assert sum(r.push_loss for r in reports) <= len(recovered - withheld)
            for report in reports:
                assert report.list_calls > 0
                assert report.fullinfo_calls >= report.trades_new + report.trades_changed
                assert report.started_at is not None
                assert report.finished_at is not None

        market.step(40)

        async def equal_to_truth() -> bool:
            return (await compare_with_market(pg.pool, market)).ok

        await wait_for_async(equal_to_truth, 30, "the database to equal the truth")
        # A sweep commits the trades it brings in before it records its report, so the database can
        # equal the truth while the last sweep's finds (and push loss) are not in a report yet.
        await wait_for_async(lambda: sweeps_recorded(running, pg), 10, "the sweeps to record their finds")
        sweeps = await sweep_reports(running)
        swept = await swept_tids(running, sweeps)
        assert swept  # pushes were lost while connected and the sweep found them...
        assert swept <= {m.tid for m in tmc.withheld}  # ...and nothing it brought in was not withheld
        assert sum(r.push_loss for r in sweeps) > 0
        metrics = running.daemon.service.metrics_text()
        assert "order_sync_push_lost_total{" in metrics


@pytest.mark.parametrize(
    "concurrent", [False, True], ids=["backfill-before-resume", "stream-during-backfill"]
)
async def test_the_stream_resumes_only_after_the_backfill_unless_told_otherwise(
    standin: StandIn, pg: PgStore, dsn: str, concurrent: bool
) -> None:
    market = standin.market
    # A tight quota (15 calls/s), so the outage's backfill takes seconds and its order shows.
    async with running_daemon(standin, pg, dsn, concurrent=concurrent, rate=15) as running:
        client = running.client
        market.step(20)
        await settled(standin, running)
        before = await last_report_id(running)
        # Short enough that a backfill running beside the stream is still busy when it is over.
        withheld = await outage(standin, running, changes=150, split=False, seconds=1.5)
        # The moment the session is back:
        caught_up = (await compare_with_market(pg.pool, market, withheld)).ok
        if not concurrent:
            # the gate brought in everything withheld during the outage before it let the session connect;
            assert caught_up
            client.limiter = TopRateLimiter(2000)
        else:
            # the session connected at once, the backfill is still busy, and changes made now reach the
            # database through the stream first (its fetches go first in the shared quota).
            assert not caught_up
            fresh = {c.tid for c in market.step(6)}
            # A withheld trade changed again now may reach the database through the stream first; the
            # backfill then finds it up to date, which is no loss.
            withheld -= fresh

            async def streamed() -> bool:
                return (await compare_with_market(pg.pool, market, fresh)).ok

            await wait_for_async(streamed, 5, "the stream to bring in new changes")
            assert not (await compare_with_market(pg.pool, market, withheld)).ok
        client.limiter = TopRateLimiter(2000)  # the rest needs no proof of order
        await wait_for_async(lambda: all_recovered(running, before), 30, "the outage to be recovered")
        assert withheld <= await recovered_tids(running, await outage_reports(running, before))

        async def equal_to_truth() -> bool:
            return (await compare_with_market(pg.pool, market)).ok

        await wait_for_async(equal_to_truth, 30, "the database to equal the truth")
