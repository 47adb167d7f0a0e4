"""`python -m simulator`: one JSON line on stdout, a working gateway, a clean exit on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import aiohttp

from tests.simulator.toputil import TopCaller

ROOT = Path(__file__).resolve().parents[2]


async def test_cli_prints_connection_line_serves_and_stops_on_sigterm() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simulator", "--port", "0", "--history", "50", "--rate", "20", "--seed", "4",
        "--shops", "2", "--isp-error-rate", "0",
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
