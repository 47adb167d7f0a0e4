"""`order-sync report`: the table, the JSON and the HTML page over a database with a day's worth of
typical reports; the page is rendered by headless Chromium (when installed) into a screenshot."""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from common.intervals import Interval
from daemon import report_cmd
from store.coverage import ProvenBy
from store.gap_reports import Cause, Outcome, PassCounts, RecoveredTrade
from store.pg import PgStore
from store.pg_coverage import PgCoverageLedger
from store.pg_reports import PgGapReports
from taobao.timefmt import GMT8

SHOP_A, SHOP_B = "南山优品旗舰店", "江南布衣小铺"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


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
    assert "↳ list call: Invalid Arguments code=41 sub_code=isv.invalid-parameter:type" in out

    assert await run(dsn, "--json", "--shop", SHOP_B) == 0
    document = json.loads(capsys.readouterr().out)
    assert {r["shop"] for r in document["reports"]} == {SHOP_B}
    assert [r["outcome"] for r in document["reports"]] == ["failed", "partial"]
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


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
async def test_the_html_page_renders_in_headless_chromium(pg: PgStore, dsn: str, tmp_path: Path) -> None:
    await fill(pg)
    page = tmp_path / "gaps.html"
    assert await run(dsn, "--html", str(page)) == 0
    shot = tmp_path / "gaps.png"
    assert CHROMIUM is not None
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--hide-scrollbars", "--window-size=1320,1250", f"--screenshot={shot}", page.as_uri(),
    ]  # fmt: skip
    done = await asyncio.to_thread(subprocess.run, command, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 30_000  # a blank page compresses to a few kB; this one has tables and timelines


async def test_a_report_waiting_for_the_lag_horizon_shows_when_it_will_be_provable(
    pg: PgStore, dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    reports = PgGapReports(pg.pool, replica="erp-sync-1")
    window = Interval(now - timedelta(seconds=40), now - timedelta(seconds=5))
    created = await reports.create(SHOP_A, Cause.RESTART, window, detected_at=now)
    waiting = await reports.get(created.id)
    assert waiting.provable_at is None  # not worked on yet: nothing to say
    await reports.add_pass(
        created.id,
        PassCounts(list_calls=1, fullinfo_calls=7, found=7, new=7),
        started_at=now,
        progress_until=None,
        fresh_until=window.end,
        overlap_seconds=600,
    )
    provable = window.end + timedelta(seconds=600)

    assert await run(dsn) == 0
    out = capsys.readouterr().out
    assert "open" in out
    assert f"↳ open: provable after {provable.astimezone(GMT8).strftime('%m-%d %H:%M:%S')}" in out

    assert await run(dsn, "--json") == 0
    [shown] = json.loads(capsys.readouterr().out)["reports"]
    assert shown["outcome"] is None
    assert shown["provable_at"] == provable.isoformat()

    await reports.finish(created.id, Outcome.RECOVERED, None, provable)
    assert (await reports.get(created.id)).provable_at is None
