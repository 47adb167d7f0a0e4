"""`order-sync report`: the table, the JSON and the HTML page over a database with a day's worth of
typical reports, and the view's verdicts, axis and escaping on their own (a browser opens the page the
daemon serves in tests/ops/test_report_pages.py)."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.intervals import Interval
from daemon import report_cmd
from reconciler.report_page import FONT_STACK, ORANGE, RED, SLATE, colour, page, ticks
from reconciler.report_view import ReportData, Status, Verdict
from store.coverage import Coverage, ProvenBy
from store.gap_reports import Cause, GapReport, Outcome, PassCounts, RecoveredTrade, StreamConnection
from store.pg import PgStore
from store.pg_coverage import PgCoverageLedger
from store.pg_reports import PgGapReports
from store.unresolved import TradeDebt
from taobao.timefmt import GMT8

SHOP_A, SHOP_B = "南山优品旗舰店", "江南布衣小铺"


async def fill(pg: PgStore) -> datetime:
    """A morning in the life of two shops: history loaded, an outage recovered, pushes lost and found by
    the sweep, an outage still being retried and a manual backfill that failed for good."""
    now = datetime.now(UTC).replace(microsecond=0)
    t1, t2, t3 = now - timedelta(minutes=50), now - timedelta(minutes=30), now - timedelta(minutes=26)
    ledger, reports = PgCoverageLedger(pg.pool), PgGapReports(pg.pool, replica="erp-sync-1")
    since = now - timedelta(days=90)
    for shop in (SHOP_A, SHOP_B):
        await ledger.register_shop(shop, since)
        await ledger.prove(shop, Interval(since, t1 - timedelta(hours=2)), ProvenBy.INITIAL_LOAD)
        await ledger.prove(shop, Interval(t1 - timedelta(hours=2), t1), ProvenBy.BACKFILL)
        await ledger.prove(shop, Interval(t1, t2), ProvenBy.STREAM)
        await ledger.prove(shop, Interval(t3, now - timedelta(seconds=5)), ProvenBy.STREAM)
        await ledger.prove(shop, Interval(t1, t2 - timedelta(minutes=5)), ProvenBy.SWEEP)
    await ledger.prove(SHOP_A, Interval(t2 - timedelta(minutes=10), t3), ProvenBy.BACKFILL)

    async def report(
        shop: str,
        cause: Cause,
        window: Interval,
        outcome: Outcome | None,
        reason: str | None = None,
        *,
        took: float = 3.0,
        **counts: int,
    ) -> int:
        created = await reports.create(shop, cause, window, detected_at=window.end)
        pc = PassCounts(**counts)  # type: ignore[arg-type]
        pc.recovered = [
            RecoveredTrade(2800000000000000000 + i, window.start, "changed", False) for i in range(3)
        ]
        await reports.add_pass(
            created.id, pc, started_at=window.end, progress_until=None, fresh_until=None, overlap_seconds=600
        )
        if outcome is not None:
            await reports.finish(created.id, outcome, reason, window.end + timedelta(seconds=took))
        return created.id

    await report(
        SHOP_A, Cause.INITIAL_LOAD, Interval(since, t1), Outcome.RECOVERED, took=1800,
        list_calls=96, found=48210, new=48210,
    )  # fmt: skip
    await report(
        SHOP_A, Cause.DISCONNECT, Interval(t2, t3), Outcome.RECOVERED, took=12.4,
        list_calls=4, fullinfo_calls=231, found=231, new=12, changed=57, unchanged=162, push_loss=2,
    )  # fmt: skip
    await report(
        SHOP_A, Cause.SWEEP, Interval(t1, t2 - timedelta(minutes=5)), Outcome.RECOVERED,
        list_calls=2, fullinfo_calls=140, found=140, changed=3, unchanged=137, push_loss=3,
    )  # fmt: skip
    await report(
        SHOP_B, Cause.DISCONNECT, Interval(t2, t3), Outcome.PARTIAL,
        "list call: taobao.trades.sold.increment.get: Remote Service Error code=15 "
        "sub_code=isp.top-remote-connection-timeout",
        list_calls=3, fullinfo_calls=40, found=40, changed=9, unchanged=31,
    )  # fmt: skip
    await report(
        SHOP_B, Cause.MANUAL, Interval(t1 - timedelta(hours=3), t1 - timedelta(hours=2)), Outcome.FAILED,
        "list call: Invalid Arguments code=41 sub_code=isv.invalid-parameter:type", list_calls=1,
    )  # fmt: skip
    connection = await reports.connection_opened(t1)
    await reports.connection_closed(connection, t2, "connection lost")
    await reports.connection_opened(t3)
    return now


def args(dsn: str, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    report_cmd.configure(parser)
    return parser.parse_args(["--database-url", dsn, *extra])


async def run(dsn: str, *extra: str) -> int:
    return await asyncio.to_thread(report_cmd.run, args(dsn, *extra))


async def test_table_json_and_html(
    pg: PgStore, dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await fill(pg)

    assert await run(dsn) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["id", "shop", "cause", "window"]
    assert len([line for line in lines if line[:5].strip().isdigit()]) == 5
    assert "initial_load" in out
    assert "failed" in out
    assert "partial" in out
    assert (
        "↳ failed for good: list call: Invalid Arguments code=41 sub_code=isv.invalid-parameter:type" in out
    )
    assert out.count("DATA MAY BE MISSING") == 2  # the failed backfill and the partial outage

    assert await run(dsn, "--json", "--shop", SHOP_B) == 0
    document = json.loads(capsys.readouterr().out)
    assert {r["shop"] for r in document["reports"]} == {SHOP_B}
    assert [r["outcome"] for r in document["reports"]] == ["failed", "partial"]
    assert [r["status"] for r in document["reports"]] == ["may_be_missing", "may_be_missing"]
    assert [r["needs_action"] for r in document["reports"]] == [True, False]
    assert len(document["stream_connections"]) == 2

    page = tmp_path / "gaps.html"
    assert await run(dsn, "--html", str(page), "--last", "50") == 0
    html = page.read_text(encoding="utf-8")
    assert html.startswith("<!doctype html>")
    assert html.count("<section>") == 2
    assert html.count("<svg") == 2
    assert "<script" not in html
    assert "http://" not in html
    assert "https://" not in html
    assert SHOP_A in html
    assert "isv.invalid-parameter:type" in html


async def read_ahead(reports: PgGapReports, shop: str, counts: PassCounts) -> tuple[GapReport, Interval]:
    """An outage of the last 40 s read to its end by a fresh pass, as the gate reads it before the
    stream resumes: open until the horizon (overlap 600 s) passes its end."""
    now = datetime.now(UTC).replace(microsecond=0)
    window = Interval(now - timedelta(seconds=40), now - timedelta(seconds=5))
    created = await reports.create(shop, Cause.DISCONNECT, window, detected_at=now)
    assert (await reports.get(created.id)).provable_at is None  # not worked on yet: nothing to say
    await reports.add_pass(
        created.id, counts, started_at=now, progress_until=None, fresh_until=window.end, overlap_seconds=600
    )
    return created, window


async def test_a_report_waiting_for_the_lag_horizon_shows_when_it_will_be_provable(
    pg: PgStore, dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    reports = PgGapReports(pg.pool, replica="erp-sync-1")
    created, window = await read_ahead(
        reports, SHOP_A, PassCounts(list_calls=1, fullinfo_calls=7, found=7, new=7)
    )
    provable = window.end + timedelta(seconds=600)

    assert await run(dsn) == 0
    out = capsys.readouterr().out
    assert "data in · proof pending" in out
    [why] = [line for line in out.splitlines() if "↳" in line]
    assert why.startswith("      ↳ all found trades are in · provable at ")
    assert provable.astimezone(GMT8).strftime("%H:%M:%S") in why

    assert await run(dsn, "--json") == 0
    [shown] = json.loads(capsys.readouterr().out)["reports"]
    assert shown["outcome"] is None
    assert shown["provable_at"] == provable.isoformat()
    assert shown["status"] == "proof_pending"

    await reports.finish(created.id, Outcome.RECOVERED, None, provable)
    assert (await reports.get(created.id)).provable_at is None


async def test_an_unresolved_trade_in_its_window_means_data_may_be_missing(
    pg: PgStore, dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    counts = PassCounts(list_calls=1, fullinfo_calls=3, found=3, new=2, dead_letters=1)
    _, window = await read_ahead(PgGapReports(pg.pool, replica="erp-sync-1"), SHOP_B, counts)
    debt = TradeDebt(
        SHOP_B, 2800000000000000042, "backfill", "TradeNotFound", "isv.trade-not-exist",
        belongs=Interval(window.start + timedelta(seconds=10), window.start + timedelta(seconds=11)),
    )  # fmt: skip
    await pg.record_unresolved(debt, at=window.end, delay=lambda attempts: 10.0, history=True)

    assert await run(dsn, "--json") == 0
    document = json.loads(capsys.readouterr().out)
    [shown] = document["reports"]
    assert (shown["status"], shown["needs_action"]) == ("may_be_missing", False)
    assert shown["why"] == "1 unresolved trade(s) in its window, retried (order-sync dead-letters)"
    assert document["unresolved_trades"] == {SHOP_B: 1}


# ---- the view on its own ----------------------------------------------------------------------------------

NOW = datetime(2026, 11, 11, 13, 0, 0, tzinfo=UTC)  # 21:00 GMT+8
WINDOW = Interval(NOW - timedelta(minutes=3), NOW - timedelta(minutes=2))


def gap(**changes: Any) -> GapReport:
    """An outage report read ahead (fresh) to its end and waiting for the horizon, unless `changes` say
    otherwise."""
    values: dict[str, Any] = {
        "id": 7, "shop": SHOP_A, "cause": Cause.DISCONNECT.value, "window_start": WINDOW.start,
        "window_end": WINDOW.end, "detected_at": WINDOW.end, "started_at": WINDOW.end,
        "finished_at": None, "list_calls": 2, "fullinfo_calls": 12, "trades_found": 12, "trades_new": 4,
        "trades_changed": 2, "trades_unchanged": 6, "dead_letters": 0, "push_loss": 0, "outcome": None,
        "reason": None, "replica": "erp-sync-1", "progress_until": None, "fresh_until": WINDOW.end,
        "windows_read": 2, "windows_failed": 0, "rejections": 0, "not_found": 0, "overlap_seconds": 600.0,
        "list_lag_seconds": None, "updated_at": WINDOW.end, "detected_by": "erp-sync-1",
        "replicas": ("erp-sync-1",),
    }  # fmt: skip
    return GapReport(**(values | changes))


def seen(
    report: GapReport, *, covered: list[Interval] | None = None, owed: list[Interval] | None = None
) -> Verdict:
    coverage = {report.shop: [Coverage(i, ProvenBy.STREAM) for i in covered or []]}
    data = ReportData(NOW, [report], coverage=coverage, owed={report.shop: owed or []})
    return data.verdict(report)


def test_a_report_whose_trades_are_in_waits_for_proof_and_says_until_when() -> None:
    verdict = seen(gap())
    assert verdict.status is Status.PENDING
    assert verdict.why == "all found trades are in · provable at 21:08:00 (in 8.0m)"
    assert colour(verdict) == SLATE
    # Read ahead but for a tail the fresh read could not reach yet: still only waiting.
    tail = seen(gap(fresh_until=WINDOW.end - timedelta(seconds=40)))  # more than the safety lag
    assert tail.status is Status.PENDING
    assert tail.why.endswith(" · last 40.0s read then")


def test_what_may_be_missing_stands_out_with_its_reason() -> None:
    failed = seen(gap(outcome="failed", reason="list call: code=41 isv.invalid-parameter:type"))
    assert (failed.status, failed.needs_action, colour(failed)) == (Status.MISSING, True, RED)
    assert failed.why == "failed for good: list call: code=41 isv.invalid-parameter:type"
    partial = seen(gap(outcome="partial", reason="isp.top-remote-connection-timeout", windows_failed=1))
    assert (partial.status, partial.needs_action, colour(partial)) == (Status.MISSING, False, ORANGE)
    assert "retried" in partial.why
    unread = seen(gap(started_at=None, fresh_until=None, overlap_seconds=None))
    assert unread.status is Status.MISSING
    assert unread.why == "not read yet (detected 11-11 20:58:00)"
    second = timedelta(seconds=1)
    inside = [Interval(WINDOW.start + k * second, WINDOW.start + (k + 1) * second) for k in (3, 9)]
    outside = [Interval(WINDOW.end + second, WINDOW.end + 2 * second)]
    blocked = seen(gap(), owed=inside + outside)
    assert blocked.status is Status.MISSING
    assert blocked.why == "2 unresolved trade(s) in its window, retried (order-sync dead-letters)"
    assert seen(gap(outcome="recovered"), owed=inside).status is Status.MISSING  # owed since its proof
    assert seen(gap(), owed=outside).status is Status.PENDING  # another window's debt
    # Dead letters are history: a trade that failed and was stored since owes nothing.
    assert seen(gap(dead_letters=2)).status is Status.PENDING
    loading = seen(gap(cause=Cause.INITIAL_LOAD.value, fresh_until=None, overlap_seconds=None))
    assert (loading.status, loading.why) == (Status.MISSING, "history still loading")


def test_an_unread_window_the_ledger_already_proves_is_not_missing() -> None:
    # Another replica's stream proved the outage: nothing is unread, the report only needs closing.
    report = gap(started_at=None, fresh_until=None)
    assert (
        seen(report, covered=[Interval(WINDOW.start - timedelta(seconds=5), WINDOW.end)]).status
        is Status.PENDING
    )
    assert seen(report, covered=[Interval(WINDOW.start, WINDOW.end - timedelta(seconds=40))]).status is (
        Status.MISSING
    )
    assert seen(gap(outcome="recovered")).status is Status.RECOVERED


@settings(max_examples=300, deadline=None)
@given(
    start=st.datetimes(
        min_value=datetime(2024, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
    ),
    seconds=st.floats(min_value=2, max_value=40 * 86400),
)
def test_axis_labels_never_repeat_and_show_seconds_on_spans_of_minutes(
    start: datetime, seconds: float
) -> None:
    span = Interval(start, start + timedelta(seconds=seconds))
    marks = ticks(span)
    labels = [label for _, label in marks]
    assert 2 <= len(marks) <= 8, labels
    assert len(set(labels)) == len(labels), labels
    assert all(span.start <= moment <= span.end for moment, _ in marks)
    if seconds <= 180:
        assert all(re.search(r"\d\d:\d\d:\d\d$", label) for label in labels), labels


def test_the_axis_of_a_lossy_minute_and_of_a_day() -> None:
    minute = Interval(
        datetime(2026, 12, 6, 13, 47, 55, tzinfo=UTC), datetime(2026, 12, 6, 13, 49, 5, tzinfo=UTC)
    )
    assert [label for _, label in ticks(minute)] == [
        "12-06 21:48:00", "21:48:10", "21:48:20", "21:48:30", "21:48:40", "21:48:50", "21:49:00",
    ]  # fmt: skip
    day = Interval(datetime(2026, 12, 6, 2, 0, tzinfo=UTC), datetime(2026, 12, 7, 1, 0, tzinfo=UTC))
    assert [label for _, label in ticks(day)] == [
        "12-06 12:00", "18:00", "12-07 00:00", "06:00",
    ]  # fmt: skip


def test_everything_from_outside_is_escaped_and_the_font_stack_reads_chinese() -> None:
    nick = '<img src=x onerror="alert(1)">&店'
    reason = "</td><script>alert(document.cookie)</script>"
    report = gap(shop=nick, outcome="failed", reason=reason)
    connection = StreamConnection("r<1>", NOW - timedelta(minutes=5), None, "<b>lost</b>")
    html = page(ReportData(NOW, [report], connections=[connection]))
    assert "<script" not in html
    assert "<img" not in html
    assert "<b>lost" not in html
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;店" in html
    assert "&lt;/td&gt;&lt;script&gt;alert(document.cookie)&lt;/script&gt;" in html
    families = re.findall(r'"([^"]+)"', FONT_STACK)
    assert families[:2] == ["Noto Sans CJK SC", "Noto Sans SC"]
    assert {"WenQuanYi Zen Hei", "PingFang SC", "Microsoft YaHei"} <= set(families)
    assert FONT_STACK.endswith("sans-serif")
