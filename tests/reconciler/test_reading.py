"""Reading windows (reconciler/backfill.py, listing.py, fetching.py) against the fake TOP and the in-memory
store: the list calls, what each error means for the window, and what each fetch ending does to the
trade, the report's counts and the one dead-letter series."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from common.intervals import Interval
from common.metrics import Registry
from reconciler.backfill import BackfillConfig, ReadResult, WindowReader
from reconciler.plan import Window
from store.fetch_apply import TradeFailures, dead_letter_counter
from store.gap_reports import PassCounts
from store.memory import MemoryDatabase
from taobao.errors import (
    MalformedResponse,
    PermanentTopError,
    RetryableTopError,
    ServiceRejection,
    SessionExpired,
    TradeNotFound,
)
from taobao.limiter import Priority
from tests.reconciler.fakes import T0, FakeTop, session_expired

SHOP, SESSION = "shop-a", "session-of-shop-a"
WINDOW = Window(T0 - timedelta(hours=2), T0 - timedelta(hours=1), proof=True)


class Reading:
    def __init__(self, **config: object) -> None:
        self.top = FakeTop({SHOP: SESSION, "shop-b": "session-of-shop-b"})
        self.db = MemoryDatabase()
        self.registry = Registry()
        self.sleeps: list[float] = []

        async def sleep(seconds: float) -> None:
            self.sleeps.append(seconds)

        failures = TradeFailures(self.db.trades, dead_letter_counter(self.registry))
        settings = BackfillConfig(**{"concurrency": 3, "apply_batch": 7, "lag_probes": 0, **config})  # type: ignore[arg-type]
        self.reader = WindowReader(
            self.top, self.db.trades, settings, now=lambda: T0, sleep=sleep, failures=failures
        )
        self.counts = PassCounts()

    def trades_in_window(self, n: int, *, first_tid: int = 1000) -> list[int]:
        step = (WINDOW.end - WINDOW.start) / (n + 1)
        return [
            self.top.change(SHOP, first_tid + i, _whole(WINDOW.start + step * (i + 1))).tid for i in range(n)
        ]

    async def read(self, *windows: Window, stream_cover: tuple[Interval, ...] = ()) -> ReadResult:
        return await self.reader.read(
            SHOP,
            SESSION,
            windows or [WINDOW],
            priority=Priority.BACKFILL,
            source="backfill",
            counts=self.counts,
            stream_cover=stream_cover,
        )

    def dead_letters(self, reason: str) -> float:
        return dead_letter_counter(self.registry).value(reason=reason)


def _whole(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


async def test_a_window_is_counted_then_walked_from_the_last_page_and_every_trade_stored() -> None:
    r = Reading(page_size=10)
    tids = r.trades_in_window(25)
    r.top.change("shop-b", 1, WINDOW.start + timedelta(minutes=5))  # another shop's trade
    result = await r.read()
    assert result.failure is None
    assert result.read == [WINDOW]
    lists = r.top.calls_of("increment")
    assert [(c["page_no"], c["use_has_next"]) for c in lists] == [(1, False), (3, True), (2, True), (1, True)]
    assert sorted(r.db.trades.rows) == sorted(tids)
    assert (r.counts.found, r.counts.new, r.counts.windows_read, r.counts.list_calls) == (25, 25, 1, 4)
    assert r.counts.fullinfo_calls == 25
    assert [t.kind for t in r.counts.recovered] == ["new"] * 25


async def test_a_trade_is_not_fetched_again_for_a_window_older_than_the_state_already_fetched() -> None:
    r = Reading()
    [tid] = r.trades_in_window(1)
    shown = r.top.trades[tid].modified
    assert shown is not None
    r.top.change(SHOP, tid, WINDOW.end + timedelta(minutes=10))  # changed again: a later window has it
    r.top.listed_as[tid] = shown  # while the lists still show it in WINDOW (list lag)
    later = Window(WINDOW.end, WINDOW.end + timedelta(minutes=30), proof=True)
    del r.top.listed_as[tid]
    await r.read(later)
    r.top.listed_as[tid] = shown
    await r.read(WINDOW)
    assert len(r.top.calls_of("fullinfo")) == 1  # the state fetched is newer than WINDOW: no refetch
    assert r.counts.found == 1  # and the trade is counted once per pass
    del r.top.listed_as[tid]
    await r.read(later)  # the same window again: its trade may have changed since, so it is fetched
    assert len(r.top.calls_of("fullinfo")) == 2


async def test_a_service_rejection_narrows_the_window_and_waits_before_reading_its_halves() -> None:
    r = Reading()
    r.trades_in_window(4)
    r.top.list_errors.append(ServiceRejection("slow query", sub_code="isv.trade-service-rejection"))
    result = await r.read()
    assert r.sleeps == [180.0]
    assert result.failure is None
    assert result.read == list(WINDOW.halves(timedelta(seconds=60)) or ())
    assert r.counts.rejections == 1
    assert len(r.db.trades.rows) == 4


async def test_a_window_too_narrow_to_split_fails_and_is_retried_later() -> None:
    r = Reading(min_window=timedelta(hours=2))
    r.top.list_errors.append(ServiceRejection("slow query", sub_code="isv.trade-service-rejection"))
    result = await r.read()
    assert result.read == []
    assert result.failure is not None
    assert result.failure.retryable
    assert r.counts.windows_failed == 1


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (PermanentTopError("invalid type", code=41, sub_code="isv.invalid-parameter:type"), False),
        (RetryableTopError("HTTP 502"), True),
    ],
)
async def test_a_list_call_that_fails_leaves_the_window_unread(error: Exception, retryable: bool) -> None:
    r = Reading()
    r.trades_in_window(3)
    r.top.list_errors.append(error)  # type: ignore[arg-type]
    result = await r.read()
    assert result.read == []
    assert result.failure is not None
    assert result.failure.retryable is retryable
    assert r.db.trades.rows == {}
    assert len(r.top.calls_of("increment")) == 1  # never retried here (the client retries)


async def test_a_trade_that_does_not_exist_is_recorded_as_a_trade_failure_and_the_window_read() -> None:
    r = Reading()
    kept, missing = r.trades_in_window(2)
    r.top.fullinfo_errors[missing] = TradeNotFound("no trade", sub_code="isv.trade-not-exist", tid=missing)
    result = await r.read()
    assert result.read == [WINDOW]
    [letter] = r.db.trades.dead_letters
    assert (letter.shop, letter.tid, letter.source) == (SHOP, missing, "backfill")
    assert "isv.trade-not-exist" in letter.reason
    assert (r.counts.not_found, r.counts.dead_letters) == (1, 1)
    assert r.dead_letters("TradeNotFound") == 1
    assert list(r.db.trades.rows) == [kept]


async def test_a_malformed_response_keeps_what_came_for_the_dead_letter() -> None:
    r = Reading()
    [tid] = r.trades_in_window(1)
    r.top.fullinfo_errors[tid] = MalformedResponse("no trade object", payload='{"trade": null}', tid=tid)
    await r.read()
    [letter] = r.db.trades.dead_letters
    assert letter.payload == b'{"trade": null}'
    assert r.dead_letters("MalformedResponse") == 1


async def test_a_trade_the_store_refuses_is_owed_and_counted_in_the_same_series() -> None:
    r = Reading()
    [good] = r.trades_in_window(1)
    bad = r.top.change(SHOP, 77, WINDOW.start + timedelta(minutes=1)).tid
    r.db.trades.refuse = lambda trade: "a CHECK on trades" if trade.tid == bad else None
    result = await r.read()
    assert result.read == [WINDOW]  # read; the unresolved trade keeps it from being proven
    assert list(r.db.trades.rows) == [good]
    [letter] = r.db.trades.dead_letters
    assert letter.tid == bad
    [(shop, tid)] = r.db.trades.unresolved
    assert (shop, tid, r.db.trades.unresolved[(shop, tid)].belongs) == (SHOP, bad, WINDOW.proves)
    assert r.counts.dead_letters == 1
    assert r.dead_letters("refused_by_database") == 1


async def test_a_nul_a_buyer_typed_is_stored_as_u_fffd_and_its_original_kept() -> None:
    r = Reading()
    typed = r.top.change(SHOP, 78, WINDOW.start + timedelta(minutes=1), note="a NUL \x00 in a memo").tid
    await r.read()
    assert typed in r.db.trades.rows
    assert r.db.trades.unresolved == {}
    [letter] = r.db.trades.dead_letters
    assert b"\\u0000" in letter.payload
    assert r.dead_letters("text_replaced") == 1


async def test_a_fetch_that_may_pass_later_fails_the_window_for_now() -> None:
    r = Reading(concurrency=1)
    _, second, _ = r.trades_in_window(3)
    r.top.fullinfo_errors[second] = RetryableTopError("HTTP 502")
    result = await r.read()
    assert result.read == []
    assert result.failure is not None
    assert result.failure.retryable
    assert str(second) in result.failure.reason
    assert r.db.trades.dead_letters == []  # not the trade's fault
    assert r.counts.windows_failed == 1


async def test_a_rejected_session_stops_everything_for_the_shop() -> None:
    r = Reading()
    r.trades_in_window(2)
    r.top.session_errors[SESSION] = session_expired()
    with pytest.raises(SessionExpired):
        await r.read()
    r.top.session_errors.clear()
    [tid, _] = sorted(r.top.trades)
    r.top.fullinfo_errors[tid] = session_expired()
    with pytest.raises(SessionExpired):
        await r.read()


async def test_a_change_inside_a_stretch_the_stream_claimed_is_push_loss() -> None:
    r = Reading()
    early, late = r.trades_in_window(2)
    claimed = Interval(WINDOW.start, r.top.trades[late].modified)  # type: ignore[arg-type]
    await r.read(stream_cover=(claimed,))
    assert r.counts.push_loss == 1
    assert {t.tid: t.push_loss for t in r.counts.recovered} == {early: True, late: False}
