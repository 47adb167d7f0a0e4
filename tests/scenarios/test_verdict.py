"""The scenario verdict: what counts as lost, stale, unseen, and which withheld pushes need a gap report.
These rules decide whether a fault scenario passes, so each is pinned with a case that fails it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bench.scenarios.presets import PRESETS, plan
from bench.scenarios.verdict import (
    CHECKED_FIELDS,
    Arrival,
    ReportTrade,
    TradeState,
    TruthChange,
    Withheld,
    burst_shape,
    comparable_text,
    compare_database,
    compare_fields,
    delivery,
    percentile,
    report_figures,
    withheld_needing_recovery,
)

T0 = datetime(2026, 11, 11, 0, 0, 0, tzinfo=UTC)


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_database_lost_stale_and_extra() -> None:
    truth = {1: TradeState(at(5), "PAID"), 2: TradeState(at(5), "PAID"), 3: TradeState(at(5), "PAID"),
             4: TradeState(at(5), "PAID")}  # fmt: skip
    stored = {
        2: TradeState(at(4), "WAIT"),  # older modified
        3: TradeState(at(5), "WAIT"),  # same second, other status
        4: TradeState(at(5), "PAID"),
        9: TradeState(at(1), "PAID"),  # unknown to the market
    }
    verdict = compare_database(truth, [1, 2, 3, 4], stored)
    assert verdict == {"lost": [1], "stale": [2, 3], "extra": [9]}


def test_a_newer_row_than_truth_is_not_stale() -> None:
    verdict = compare_database({1: TradeState(at(5), "A")}, [1], {1: TradeState(at(6), "B")})
    assert verdict == {"lost": [], "stale": [], "extra": []}


def change(seq: int, tid: int, second: int, status: str) -> TruthChange:
    return TruthChange(seq, tid, at(second), status)


def arrival(
    position: int, tid: int, second: int, status: str, when: float, source: str = "stream"
) -> Arrival:
    return Arrival(position, tid, at(second), status, source, when)


def test_coalesced_changes_are_delivered_by_a_newer_row_and_lag_counts_from_each_publish() -> None:
    changes = [change(1, 7, 0, "A"), change(2, 7, 1, "B"), change(3, 7, 2, "C")]
    published = {1: 100.0, 2: 100.5, 3: 101.0}
    arrivals = [arrival(1, 7, 2, "C", 101.2)]
    truth = {7: TradeState(at(2), "C")}
    result = delivery(changes, published, arrivals, truth)
    assert result.unseen == []
    assert result.consumer_stale == []
    assert [round(x, 3) for x in result.lags] == [1.2, 0.7, 0.2]
    assert result.delivered_by == {1: "stream", 2: "stream", 3: "stream"}


def test_same_second_row_must_show_the_status_at_the_end_of_that_second() -> None:
    # Two changes in one second; the consumer only saw the first version of that second.
    changes = [change(1, 7, 0, "A"), change(2, 7, 0, "B")]
    arrivals = [arrival(1, 7, 0, "A", 1.0)]
    result = delivery(changes, {1: 0.5, 2: 0.6}, arrivals, {7: TradeState(at(0), "B")})
    assert result.unseen == [1, 2]
    assert result.consumer_stale == [7]


def test_a_change_never_received_is_unseen_and_duplicate_reads_count_once() -> None:
    changes = [change(1, 7, 0, "A"), change(2, 8, 0, "A")]
    arrivals = [arrival(1, 7, 0, "A", 2.0), arrival(1, 7, 0, "A", 3.0)]
    truth = {7: TradeState(at(0), "A"), 8: TradeState(at(0), "A")}
    result = delivery(changes, {1: 1.0, 2: 1.0}, arrivals, truth)
    assert result.unseen == [2]
    assert result.lags == [1.0]
    assert result.consumer_stale == [8]


FIRST = 2**53 + 1


def test_withheld_push_needs_recovery_only_when_nothing_later_covered_it() -> None:
    changes = [
        change(1, 7, 0, "A"),  # withheld, then tid 7 is pushed again: covered
        change(2, 7, 1, "B"),
        change(3, 8, 1, "A"),  # withheld, last change of tid 8: needs recovery
        change(4, 9, 1, "A"),  # withheld, but a stream fetch already returned this state
        change(5, 10, 2, "A"),  # withheld, delivered by a backfill row: needs recovery
    ]
    lost = ((1, 7), (3, 8), (4, 9), (5, 10))
    withheld = [Withheld(FIRST + seq - 1, tid, "lose_fraction") for seq, tid in lost]
    delivered_by = {1: "stream", 2: "stream", 4: "stream", 5: "sweep"}
    needing, unmatched = withheld_needing_recovery(withheld, changes, FIRST, delivered_by)
    assert needing == {8, 10}
    assert unmatched == 0


def test_withheld_ids_that_do_not_map_to_the_change_log_are_counted() -> None:
    changes = [change(1, 7, 0, "A")]
    needing, unmatched = withheld_needing_recovery(
        [Withheld(FIRST, 99, "lose_fraction"), Withheld(FIRST + 5, 7, "lose_fraction")], changes, FIRST, {}
    )
    assert needing == set()
    assert unmatched == 2


def test_reports_match_only_when_every_trade_that_needed_recovery_is_in_one() -> None:
    reports = [
        {"cause": "sweep", "outcome": "recovered", "list_calls": 2, "fullinfo_calls": 8, "push_loss": 1,
         "trades_found": 8, "started_at": at(0), "finished_at": at(3)},
    ]  # fmt: skip
    trades = [ReportTrade(1, 8, True), ReportTrade(1, 11, False)]
    good = report_figures(reports, trades, {8}, api_rate=10)
    assert good["reports_match_withheld"] is True
    assert good["withheld_flagged_push_loss"] == 1
    assert good["recovery_seconds"] == 3.0
    assert good["quota_bound_seconds"] == 1.0
    assert report_figures(reports, trades, {8, 10}, api_rate=10)["reports_match_withheld"] is False


def test_withheld_messages_name_their_change_or_none() -> None:
    changes = [change(1, 7, 0, "A"), change(2, 8, 0, "A")]
    # Ids no longer follow seqs once other messages (refund topics) share the queue.
    withheld = [
        Withheld(FIRST + 1, 7, "lose_fraction", seq=None, is_change=False),  # a refund topic of tid 7
        Withheld(FIRST + 2, 8, "lose_fraction", seq=2),
    ]
    needing, unmatched = withheld_needing_recovery(withheld, changes, FIRST, {})
    assert needing == {8}
    assert unmatched == 0
    # Named with a seq that is not the change of its tid: unmatched, as an id would be.
    _, unmatched = withheld_needing_recovery([Withheld(FIRST, 8, "lose_fraction", seq=1)], changes, FIRST, {})
    assert unmatched == 1


TYPED = "请尽快发货\x00谢谢\ud800"


def test_text_a_buyer_typed_matches_when_stored_replaced_or_escaped() -> None:
    assert comparable_text(TYPED) == "请尽快发货\ufffd谢谢\ufffd"
    replaced = "请尽快发货\ufffd谢谢\ufffd"
    escaped = "请尽快发货\\u0000谢谢\\ud800"  # the JSON escapes as six plain characters each
    dropped = "请尽快发货谢谢"
    assert comparable_text(replaced) == comparable_text(TYPED)
    assert comparable_text(escaped) == comparable_text(TYPED)
    assert comparable_text(dropped) != comparable_text(TYPED)
    assert comparable_text("\U0001f600 ok") == "\U0001f600 ok"  # a real astral character stays


def test_fields_compare_text_by_the_rule_money_by_amount_and_the_rest_exactly() -> None:
    truth = {
        1: {"buyer_message": TYPED, "post_fee": "5.00", "end_time": "2026-11-11 10:00:00"},
        2: {"buyer_message": TYPED},
        3: {"total_fee": "12.30"},
        4: {"end_time": "2026-11-11 10:00:00"},
        5: {"buyer_memo": "hi"},
    }
    stored = {
        1: {"buyer_message": comparable_text(TYPED), "post_fee": "5", "end_time": "2026-11-11 10:00:00"},
        2: {"buyer_message": "请尽快发货谢谢"},  # the typed characters dropped
        3: {"total_fee": "N/A"},  # a broken answer stored as it came
        4: {"end_time": "0001-01-01 00:00:00"},
        5: {},  # the memo not stored at all
    }
    assert compare_fields(truth, stored, [1, 2, 3, 4, 5]) == [2, 3, 4, 5]
    assert compare_fields(truth, stored, [1]) == []
    assert {"buyer_message", "buyer_memo"} <= set(CHECKED_FIELDS)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([3.0], 0.99) == 3.0
    assert percentile([], 0.5) is None


def test_burst_shape_counts_follow_ups_within_the_window() -> None:
    changes = [change(1, 7, 0, "A"), change(2, 7, 1, "B"), change(3, 8, 1, "A"), change(4, 7, 9, "C")]
    assert burst_shape(changes, {1: 0.0, 2: 1.5, 3: 1.6, 4: 9.0}) == 0.25


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_fits_its_small_size(preset: str) -> None:
    scenario = plan(preset, "small")
    assert all(0 <= action.at < scenario.duration for action in scenario.actions)
    assert scenario.rate > 0


def test_lossy_schedules_each_fault_once_after_the_outage_ends() -> None:
    scenario = plan("lossy", "small")
    kinds = [a.kind for a in scenario.actions]
    assert kinds.count("kill_daemon") == 1
    assert kinds.count("pg_kill") == 1
    outage = next(a for a in scenario.actions if a.kind == "tmc")
    assert outage.body == {"refuse_for": 20.0, "drop_now": True}
    kill = next(a for a in scenario.actions if a.kind == "kill_daemon")
    assert kill.at >= outage.at + 20
    assert "--tmc-lose" in scenario.standin_args


def test_lossy_refuses_a_duration_too_short_for_its_outage() -> None:
    with pytest.raises(ValueError, match="at least"):
        plan("lossy", "small", duration=30)


def test_hostile_is_lossy_plus_each_hostile_fault_once() -> None:
    lossy, hostile = plan("lossy", "small"), plan("hostile", "small")
    assert hostile.standin_args[: len(lossy.standin_args)] == lossy.standin_args
    flags = hostile.standin_args
    for flag in ("--detail-lag", "--odd-values-rate", "--odd-text-rate", "--malformed-page-rate",
                 "--tmc-unknown-headers", "--tmc-refund-topics", "--tmc-oversize-bytes"):  # fmt: skip
        assert flag in flags
    assert flags[flags.index("--detail-lag") + 1] == "3"
    assert int(flags[flags.index("--tmc-oversize-bytes") + 1]) > 8 * 1024 * 1024
    tmc = [a.body for a in hostile.actions if a.kind == "tmc"]
    assert {"close_next": 1} in tmc
    assert {"oversize_next": 1} in tmc
    (window,) = [a for a in hostile.actions if a.kind == "faults" and "error_window" in a.body]
    assert window.body == {"error_window": "permission", "error_window_seconds": 10}
    outage = next(a for a in hostile.actions if a.body.get("drop_now"))
    assert window.at >= outage.at + hostile.outage_seconds
    assert window.at + 10 < hostile.duration
    assert [a.kind for a in hostile.actions].count("kill_daemon") == 1
    # The broken answers stop for the settle phase; lossy's settle is unchanged.
    assert hostile.settle_faults["odd_values_rate"] == 0
    assert hostile.settle_faults["error_window"] == ""
    assert hostile.settle_tmc["unknown_header_fraction"] == 0
    assert lossy.settle_faults == {"rate_limit_per_second": 0}
    assert lossy.settle_tmc == {}


def test_hostile_refuses_a_duration_too_short_for_its_faults() -> None:
    with pytest.raises(ValueError, match="at least 65"):
        plan("hostile", "small", duration=60)
