"""`order-sync backfill` on a terminal: one line, rewritten in place while the windows are read, says how
many windows of those planned are read and how many trades were found; the report follows."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from simulator.standin import StandIn, StandInConfig
from tests.integration.harness import ROOT, daemon_env, running_standin
from tests.ops.processes import fetch, on_a_terminal


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    async with running_standin(StandInConfig(seed=5, shops=1, market_rate=0, history_trades=20)) as stand_in:
        stand_in.faults.latency_ms = 100  # so the windows take long enough to be seen one by one
        yield stand_in


async def test_backfill_shows_windows_read_and_trades_found_as_it_goes(
    standin: StandIn, migrated_database: str
) -> None:
    standin.market.step(120)
    (shop,) = standin.shops
    await asyncio.sleep(1.2)  # the changes' second is behind the safety lag
    since = datetime.now(UTC) - timedelta(hours=3)
    env = daemon_env(
        standin, migrated_database, sync_safety_lag_seconds=1, sync_backfill_window_seconds=1800,
        sync_overlap_seconds=60, log_level="WARNING",
    )  # fmt: skip
    code, out = await on_a_terminal(
        [sys.executable, "-m", "daemon.cli", "backfill", "--shop", shop.nick, "--since", since.isoformat(),
         "--until", "now", "--env-file", "/nonexistent/.env"], env=env, cwd=ROOT,
    )  # fmt: skip
    assert code == 0, out
    shown = rf"\r\x1b\[Kbackfill of {shop.nick}: window (\d+)/(\d+) · ([\d,]+) trades found[^\r\n]*"
    lines = re.findall(shown, out)
    assert len(lines) >= 3, out  # updated in place while it ran, not only at the end
    read = [int(done) for done, _, _ in lines]
    assert read == sorted(read), out
    assert read[0] < read[-1], out
    last_done, last_total, last_found = lines[-1]
    assert last_done == last_total
    assert int(last_total) >= 6  # three hours in half-hour windows, plus the overlap
    (report,) = await fetch(migrated_database, "SELECT trades_found, windows_read FROM gap_reports")
    assert int(last_found.replace(",", "")) == report["trades_found"] > 0
    assert int(last_done) == report["windows_read"]
    assert "(100%)" in out
    assert "\n" in out.split(lines[-1][2] + " trades found")[-1]  # the line is ended before the report
    assert re.search(r"^id +shop +cause", out, re.MULTILINE), out
