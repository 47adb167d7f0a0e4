"""`python -m simulator`: one JSON line on stdout, a working gateway, a clean exit on SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from simulator import cli
from simulator.faults import FaultKnobs
from simulator.standin import StandIn, StandInConfig
from simulator.tmc_faults import TmcFaults
from tests.simulator.toputil import TopCaller

ROOT = Path(__file__).resolve().parents[2]


async def test_cli_prints_connection_line_serves_and_stops_on_sigterm() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "simulator",
        "--port",
        "0",
        "--history",
        "50",
        "--rate",
        "20",
        "--seed",
        "4",
        "--shops",
        "2",
        "--isp-error-rate",
        "0",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), timeout=20)
        info = json.loads(line)
        assert set(info) == {"api_url", "tmc_url", "app_key", "app_secret", "shops", "truth_url"}
        assert info["tmc_url"].startswith("ws://127.0.0.1:")
        assert [set(s) for s in info["shops"]] == [{"nick", "session", "user_id"}] * 2
        # Talk to it like any client would.
        async with aiohttp.ClientSession() as http:
            caller = TopCaller(
                http, info["api_url"], info["app_key"], info["app_secret"], info["shops"][0]["session"]
            )
            answer = await caller.request("taobao.trades.sold.get", {"fields": "tid"}, epoch_timestamp=True)
            assert "trades_sold_get_response" in answer.json
            async with http.get(info["truth_url"] + "?digest=0") as response:
                assert (await response.json())["trade_count"] >= 50
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), timeout=15)
    assert code == 0


def _config(*argv: str) -> StandInConfig:
    parser = argparse.ArgumentParser()
    cli.configure(parser)
    return cli.config_from_args(parser.parse_args(list(argv)))


def test_hostile_flags_set_the_same_knobs_as_the_admin_endpoint() -> None:
    config = _config(
        "--detail-lag", "3", "--odd-values-rate", "0.05", "--odd-values-tids", "11,12",
        "--odd-values-kinds", "date,money", "--odd-text-rate", "0.02", "--error-window", "ip-not-allowed",
        "--error-window-methods", "taobao.trade.fullinfo.get", "--error-window-seconds", "30",
        "--malformed-page-rate", "0.1", "--malformed-page-kinds", "short_page",
        "--tmc-close-every", "15", "--tmc-close-code", "1000", "--tmc-close-reason", r"bye\0",
        "--tmc-oversize-every", "50", "--tmc-oversize-bytes", "9000000", "--tmc-unknown-headers", "0.03",
        "--tmc-unknown-header-kind", "header_type", "--tmc-refund-topics",
    )  # fmt: skip
    knobs = config.faults
    assert knobs.detail_lag_seconds == 3.0
    assert (knobs.odd_values_rate, knobs.odd_values_tids, knobs.odd_values_kinds) == (
        0.05, ("11", "12"), ("date", "money"),
    )  # fmt: skip
    assert knobs.odd_text_rate == 0.02
    assert knobs.error_window == "ip-not-allowed"
    assert knobs.error_window_methods == ("taobao.trade.fullinfo.get",)
    assert 0 < knobs.error_window_until - time.time() <= 30
    assert (knobs.malformed_page_rate, knobs.malformed_page_kinds) == (0.1, ("short_page",))
    tmc = config.tmc_faults
    assert (tmc.close_every, tmc.close_code, tmc.close_reason) == (15.0, 1000, "bye\x00")
    assert (tmc.oversize_every, tmc.oversize_bytes) == (50, 9_000_000)
    assert (tmc.unknown_header_fraction, tmc.unknown_header_kind) == (0.03, "header_type")
    assert tmc.refund_topics is True


def test_every_hostile_knob_is_off_without_flags() -> None:
    config = _config()
    defaults = FaultKnobs()
    assert config.faults.to_json() == defaults.to_json()
    assert config.tmc_faults == TmcFaults()


def test_permits_are_required_unless_turned_off() -> None:
    assert _config().require_permits is True
    assert StandIn(_config()).permits.required is True
    assert _config("--no-require-permits").require_permits is False
    assert StandIn(_config("--no-require-permits")).permits.allows("anyone")


def test_bad_hostile_flags_are_refused() -> None:
    with pytest.raises(ValueError, match="malformed_page_kinds"):
        _config("--malformed-page-kinds", "short_page,sideways")
    with pytest.raises(ValueError, match="close_code"):
        _config("--tmc-close-code", "1005")
    with pytest.raises(ValueError, match="odd_values_tids"):
        _config("--odd-values-tids", "abc")
