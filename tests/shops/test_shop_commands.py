"""`order-sync backfill --shop` and `initial-load --shop` on a shop that is only in the registry: its
session is unsealed with SYNC_SECRET_KEY, as the daemon does; one the registry does not serve is a
usage error. `order-sync check` probes its session as it does TAOBAO_SHOPS' ones."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from pydantic import SecretStr

from simulator.standin import StandIn, StandInConfig
from store.pg_shops import PgShops
from store.secret_box import SecretBox, generate_key
from tests.integration.harness import ROOT, daemon_env, running_standin
from tests.ops.processes import fetch


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    config = StandInConfig(seed=31, shops=1, market_rate=0, history_trades=20, history_days=1)
    async with running_standin(config) as stand_in:
        yield stand_in


async def order_sync(env: dict[str, str], *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "daemon.cli", *args, "--env-file", "/nonexistent/.env",
        env=env, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(120):
        out, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_backfill_and_initial_load_find_a_shop_that_is_only_in_the_registry(
    standin: StandIn, migrated_database: str
) -> None:
    (shop,) = standin.shops
    key = generate_key()
    async with asyncpg.create_pool(migrated_database, min_size=1, max_size=2) as pool:
        await PgShops(pool, SecretBox(SecretStr(key))).add(shop.nick, SecretStr(shop.session))
    env = daemon_env(
        standin, migrated_database, taobao_shops=[], sync_secret_key=key, sync_safety_lag_seconds=1
    )
    code, out = await order_sync(env, "initial-load", "--shop", shop.nick, "--days", "1")
    assert code == 0, out
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    code, out = await order_sync(env, "backfill", "--shop", shop.nick, "--since", since, "--until", "now")
    assert code == 0, out
    assert shop.session not in out
    reports = await fetch(migrated_database, "SELECT shop, cause, outcome FROM gap_reports ORDER BY id")
    # Read with the registry's session (the outcome stays open while the newest seconds are fresh).
    assert [(r["shop"], r["cause"]) for r in reports] == [(shop.nick, "initial_load"), (shop.nick, "manual")]
    assert not {r["outcome"] for r in reports} & {"partial", "failed"}
    trades = await fetch(migrated_database, "SELECT DISTINCT seller_nick FROM trades")
    assert [row["seller_nick"] for row in trades] == [shop.nick]

    code, out = await order_sync(env, "backfill", "--shop", "nobody", "--since", since, "--until", "now")
    assert code == 2, out
    assert "shop 'nobody' is not active in the shop registry" in out

    probes = standin.stats.calls["taobao.trade.fullinfo.get"]
    code, out = await order_sync(env, "check", "--timeout", "5")
    assert code == 0, out
    assert f"shop {shop.nick}" in out
    assert "signed call accepted" in out
    assert standin.stats.calls["taobao.trade.fullinfo.get"] - probes == 1  # one signed call for it
    assert shop.session not in out
