"""What the stream proves (pure bookkeeping), the list-lag meter, and silence detection end to end."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from common.intervals import Interval
from reconciler.lag import LagMeter
from reconciler.stream_watch import StreamWatch
from simulator.standin import StandIn, StandInConfig
from store.gap_reports import Cause
from store.pg import PgStore
from taobao.tmc.events import TmcMessage
from tests.reconciler.conftest import make_reconciler, small_config, top_client

T0 = datetime(2026, 11, 11, 12, 0, tzinfo=UTC)
SETTLE = timedelta(seconds=5)


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def message(message_id: int, nick: str | None, at: datetime) -> TmcMessage:
    return TmcMessage(id=message_id, topic="taobao_trade_TradeBuyerPay", content="{}", time=at, nick=nick)


def test_while_top_calls_are_paused_the_stream_proves_nothing_past_the_pause() -> None:
    clock = Clock(T0)
    paused: list[datetime | None] = [None]
    seen: list[tuple[datetime, datetime]] = []
    watch = StreamWatch(
        ["a"],
        settle=SETTLE,
        now=clock,
        paused_since=lambda: paused[0],
        observe_time=lambda published, received: seen.append((published, received)),
    )
    watch.connected_at(T0)
    clock.advance(60)
    paused[0] = T0 + timedelta(seconds=40)
    clock.advance(600)  # quiet for ten minutes: no message holds the proof back, the pause does
    assert watch.provable(clock.now) == {"a": Interval(T0, T0 + timedelta(seconds=40) - SETTLE)}
    paused[0] = None
    assert watch.provable(clock.now) == {"a": Interval(T0, clock.now - SETTLE)}
    watch.received(message(1, "a", T0 + timedelta(seconds=650)))
    assert seen == [(T0 + timedelta(seconds=650), clock.now)]  # every message time feeds the skew


def test_the_stream_proves_from_the_connect_up_to_the_oldest_uncommitted_message() -> None:
    clock = Clock(T0)
    watch = StreamWatch(["a", "b"], settle=SETTLE, now=clock)
    assert watch.provable(clock.now) == {}  # not connected: nothing
    watch.connected_at(T0)
    clock.advance(60)
    assert watch.provable(clock.now) == {s: Interval(T0, clock.now - SETTLE) for s in ("a", "b")}

    held = T0 + timedelta(seconds=30)
    watch.received(message(1, "a", held))
    watch.received(message(2, None, T0 + timedelta(seconds=40)))  # names no shop: holds back every shop
    clock.advance(30)
    assert watch.provable(clock.now) == {
        "a": Interval(T0, held),
        "b": Interval(T0, held + timedelta(seconds=10)),
    }
    watch.settled(2)
    assert watch.provable(clock.now)["b"] == Interval(T0, clock.now - SETTLE)
    assert watch.provable(clock.now)["a"] == Interval(T0, held)  # failed/unconfirmed: still open
    watch.recorded("a", held)
    assert "a" not in watch.provable(clock.now)  # nothing new for a since it was recorded
    watch.settled(1)
    assert watch.provable(clock.now)["a"] == Interval(T0, clock.now - SETTLE)

    # A disconnect closes the segment at its own settle bound; what was pending is forgotten.
    watch.received(message(3, "a", clock.now - timedelta(seconds=20)))
    gone = clock.now + timedelta(seconds=1)
    closed = watch.disconnected_at(gone)
    assert closed["a"] == Interval(T0, clock.now - timedelta(seconds=20))
    assert closed["b"] == Interval(T0, gone - SETTLE)
    assert not watch.connected
    assert watch.provable(gone + timedelta(minutes=5)) == {}


def test_expected_messages_follow_the_recent_rate() -> None:
    clock = Clock(T0)
    watch = StreamWatch(["a", "b"], settle=SETTLE, now=clock)
    watch.connected_at(T0)
    for n in range(61):
        watch.received(message(n, "a", clock.now))
        clock.advance(1)
    assert watch.expected_messages("a", timedelta(seconds=30), clock.now) == pytest.approx(30.5, rel=0.05)
    assert watch.expected_messages("b", timedelta(seconds=30), clock.now) == 0.0
    assert watch.silent_for("a", clock.now) == timedelta(seconds=1)


def test_lag_meter_widens_and_forgets() -> None:
    meter = LagMeter(timedelta(seconds=600), memory=timedelta(hours=1), factor=1.5)
    assert meter.overlap(T0) == timedelta(seconds=600)
    meter.observe(300, T0)
    assert meter.overlap(T0) == timedelta(seconds=600)  # 450 s is still inside the configured overlap
    meter.observe(1000, T0 + timedelta(minutes=1))
    assert meter.measured(T0 + timedelta(minutes=2)) == 1000
    assert meter.overlap(T0 + timedelta(minutes=2)) == timedelta(seconds=1500)
    assert meter.overlap(T0 + timedelta(hours=2)) == timedelta(seconds=600)  # an hour later: forgotten


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    stand_in = StandIn(StandInConfig(seed=19, shops=2, market_rate=0, history_trades=100))
    async with stand_in:
        yield stand_in


async def test_a_silent_shop_that_normally_trades_is_read_through_the_lists(
    standin: StandIn, pg: PgStore
) -> None:
    busy = standin.shops[0].nick
    clock = Clock(datetime.now(UTC) - timedelta(minutes=3))
    config = small_config(silence=timedelta(seconds=30), silence_min_expected=5)
    async with top_client(standin) as client:
        reconciler = make_reconciler(standin, pg, client, config, now=clock)
        await reconciler.start()
        reconciler.watch.connected_at(clock.now)
        for n in range(40):  # one message a second for the busy shop, none for the quiet one
            reconciler.watch.received(message(n, busy, clock.now))
            reconciler.watch.settled(n)
            clock.advance(1)
        last = clock.now - timedelta(seconds=1)
        clock.advance(20)
        await reconciler.tick()
        assert [r for r in await reconciler.reports.recent(10) if r.cause == Cause.SILENCE.value] == []
        clock.advance(15)  # silent 35 s, where about 35 messages were due
        standin.market.step(5)
        await reconciler.tick()
        silences = [r for r in await reconciler.reports.recent(10) if r.cause == Cause.SILENCE.value]
    assert [r.shop for r in silences] == [busy]  # the quiet shop never trades: its silence means nothing
    (report,) = silences
    assert report.window_start == last
    assert report.list_calls > 0  # read at once
