"""`order-sync check` as an operator runs it (its own process, settings from the environment) against
the stand-in: a good configuration passes every line; a wrong secret, unreachable endpoints or missing
settings fail with one clear line and a hint each, never a traceback."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from daemon.check_cmd import Item, clock_item
from simulator.standin import StandIn, StandInConfig
from taobao.clock import ClockSkew
from tests.integration.harness import daemon_env


@pytest.fixture(scope="module")
async def standin() -> AsyncIterator[StandIn]:
    stand_in = StandIn(StandInConfig(seed=52, shops=2, market_rate=0, history_trades=20))
    async with stand_in:
        yield stand_in


@dataclass
class Outcome:
    code: int
    out: str
    err: str

    def line(self, name: str) -> str:
        """The checklist line of check `name` (what follows the ✓/✗ mark)."""
        found = [row for row in self.out.splitlines() if row[2:].startswith(name + " ")]
        assert len(found) == 1, self.out
        return found[0]


async def order_sync_check(env: dict[str, str], cwd: Path) -> Outcome:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "daemon.cli",
        "check",
        "--timeout",
        "5",
        "--env-file",
        str(cwd / "absent.env"),
        cwd=cwd,
        env=env | {"PYTHONIOENCODING": "utf-8"},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(40):
        out, err = await process.communicate()
    assert process.returncode is not None
    outcome = Outcome(process.returncode, out.decode(), err.decode())
    assert "Traceback" not in outcome.out + outcome.err, outcome
    return outcome


def env_for(standin: StandIn, dsn: str, **overrides: Any) -> dict[str, str]:
    return daemon_env(standin, dsn, **overrides)


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_check_passes_against_the_standin(
    standin: StandIn, fresh_database: str, tmp_path: Path
) -> None:
    calls_before = standin.stats.calls["taobao.trade.fullinfo.get"]
    result = await order_sync_check(env_for(standin, fresh_database), tmp_path)
    assert result.code == 0, result
    lines = result.out.splitlines()
    assert all(row.startswith("✓") for row in lines[:-1]), result.out
    assert lines[-1] == "6 of 6 checks passed"
    assert "Taobao's clock is" in result.line("clock")
    assert "no schema yet (run creates it)" in result.line("postgres")
    for shop in standin.shops:
        assert "signed call accepted" in result.line(f"shop {shop.nick}")
    assert result.line("tmc").endswith(f"CONNECT accepted by {standin.tmc_url} (group default)")
    assert standin.stats.calls["taobao.trade.fullinfo.get"] - calls_before == len(standin.shops)
    assert standin.app_secret not in result.out + result.err
    assert all(shop.session not in result.out for shop in standin.shops)


async def test_a_wrong_secret_fails_with_a_clear_line_and_a_hint(
    standin: StandIn, fresh_database: str, tmp_path: Path
) -> None:
    result = await order_sync_check(
        env_for(standin, fresh_database, taobao_app_secret="not-the-secret"), tmp_path
    )
    assert result.code == 1, result
    first_shop = result.line(f"shop {standin.shops[0].nick}")
    assert first_shop.startswith("✗")
    assert first_shop.endswith("signature rejected (code 25)")
    assert "hint: check TAOBAO_APP_SECRET and TAOBAO_SIGN_METHOD" in result.out
    assert "1 more shop(s) not checked (same error)" in result.line("shops")
    assert result.line("tmc").startswith("✗")
    assert "CONNECT refused" in result.line("tmc")
    assert result.line("postgres").startswith("✓")
    assert result.out.splitlines()[-1] == "3 of 6 checks passed"  # settings, postgres, clock
    assert "not-the-secret" not in result.out + result.err


async def test_unreachable_endpoints_fail_one_line_each(standin: StandIn, tmp_path: Path) -> None:
    port = free_port()
    env = env_for(
        standin,
        f"postgresql://postgres@127.0.0.1:{port}/nowhere",
        taobao_api_url=f"http://127.0.0.1:{port}/router/rest",
        taobao_tmc_url=f"ws://127.0.0.1:{port}/",
    )
    result = await order_sync_check(env, tmp_path)
    assert result.code == 1, result
    assert result.line("postgres").startswith("✗ postgres   cannot connect (")
    assert "hint: is PostgreSQL running" in result.out
    assert "API not usable now: network error" in result.line(f"shop {standin.shops[0].nick}")
    assert result.line("tmc").startswith(f"✗ tmc        cannot reach ws://127.0.0.1:{port}/")


async def test_missing_settings_exit_2_naming_each_variable(tmp_path: Path, standin: StandIn) -> None:
    env = env_for(standin, "postgresql://postgres@127.0.0.1/x")
    del env["TAOBAO_SHOPS"]
    env["TAOBAO_SIGN_METHOD"] = "sha1"
    result = await order_sync_check(env, tmp_path)
    assert result.code == 2, result
    assert "✗ settings   TAOBAO_SHOPS: required but not set" in result.out
    assert "✗ settings   TAOBAO_SIGN_METHOD: Input should be 'md5', 'hmac' or 'hmac-sha256'" in result.out
    assert result.out.rstrip().endswith("hint: every setting is described in .env.example")


def test_the_clock_line_says_how_far_taobao_is_and_fails_past_a_minute() -> None:
    skew = ClockSkew()
    assert clock_item(skew) == Item(True, "clock", "not measured (no answer from TOP)")
    now = datetime.now(UTC)
    skew.observe_answer(now - timedelta(seconds=700), now, now)
    item = clock_item(skew)
    assert not item.ok
    assert item.detail == "Taobao's clock is 699.5 s behind this host's"
    assert item.hint is not None
    assert "NTP" in item.hint
