"""An app-wide TOP failure against the whole daemon (stream + reconciler), over real sockets and a real
PostgreSQL (docs/design.md#app-wide-pause): the stand-in answers every call with an app-wide error
for a while (its `error_window` knob: the permission package lapsed, or a proxy's unwrapped 200) while
the market keeps changing. During it nothing is dead-lettered, recorded as unresolved or confirmed,
no stretch after the pause began is proven, and /readyz is red with the reason; once it ends the
database equals the stand-in's truth and every message is confirmed."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest

from common.backoff import BackoffPolicy
from daemon.app import Daemon
from simulator.compare import compare_with_market
from simulator.standin import StandIn
from store.coverage import ProvenBy
from store.pg import PgStore
from taobao.pause import AppPause
from tests.reconciler.conftest import (
    Running,
    daemon_serving,
    daemon_standin,
    small_config,
    top_client,
    wait_for,
    wait_for_async,
)

PROBES = BackoffPolicy(base=0.2, cap=0.5, reset_after=5.0)
REASONS = {"permission": "isv.permission-api-package-limit", "unwrapped-json": "without a"}


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    async with StandIn(daemon_standin(91, history_trades=100, redelivery=0.5)) as stand_in:
        yield stand_in


def running_daemon(
    standin: StandIn, pg: PgStore, dsn: str
) -> contextlib.AbstractAsyncContextManager[Running]:
    """The daemon, its client pausing on app-wide errors (probing on `PROBES`)."""
    client = top_client(standin, app_pause=AppPause(PROBES))
    config = small_config(overlap=timedelta(seconds=1), safety_lag=timedelta(seconds=0.5))
    return daemon_serving(standin, pg, dsn, client, config)


async def proven_ends(daemon: Daemon) -> list[datetime]:
    reconciler = daemon.reconciler
    assert reconciler is not None
    ends = []
    for shop in reconciler.watch.shops:
        for kind in ProvenBy:
            end = await reconciler.ledger.covered_end(shop, kind)
            if end is not None:
                ends.append(end)
    return ends


async def counts(pg: PgStore) -> tuple[int, int]:
    dead = await pg.pool.fetchval("SELECT count(*) FROM dead_letters")
    unresolved = await pg.pool.fetchval("SELECT count(*) FROM unresolved_trades")
    return int(dead), int(unresolved)


@pytest.mark.parametrize("kind", ["permission", "unwrapped-json"])
async def test_an_app_wide_window_confirms_nothing_proves_nothing_and_ends_equal_to_the_truth(
    standin: StandIn, pg: PgStore, dsn: str, kind: str
) -> None:
    tmc, market = standin.tmc, standin.market
    async with running_daemon(standin, pg, dsn) as running:
        daemon, client, service = running.daemon, running.client, running.daemon.service
        market.step(30)
        await wait_for(lambda: tmc.pending(standin.app_key) == 0, 15, "the first changes confirmed")
        before = await counts(pg)
        confirmed = tmc.stats.confirmed

        standin.faults.error_window = kind
        changed = market.step(30)
        await wait_for(lambda: client.app_pause.paused, 10, "the app-wide pause")
        # Several probes refused, the messages delivered (and redelivered) meanwhile.
        await wait_for(lambda: client.app_pause.state().probes >= 3, 15, "three refused probes")
        await wait_for(lambda: tmc.stats.published >= confirmed + len(changed), 5, "the pushes")

        state = client.app_pause.state()
        assert state.since is not None
        assert tmc.stats.confirmed == confirmed  # nothing confirmed
        assert await counts(pg) == before  # no dead letter, no unresolved trade
        assert all(end <= state.since for end in await proven_ends(daemon))  # nothing proven since
        ready, details = await service.readiness()
        assert not ready
        [problem] = [p for p in details["problems"] if p.startswith("top:")]
        assert REASONS[kind] in problem
        assert details["top"]["paused"] is True
        assert details["checks"]["top"]["ok"] is False
        assert "order_sync_top_app_paused 1" in service.metrics_text()

        standin.faults.error_window = ""
        await wait_for(lambda: not client.app_pause.paused, 10, "the pause to clear")
        market.step(20)

        async def equal_to_truth() -> bool:
            return (await compare_with_market(pg.pool, market)).ok

        await wait_for_async(equal_to_truth, 30, "the database to equal the truth")
        await wait_for(lambda: tmc.pending(standin.app_key) == 0, 20, "every message confirmed")
        assert tmc.stats.confirmed == tmc.stats.published
        assert await counts(pg) == before
        _, details = await service.readiness()
        assert details["checks"]["top"]["ok"] is True
        assert "order_sync_top_app_pauses_total 1" in service.metrics_text()
