"""No secret ever reaches the daemon's output: `python -m listener` at DEBUG, with traffic, a shop whose
session TOP rejects, a frame it cannot decode, and its HTTP pages scraped (the gap reports, HTML and
JSON, among them), prints neither the app secret nor any session key, raw or URL-encoded, and writes
none to any table of its database (dead-letter payloads included). Its stderr is one JSON object per
line with the stable keys."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import aiohttp
import asyncpg
import pytest

from simulator.standin import StandIn, StandInConfig
from simulator.tmc_server import TmcServerConfig
from store.schema import DEFAULT_SCHEMA
from tests.integration.harness import ROOT, daemon_env, permit_every_shop, wait_for

LOG_KEYS = {"ts", "level", "logger", "action", "msg", "tid", "shop", "message_id", "attempt", "exc", "stack"}
REVOKED_SESSION = "6100revokedsession+/=&%0042"  # characters that URL-encoding would change
PAGES = ("/healthz", "/readyz", "/metrics", "/reports", "/reports.json", "/missing?session=x")
UNDECODABLE_FRAME = b"\x02\x02\x09\x00"  # a TMC frame cut short: quarantined as a dead letter


def as_text(value: object) -> str:
    """A column's value as searchable text; bytes (dead-letter payloads) read as UTF-8 and as Latin-1."""
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        return raw.decode("utf-8", errors="replace") + raw.decode("latin-1")
    return str(value)


async def database_text(dsn: str) -> tuple[str, dict[str, int]]:
    """Every row of every table outside PostgreSQL's own schemas, as text; and the row count per table."""
    conn = await asyncpg.connect(dsn)
    try:
        tables = await conn.fetch(
            "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) AS name"
            " FROM information_schema.tables WHERE table_type = 'BASE TABLE'"
            " AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        )
        texts: list[str] = []
        counts: dict[str, int] = {}
        for table in tables:
            rows = await conn.fetch(f"SELECT * FROM {table['name']}")
            counts[table["name"]] = len(rows)
            texts += [as_text(value) for row in rows for value in row.values()]
        return "\n".join(texts), counts
    finally:
        await conn.close()


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    stand_in = StandIn(
        StandInConfig(
            seed=91,
            shops=3,
            market_rate=0,
            history_trades=30,
            tmc=TmcServerConfig(confirm_timeout=60, seed=91),
        )
    )
    async with stand_in:
        yield stand_in


async def test_debug_logs_and_pages_never_show_a_secret(
    standin: StandIn, migrated_database: str, tmp_path: Path
) -> None:
    # Every shop was permitted while its session was good (an earlier run); the third's was revoked since.
    await permit_every_shop(standin)
    shops = [{"nick": s.nick, "session": s.session} for s in standin.shops]
    shops[2]["session"] = REVOKED_SESSION
    env = daemon_env(
        standin,
        migrated_database,
        taobao_shops=shops,
        log_level="DEBUG",
        log_format="json",
        sync_initial_load_days=0,  # a new shop is followed from now on: no three-month load first
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "listener",
        "--env-file",
        str(tmp_path / "absent.env"),
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out_lines: list[str] = []
    err_lines: list[str] = []

    async def drain(stream: asyncio.StreamReader | None, into: list[str]) -> None:
        assert stream is not None
        while line := await stream.readline():
            into.append(line.decode("utf-8", errors="replace"))

    readers = [
        asyncio.create_task(drain(process.stdout, out_lines)),
        asyncio.create_task(drain(process.stderr, err_lines)),
    ]
    pages: list[str] = []
    try:
        await wait_for(
            lambda: any('"service_started"' in line for line in err_lines), 15, "the daemon to start"
        )
        started = next(json.loads(line) for line in err_lines if '"service_started"' in line)
        port = int(re.findall(r":(\d+)$", started["msg"])[0])
        await wait_for(lambda: standin.tmc.stats.connections == 1, 30, "the daemon to connect")
        tmc = standin.tmc.stats
        standin.market.step(40)
        bad_nick = standin.shops[2].nick
        assert any(c.seller_nick == bad_nick for c in standin.market.changes), (
            "no change for the revoked shop"
        )
        good = sum(1 for c in standin.market.changes if c.seller_nick != bad_nick)
        await wait_for(lambda: tmc.confirmed >= good, 20, "the good shops' changes to be confirmed")
        await wait_for(
            lambda: any('"shop_paused"' in line for line in err_lines), 10, "the revoked shop's pause"
        )
        assert await standin.tmc.send_raw(standin.app_key, UNDECODABLE_FRAME) == 1
        await wait_for(
            lambda: any('"dead_letter"' in line for line in err_lines), 10, "the frame's dead letter"
        )
        async with aiohttp.ClientSession() as http:
            for page in PAGES:
                async with http.get(f"http://127.0.0.1:{port}{page}") as response:
                    pages.append(await response.text())
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await process.wait() == 0
        await asyncio.gather(*readers)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        for reader in readers:
            reader.cancel()

    stored, row_counts = await database_text(migrated_database)
    output = "".join(out_lines + err_lines + pages) + stored
    secrets = [standin.app_secret, REVOKED_SESSION] + [s.session for s in standin.shops]
    for secret in secrets:
        for form in {secret, quote(secret, safe=""), quote_plus(secret)}:
            assert form not in output, f"a secret appeared in the output ({len(output)} characters)"

    # The test saw what it claims to have checked: debug lines, the rejected session, the pages.
    records = [json.loads(line) for line in err_lines]
    assert len(records) > 50
    assert {r["level"] for r in records} >= {"DEBUG", "INFO", "ERROR"}
    assert all(set(r) <= LOG_KEYS and {"ts", "level", "logger", "msg"} <= set(r) for r in records)
    assert any(r.get("action") == "shop_paused" and r.get("shop") == bad_nick for r in records)
    assert any(r.get("action") == "batch_committed" for r in records)
    assert any(r["logger"] == "websockets.client" for r in records)  # library debug output too
    assert "order_sync_tmc_messages_confirmed_total" in pages[2]
    assert "<html" in pages[3].lower()
    changed = {c.tid for c in standin.market.changes if c.seller_nick != bad_nick}
    assert row_counts[f"{DEFAULT_SCHEMA}.trades"] >= len(changed)
    assert row_counts[f"{DEFAULT_SCHEMA}.dead_letters"] >= 1
    assert not out_lines  # the daemon writes its log to stderr only
