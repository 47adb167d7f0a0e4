"""What a sweep brings in, and what it leaves alone. Fullinfo answers with a trade's newest version, which
can lie past the windows the sweep read (a lag probe of a stored trade, a trade changed again since it
was listed). The sweep applies such a version only where the stream claimed its time, and counts it as
push loss there; a version the stream has not claimed yet (its push may still be on its way) or that
falls in an outage (whose report must bring it in) is left to whoever reads that time.

The stand-in and the reconciler share a manual clock (within the gateway's timestamp tolerance); the
stream is played by hand: its connects and disconnects go through the session hooks, and a delivered
change is applied with source "stream"."""

from __future__ import annotations

from reconciler.reconciler import Reconciler
from simulator.clock import ManualClock
from simulator.compare import compare_with_market
from simulator.standin import StandIn
from store.gap_reports import Cause
from store.pg import PgStore
from taobao.client import TopClient
from taobao.tmc.events import Connected, Disconnected
from tests.reconciler.conftest import make_reconciler, small_config
from tests.reconciler.hand_stream import OVERLAP, client, clock, deliver, lose_a_change, standin

__all__ = ["client", "clock", "standin"]  # the fixtures this module uses


async def connected(
    standin: StandIn, pg: PgStore, client: TopClient, clock: ManualClock
) -> tuple[Reconciler, str, set[int]]:
    """A reconciler whose stream connected a second before the market traded (delivered)."""
    reconciler = make_reconciler(standin, pg, client, small_config(overlap=OVERLAP), now=clock.now)
    await reconciler.start()
    await reconciler.on_state(Connected(clock.now(), "token"))
    clock.advance(1)
    stored = {change.tid for change in standin.market.step(6)}
    await deliver(standin, pg, client, stored)
    return reconciler, standin.shops[0].nick, stored


async def is_current(pg: PgStore, standin: StandIn, tid: int) -> bool:
    return (await compare_with_market(pg.pool, standin.market, [tid])).ok


async def test_a_version_the_stream_has_not_claimed_waits_for_the_next_sweep_which_counts_its_loss(
    standin: StandIn, clock: ManualClock, pg: PgStore, client: TopClient
) -> None:
    reconciler, shop, stored = await connected(standin, pg, client, clock)
    clock.advance(5)
    lost = await lose_a_change(standin, pg, client, stored)  # now: after what the stream claims
    await reconciler.detector.flush_stream(clock.now())

    # The window ends 3 s back; the lost trade is stored with a `modified` in it, so a lag probe fetches
    # its newest version, which the stream has not claimed yet.
    first = await reconciler.sweep(shop)
    assert first.windows_read == 1
    assert first.brought_in == 0
    assert not await is_current(pg, standin, lost)

    clock.advance(5)
    await reconciler.detector.flush_stream(clock.now())  # the stream claims the change's second, never sent
    second = await reconciler.sweep(shop)
    assert (second.brought_in, second.push_loss) == (1, 1)
    assert await is_current(pg, standin, lost)
    sweeps = [r for r in await reconciler.reports.recent(10) if r.cause == Cause.SWEEP.value]
    assert [(r.trades_changed, r.push_loss) for r in sweeps] == [(1, 1)]


async def test_a_version_made_during_an_outage_is_left_to_the_outage_report(
    standin: StandIn, clock: ManualClock, pg: PgStore, client: TopClient
) -> None:
    reconciler, shop, stored = await connected(standin, pg, client, clock)
    clock.advance(3)
    await reconciler.on_state(Disconnected(clock.now(), "connection lost", 4.0))
    clock.advance(1)
    lost = await lose_a_change(standin, pg, client, stored)  # withheld: nobody was connected
    clock.advance(1)
    await reconciler.on_state(Connected(clock.now(), "token"))
    clock.advance(5)
    await reconciler.detector.flush_stream(clock.now())

    # The outage's report is still open, so the sweep reads only up to where the outage began; a lag
    # probe fetches the lost trade's version from inside the outage.
    swept = await reconciler.sweep(shop)
    assert swept.windows_read == 1
    assert swept.brought_in == 0
    assert not await is_current(pg, standin, lost)

    await reconciler.recover(fresh=False)
    [outage] = [r for r in await reconciler.reports.recent(10) if r.cause == Cause.DISCONNECT.value]
    assert lost in {t.tid for t in await reconciler.reports.trades(outage.id)}
    assert await is_current(pg, standin, lost)
