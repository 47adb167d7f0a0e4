"""Clock skew from what Taobao sends: the Date header of TOP answers (median of samples), TMC message
times as a floor; the client stamping its requests on Taobao's clock once it knows ours is off."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from taobao.clock import ClockSkew, parse_http_date
from taobao.timefmt import parse_top_time
from tests.taobao.conftest import ClientFactory
from tests.taobao.gateway import SESSION, Reply, Request, ScriptedGateway, trade_reply

T0 = datetime(2024, 5, 1, 4, 0, 0, tzinfo=UTC)
S = timedelta(seconds=1)


def test_no_sample_no_estimate_and_no_correction() -> None:
    skew = ClockSkew()
    assert skew.estimate() is None
    assert skew.offset() == timedelta(0)
    assert skew.taobao_now(T0) == T0


def test_one_answer_reads_the_server_second_against_the_midpoint_of_the_round_trip() -> None:
    skew = ClockSkew()
    # Sent at T0, answered at T0 + 0.2 s, stamped 300 s ahead (whole seconds): ~300.4 s.
    skew.observe_answer(T0 + 300 * S, T0, T0 + timedelta(milliseconds=200))
    assert skew.estimate() == timedelta(seconds=300.4)
    assert skew.offset() == 300 * S
    assert skew.taobao_now(T0) == T0 + 300 * S


def test_the_median_ignores_an_odd_answer_and_a_slow_one() -> None:
    skew = ClockSkew()
    for n in range(5):
        at = T0 + n * S
        skew.observe_answer(at - 700 * S, at, at)  # our clock is 700 s ahead of Taobao's
    skew.observe_answer(T0 + 3600 * S, T0, T0)  # one odd header
    skew.observe_answer(T0, T0 - 30 * S, T0 + 30 * S)  # one very slow answer
    assert skew.offset() == -700 * S


def test_within_the_dead_band_nothing_is_corrected() -> None:
    skew = ClockSkew()
    skew.observe_answer(T0 + S, T0, T0)
    estimate = skew.estimate()
    assert estimate is not None
    assert estimate.total_seconds() == pytest.approx(1.5)
    assert skew.offset() == timedelta(0)


def test_tmc_message_times_are_a_floor_shown_never_a_correction() -> None:
    skew = ClockSkew()
    assert skew.floor() is None
    skew.observe_event(T0 - 5 * S, T0)  # published 5 s before we got it
    skew.observe_event(T0 + 90 * S, T0)  # Taobao is at least 90 s ahead of us, or the time is wrong
    assert skew.floor() == 90 * S
    assert skew.estimate() is None
    assert skew.offset() == timedelta(0)  # one wrong message time must not move a horizon


def test_only_a_clock_ahead_of_taobaos_moves_horizons() -> None:
    behind, ahead = ClockSkew(), ClockSkew()
    behind.observe_answer(T0 + 120 * S, T0, T0)  # Taobao 120 s ahead: our horizons are early already
    ahead.observe_answer(T0 - 120 * S, T0, T0)  # ours 120 s ahead: subtract it
    assert behind.horizon_offset() == timedelta(0)
    assert ahead.horizon_offset() == -120 * S


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Wed, 01 May 2024 04:00:00 GMT", T0),
        ("", None),
        (None, None),
        ("yesterday", None),
        ("Wed, 01 May 2024 04:00:00", None),  # no zone: unusable
    ],
)
def test_http_dates(header: str | None, expected: datetime | None) -> None:
    assert parse_http_date(header) == expected


async def test_the_client_learns_the_skew_from_the_date_header_and_stamps_requests_on_taobaos_clock(
    make_client: ClientFactory, gateway: ScriptedGateway
) -> None:
    client = make_client()
    ahead = timedelta(minutes=15)  # beyond TOP's 10-minute tolerance (code 31)

    def stamped(request: Request) -> Reply:
        date = format_datetime(datetime.now(UTC) + ahead, usegmt=True)
        return replace(trade_reply(1), headers={"Date": date})

    gateway.default = stamped
    await client.trade_fullinfo(SESSION, 1)
    assert client.clock_skew.offset() == pytest.approx(ahead, abs=timedelta(seconds=2))
    await client.trade_fullinfo(SESSION, 1)
    sent = parse_top_time(gateway.requests[-1].query["timestamp"])
    assert sent is not None
    assert abs(sent - (datetime.now(UTC) + ahead)) < timedelta(seconds=5)
