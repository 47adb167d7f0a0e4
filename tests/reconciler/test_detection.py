"""Gap detection (reconciler/detection.py, new_shops.py) over the in-memory storage: every way the service
can miss changes opens a gap report (restart, disconnect, silence, a hole in the ledger), a new shop gets
its initial load or starts its ledger at the first connection, and what the stream proves is recorded."""

from __future__ import annotations

from datetime import datetime, timedelta

from common.intervals import Interval
from reconciler.coordination import Alone
from store.coverage import ProvenBy
from store.gap_reports import Cause
from taobao.tmc.events import Connected, Disconnected, TmcMessage
from tests.reconciler.fakes import T0, Unit, unit_config, unit_reconciler

SHOP = "shop-a"
HOUR = timedelta(hours=1)


def message(n: int, shop: str, unit: Unit) -> TmcMessage:
    return TmcMessage(id=n, topic="taobao_trade_TradeBuyerPay", content="{}", time=unit.clock.now, nick=shop)


async def followed_until(unit: Unit, end_before_now: timedelta, *, shop: str = SHOP) -> None:
    ledger = unit.reconciler.ledger
    await ledger.register_shop(shop, T0 - 10 * HOUR)
    await ledger.prove(shop, Interval(T0 - 10 * HOUR, T0 - end_before_now), ProvenBy.STREAM)


async def test_a_restart_opens_a_report_from_where_the_ledger_ends_to_now() -> None:
    unit = unit_reconciler(shops=[SHOP, "shop-b"])
    await followed_until(unit, HOUR)
    await followed_until(unit, HOUR, shop="shop-b")
    stale = await unit.reconciler.reports.create(
        "shop-b", Cause.DISCONNECT, Interval(T0 - 2 * HOUR, T0 - HOUR / 2), detected_at=T0 - HOUR
    )
    await unit.reconciler.start()
    await unit.reconciler.start()  # once per process
    reports = {r.shop: r for r in await unit.reconciler.reports.recent(10) if r.cause == Cause.RESTART.value}
    assert (reports[SHOP].window_start, reports[SHOP].window_end) == (T0 - HOUR, T0)
    # An open report already reads part of the time: the restart starts where it ends.
    assert (reports["shop-b"].window_start, reports["shop-b"].window_end) == (stale.window_end, T0)
    assert unit.reconciler.metrics.gaps_opened.value(cause="restart") == 2


async def test_a_new_shop_without_an_initial_load_is_followed_from_the_first_connection() -> None:
    unit = unit_reconciler()
    await unit.reconciler.start()
    assert await unit.reconciler.reports.recent(10) == []
    assert await unit.reconciler.ledger.sync_from(SHOP) is None
    unit.clock.advance(3)
    await unit.reconciler.on_state(Connected(at=unit.clock.now, token="t"))
    assert await unit.reconciler.ledger.sync_from(SHOP) == unit.clock.now


async def test_a_new_shop_gets_its_initial_load_planned_with_its_report() -> None:
    unit = unit_reconciler(config=unit_config(initial_load_days=3))
    await unit.reconciler.start()
    [report] = await unit.reconciler.reports.recent(10)
    assert report.cause == Cause.INITIAL_LOAD.value
    state = await unit.reconciler.loader.state(SHOP)
    assert state is not None
    assert state.report_id == report.id
    assert state.until - state.since == timedelta(days=3)
    assert await unit.reconciler.ledger.sync_from(SHOP) == state.since
    assert unit.reconciler.metrics.gaps_opened.value(cause="initial_load") == 1


async def test_a_disconnect_records_what_the_stream_proved_and_opens_the_rest_as_a_gap() -> None:
    unit = unit_reconciler(shops=[SHOP, "shop-b"])
    await followed_until(unit, timedelta(0))
    await followed_until(unit, timedelta(0), shop="shop-b")
    await unit.reconciler.start()
    connected = unit.clock.now
    await unit.reconciler.on_state(Connected(at=connected, token="t"))
    unit.reconciler.watch.received(message(1, SHOP, unit))
    unit.clock.advance(10)
    unit.reconciler.watch.received(message(2, SHOP, unit))  # not committed when the connection ends
    unit.clock.advance(5)
    gone = unit.clock.now
    await unit.reconciler.on_state(Disconnected(at=gone, reason="ping timeout", uptime=15))
    # shop-a's proof stops at its oldest uncommitted message; shop-b's at the settle margin.
    ledger = unit.reconciler.ledger
    assert await ledger.covered_end(SHOP, ProvenBy.STREAM) == connected  # message 1 never settled
    assert await ledger.covered_end("shop-b", ProvenBy.STREAM) == gone - timedelta(seconds=1.5)
    disconnects = {
        r.shop: r for r in await unit.reconciler.reports.recent(10) if r.cause == Cause.DISCONNECT.value
    }
    assert (disconnects[SHOP].window_start, disconnects[SHOP].window_end) == (connected, gone)
    assert disconnects["shop-b"].window_start == gone - timedelta(seconds=1.5)
    [connection] = await unit.reconciler.reports.connections(connected)
    assert (connection.connected_at, connection.disconnected_at, connection.reason) == (
        connected,
        gone,
        "ping timeout",
    )
    # The outage lasts until the reconnect.
    unit.clock.advance(30)
    await unit.reconciler.on_state(Connected(at=unit.clock.now, token="t"))
    assert (await unit.reconciler.reports.get(disconnects[SHOP].id)).window_end == unit.clock.now


async def test_a_stopping_session_opens_no_gap() -> None:
    unit = unit_reconciler()
    await followed_until(unit, timedelta(0))
    await unit.reconciler.start()
    await unit.reconciler.on_state(Connected(at=unit.clock.now, token="t"))
    unit.clock.advance(10)
    await unit.reconciler.on_state(Disconnected(at=unit.clock.now, reason="stopped", uptime=10))
    assert [r for r in await unit.reconciler.reports.recent(10) if r.cause == Cause.DISCONNECT.value] == []


async def test_a_silent_shop_that_normally_trades_is_read_through_the_lists() -> None:
    unit = unit_reconciler(
        shops=[SHOP, "shop-b"], config=unit_config(silence=timedelta(seconds=30), silence_min_expected=5)
    )
    await followed_until(unit, timedelta(0))
    await followed_until(unit, timedelta(0), shop="shop-b")
    await unit.reconciler.start()
    watch = unit.reconciler.watch
    await unit.reconciler.on_state(Connected(at=unit.clock.now, token="t"))
    for n in range(40):  # one message a second for shop-a, none for shop-b
        watch.received(message(n, SHOP, unit))
        watch.settled(n)
        unit.clock.advance(1)
    last = unit.clock.now - timedelta(seconds=1)
    unit.clock.advance(20)
    await unit.reconciler.tick()
    assert [r for r in await unit.reconciler.reports.recent(10) if r.cause == Cause.SILENCE.value] == []
    unit.clock.advance(15)  # silent 35 s where about 35 messages were due
    await unit.reconciler.tick()
    silences = [r for r in await unit.reconciler.reports.recent(10) if r.cause == Cause.SILENCE.value]
    assert [(r.shop, r.window_start) for r in silences] == [(SHOP, last)]


async def test_a_hole_in_the_ledger_no_report_covers_is_opened_as_a_gap() -> None:
    unit = unit_reconciler(shops=[SHOP, "shop-b"])
    for shop in (SHOP, "shop-b"):
        ledger = unit.reconciler.ledger
        await ledger.register_shop(shop, T0 - 10 * HOUR)
        await ledger.prove(shop, Interval(T0 - 10 * HOUR, T0 - 6 * HOUR), ProvenBy.STREAM)
        await ledger.prove(shop, Interval(T0 - 5 * HOUR, T0 - HOUR), ProvenBy.STREAM)
    # shop-b's hole is being read by a report already.
    await unit.reconciler.reports.create(
        "shop-b", Cause.DISCONNECT, Interval(T0 - 6 * HOUR, T0 - 5 * HOUR), detected_at=T0
    )
    await unit.reconciler.detector.scan_ledger(SHOP)
    await unit.reconciler.detector.scan_ledger("shop-b")
    sweeps = [r for r in await unit.reconciler.reports.recent(10) if r.cause == Cause.SWEEP.value]
    assert [(r.shop, r.window_start, r.window_end) for r in sweeps] == [(SHOP, T0 - 6 * HOUR, T0 - 5 * HOUR)]


async def test_with_several_replicas_a_reconnect_extends_only_the_outages_still_going_on() -> None:
    unit = unit_reconciler(coordination=Alone())  # a replica of a group, alone in it
    await followed_until(unit, timedelta(0))
    await unit.reconciler.start()

    async def outage(up: float, down: float) -> tuple[int, datetime]:
        await unit.reconciler.on_state(Connected(at=unit.clock.now, token="t"))
        unit.clock.advance(up)
        await unit.reconciler.on_state(Disconnected(at=unit.clock.now, reason="lost", uptime=up))
        [report] = [r for r in await unit.reconciler.reports.open_reports(SHOP) if r.id not in seen]
        seen.add(report.id)
        return report.id, unit.clock.advance(down)

    seen: set[int] = set()
    first, first_back = await outage(10, 5)
    second, second_back = await outage(10, 5)
    await unit.reconciler.on_state(Connected(at=second_back, token="t"))
    # The first outage ended when the stream came back after it; the second lasts until now.
    assert (await unit.reconciler.reports.get(first)).window_end == first_back
    assert (await unit.reconciler.reports.get(second)).window_end == second_back
