"""The whole daemon (stream + reconciler) against the stand-in over real sockets and PostgreSQL, while
the stand-in sends what real Taobao sends that a careful client still trips over: malformed list
pages, a close reason holding NUL, a frame over the daemon's limit, headers the protocol does not
define, broken values in answers. During each fault nothing ends the daemon and no list read that
does not add up proves anything; once it is off the database equals the stand-in's truth with
nothing left unresolved (docs/design.md#bad-input-never-crashes,
docs/design.md#lists-are-checked-before-proof)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from common.backoff import BackoffPolicy
from listener.session import MAX_FRAME_BYTES
from simulator.compare import compare_with_market
from simulator.standin import StandIn
from store.gap_reports import Cause, Outcome
from store.pg import PgStore
from tests.reconciler.conftest import (
    Running,
    daemon_serving,
    daemon_standin,
    small_config,
    top_client,
    wait_for,
    wait_for_async,
)

REDRIVE = BackoffPolicy(base=0.2, cap=0.5)
# Pages whose counts promise more than they hold: they parse, only the checks can catch them.
SHAPE_FAULTS = ("short_page", "empty_page")


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    async with StandIn(daemon_standin(91, history_trades=150)) as stand_in:
        yield stand_in


@pytest.fixture
async def running(standin: StandIn, pg: PgStore, dsn: str) -> AsyncIterator[Running]:
    client = top_client(standin)
    config = small_config(
        overlap=timedelta(seconds=1),
        safety_lag=timedelta(seconds=0.5),
        sweep_every=timedelta(seconds=1.0),
        redrive=REDRIVE,
    )
    redrive = {"sync_redrive_seconds": 0.2, "sync_redrive_cap_seconds": 0.5}
    async with daemon_serving(standin, pg, dsn, client, config, **redrive) as run:
        yield run


async def in_sync(standin: StandIn, run: Running, within: float = 30) -> None:
    """The database ends equal to the truth, nothing unresolved, and the daemon never stopped."""

    async def equal() -> bool:
        if await run.unresolved():
            return False
        return (await compare_with_market(run.pg.pool, standin.market)).ok

    try:
        await wait_for_async(equal, within, "the database to equal the stand-in's truth")
    except AssertionError:
        comparison = await compare_with_market(run.pg.pool, standin.market)
        rows = await run.pg.pool.fetch("SELECT * FROM unresolved_trades")
        raise AssertionError(f"{comparison.to_json()} unresolved={[dict(r) for r in rows]}") from None
    assert not run.task.done(), "the daemon stopped"


async def outage(standin: StandIn, run: Running, changes: int) -> None:
    """Cut the stream and change the market while it is away: only list reads can bring these in."""
    tmc = standin.tmc
    tmc.faults.lose_while_disconnected = True
    tmc.faults.refuse_connects_for(1.0)
    tmc.drop_connections()
    await wait_for(lambda: not run.connected, 5, "the session to notice the cut")
    standin.market.step(changes)
    await wait_for(lambda: run.connected, 20, "the session to reconnect")
    tmc.faults.lose_while_disconnected = False


async def disconnect_reports(run: Running) -> list[Any]:
    assert run.daemon.reconciler is not None
    reports = await run.daemon.reconciler.reports.recent(500)
    return [r for r in reports if r.cause == Cause.DISCONNECT.value]


async def test_malformed_list_pages_prove_nothing_and_the_gap_is_read_once_they_are_right(
    standin: StandIn, running: Running
) -> None:
    standin.market.step(20)
    await in_sync(standin, running)
    faults = standin.faults
    faults.malformed_page_kinds = SHAPE_FAULTS
    faults.malformed_page_rate = 1.0  # every list page promises more than it holds
    before = {r.id for r in await disconnect_reports(running)}
    await outage(standin, running, changes=40)
    reconciler = running.daemon.reconciler
    assert reconciler is not None

    async def reads_failed() -> bool:
        reports = [r for r in await disconnect_reports(running) if r.id not in before]
        return bool(reports) and all(r.windows_failed > 0 for r in reports)

    await wait_for_async(reads_failed, 20, "the outage's reads to fail on the malformed pages")
    for report in [r for r in await disconnect_reports(running) if r.id not in before]:
        assert report.outcome != Outcome.RECOVERED.value  # never proven over a page that left trades out
    faults.malformed_page_rate = 0.0
    await in_sync(standin, running)


async def test_a_close_reason_holding_nul_is_recorded_sanitized_and_the_stream_goes_on(
    standin: StandIn, running: Running
) -> None:
    tmc = standin.tmc
    connects = running.session.counters.connects
    tmc.faults.close_reason = "reach max idle time\x00"
    tmc.faults.close_next = 1
    tmc.faults.close_next_after = 0.0
    await wait_for(lambda: running.session.counters.connects > connects, 20, "a reconnect after the close")
    reason = await running.pg.pool.fetchval(
        "SELECT reason FROM stream_connections WHERE reason LIKE '%idle%' LIMIT 1"
    )
    assert reason is not None
    assert "\x00" not in reason
    assert "\ufffd" in reason
    standin.market.step(30)
    await in_sync(standin, running)


async def test_a_frame_over_the_limit_is_dead_lettered_and_confirmed_without_a_reconnect_loop(
    standin: StandIn, running: Running
) -> None:
    tmc = standin.tmc
    tmc.faults.oversize_bytes = MAX_FRAME_BYTES + 1024 * 1024
    tmc.faults.oversize_next = 1
    connects = running.session.counters.connects
    standin.market.step(10)
    await wait_for(lambda: running.session.counters.oversize == 1, 20, "the oversize frame")
    await wait_for(lambda: standin.tmc.pending(standin.app_key) == 0, 20, "every message confirmed")
    assert running.session.counters.connects == connects  # read, not refused at the socket
    [letter] = await running.pg.pool.fetch(
        "SELECT reason, octet_length(payload) AS size FROM dead_letters"
        " WHERE source = 'tmc' AND reason LIKE '%over the%limit%'"
    )
    assert "(message " in letter["reason"]  # with its id: the message confirmed
    assert letter["size"] > MAX_FRAME_BYTES  # kept whole
    # The trade that push named is read again by the sweep, like any lost push.
    await in_sync(standin, running)
    assert running.session.counters.connects == connects


async def test_pushes_with_unknown_headers_are_counted_and_their_trades_arrive_once_they_stop(
    standin: StandIn, running: Running
) -> None:
    tmc = standin.tmc
    tmc.faults.unknown_header_kind = "header_type"
    tmc.faults.unknown_header_fraction = 0.3
    standin.market.step(40)
    await wait_for(lambda: running.session.counters.unknown_headers > 0, 20, "an unknown header")
    tmc.faults.unknown_header_fraction = 0.0
    await in_sync(standin, running)
    metrics = running.daemon.service.metrics_text()
    assert 'tmc_session_events_total{kind="unknown_header"}' in metrics


async def test_broken_values_leave_trades_unresolved_until_the_answers_are_right(
    standin: StandIn, running: Running
) -> None:
    faults = standin.faults
    faults.odd_values_rate = 0.3  # year 1, 1E-20000, "N/A", nesting past the parser
    standin.market.step(40)
    await wait_for_async(
        lambda: _positive(running.unresolved()), 20, "trades with broken answers to be unresolved"
    )
    assert not running.task.done()
    faults.odd_values_rate = 0.0
    await in_sync(standin, running)


async def _positive(count: Any) -> bool:
    return bool(await count)
