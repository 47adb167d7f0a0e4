"""List lag (reconciler/lag.py): a trade the lists leave out is only lag once a later listing shows it,
so the overlap converges on the real lag instead of ratcheting up on trades the lists leave out for
other reasons; and a window proven under an overlap later shown too short is withdrawn."""

from __future__ import annotations

from datetime import datetime, timedelta

from common.intervals import Interval
from common.metrics import Registry
from reconciler.backfill import BackfillConfig, WindowReader
from reconciler.lag import LagMeter
from reconciler.ledger import Ledger
from reconciler.plan import Window
from store.coverage import ProvenBy
from store.fetch_apply import TradeFailures, dead_letter_counter
from store.gap_reports import PassCounts
from store.memory import MemoryCoverageLedger, MemoryDatabase
from taobao.limiter import Priority
from tests.reconciler.fakes import T0, FakeTop

SHOP, SESSION = "shop-a", "session-of-shop-a"
CONFIGURED = timedelta(seconds=30)
MINUTE = timedelta(minutes=1)


class LagReading:
    def __init__(self) -> None:
        self.top = FakeTop({SHOP: SESSION})
        self.db = MemoryDatabase()
        self.lag = LagMeter(CONFIGURED)
        self.now = T0
        failures = TradeFailures(self.db.trades, dead_letter_counter(Registry()))
        self.reader = WindowReader(
            self.top,
            self.db.trades,
            BackfillConfig(lag_probes=5),
            lag=self.lag,
            now=lambda: self.now,
            failures=failures,
        )

    async def stored(self, tid: int, modified: datetime) -> None:
        trade = self.top.change(SHOP, tid, modified)
        await self.db.trades.apply_trades([trade], source="stream")

    async def read(self, window: Window) -> list[Window]:
        result = await self.reader.read(
            SHOP, SESSION, [window], priority=Priority.BACKFILL, source="backfill", counts=PassCounts()
        )
        assert result.failure is None
        return result.read


def _window(end: datetime, span: timedelta = 10 * MINUTE) -> Window:
    return Window(end - span, end, proof=True)


async def test_a_trade_the_lists_leave_out_for_good_is_no_evidence_of_lag() -> None:
    r = LagReading()
    for n in range(6):
        # Each read lies further back, as a growing overlap would push it: before, every such trade was
        # a sample at least as old as the overlap, and the overlap grew 1.5x per read.
        window = _window(r.now - CONFIGURED - n * 10 * MINUTE)
        await r.stored(100 + n, window.start + MINUTE)
        r.top.listed_as[100 + n] = T0 - timedelta(days=30)  # never in any window read
        assert await r.read(window) == [window]
        r.now += MINUTE
    assert r.lag.measured(r.now) is None
    assert r.lag.overlap(r.now) == CONFIGURED
    assert r.lag.withdrawals(SHOP) == []
    for _ in range(LagMeter.MAX_CHECKS):
        await r.read(_window(r.now - CONFIGURED, MINUTE))
    assert r.lag.suspects(SHOP, r.now) == []  # each looked at again three times, then dropped


async def test_lag_is_measured_once_a_later_listing_shows_the_trade_and_the_overlap_converges() -> None:
    r = LagReading()
    real_lag = timedelta(seconds=100)
    window = _window(r.now - CONFIGURED)
    await r.stored(7, window.end - timedelta(seconds=40))
    r.top.listed_as[7] = T0 - timedelta(days=30)  # not visible yet
    assert await r.read(window) == [window]
    assert r.lag.measured(r.now) is None  # a suspect, not yet a sample

    r.now += real_lag
    del r.top.listed_as[7]  # the list caught up
    later = _window(r.now - CONFIGURED)
    await r.read(later)
    sample = r.lag.measured(r.now)
    assert sample == 70.0  # 30 s overlap + 40 s before the window's end: below the real 100 s lag
    assert r.lag.overlap(r.now) == timedelta(seconds=105)  # 1.5 x the sample
    # Samples can only come from changes younger than the real lag, so they never pass it.
    assert sample < real_lag.total_seconds()


async def test_a_window_proven_under_a_lag_later_measured_longer_is_withdrawn() -> None:
    r = LagReading()
    window = _window(r.now - CONFIGURED)
    await r.stored(7, window.end - timedelta(seconds=40))
    r.top.listed_as[7] = T0 - timedelta(days=30)
    await r.read(window)
    ledger = Ledger(MemoryCoverageLedger(r.db))
    await ledger.prove(SHOP, window.proves, ProvenBy.BACKFILL)
    await ledger.prove(SHOP, window.proves, ProvenBy.STREAM)

    r.now += MINUTE
    del r.top.listed_as[7]
    await r.read(_window(r.now - CONFIGURED))
    assert r.lag.overlap(r.now) == timedelta(seconds=105)
    withdrawn = await r.lag.withdraw(SHOP, ledger)
    assert withdrawn == 1
    # Read at T0, with 105 s of lag the list could not see past T0 - 105 s: that part is a gap again.
    blind = Interval(T0 - timedelta(seconds=105), window.end)
    assert await ledger.intervals(SHOP, kinds=[ProvenBy.BACKFILL]) == [Interval(window.start, blind.start)]
    # The stream's proof never relied on the lists: it stands.
    assert await ledger.intervals(SHOP, kinds=[ProvenBy.STREAM]) == [window.proves]
    assert r.lag.withdrawals(SHOP) == []  # handed out once


def test_samples_expire_and_the_overlap_returns_to_the_configured_one() -> None:
    lag = LagMeter(CONFIGURED, memory=timedelta(minutes=10))
    lag.observe(60.0, T0)
    assert lag.overlap(T0) == timedelta(seconds=90)
    assert lag.overlap(T0 + timedelta(minutes=11)) == CONFIGURED
