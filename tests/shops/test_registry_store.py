"""The shop registry in PostgreSQL: sessions sealed at rest, never in a repr, each change rings the
doorbell in its own transaction; the memory fake behaves alike."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from pydantic import SecretStr

from store.memory_shops import MemoryShops
from store.migrate import migrate
from store.pg_shops import PgShops
from store.secret_box import SecretBox, SecretKeyError, generate_key
from store.shops import SHOPS_CHANNEL, PermitOutcome, ShopRegistry, ShopStatus, UnknownShop
from tests.conftest import create_database, drop_database

SESSION = "6100e2a9f4c5sessionkey-of-shop-a"
REFRESH = "6101refresh-token-of-shop-a"


@pytest.fixture
async def pool() -> AsyncIterator[asyncpg.Pool]:
    dsn = await create_database()
    try:
        await migrate(dsn)
        async with asyncpg.create_pool(dsn, min_size=1, max_size=4) as created:
            yield created
    finally:
        await drop_database(dsn)


async def test_sessions_are_sealed_in_the_table_and_hidden_from_reprs(pool: asyncpg.Pool) -> None:
    registry = PgShops(pool, SecretBox(SecretStr(generate_key())))
    expires = datetime(2030, 1, 1, tzinfo=UTC)
    refresh = SecretStr(REFRESH)
    added = await registry.add("shop-a", SecretStr(SESSION), refresh_token=refresh, expires_at=expires)
    assert (added.session.get_secret_value(), added.expires_at) == (SESSION, expires)
    assert added.refresh_token is not None
    assert added.refresh_token.get_secret_value() == REFRESH
    assert SESSION not in repr(added)
    assert REFRESH not in repr(added)
    row = await pool.fetchrow("SELECT * FROM shops WHERE nick = 'shop-a'")
    assert row is not None
    text = " ".join(str(value) for value in row.values())
    raw = b"".join(bytes(value) for value in row.values() if isinstance(value, bytes))
    assert SESSION not in text
    assert SESSION.encode() not in raw
    assert REFRESH.encode() not in raw

    other = PgShops(pool, SecretBox(SecretStr(generate_key())))
    with pytest.raises(SecretKeyError, match="not the key it was stored with"):
        await other.records()


async def test_every_change_rings_the_doorbell(pool: asyncpg.Pool) -> None:
    registry = PgShops(pool, SecretBox(SecretStr(generate_key())))
    heard: asyncio.Queue[str] = asyncio.Queue()
    conn = await asyncpg.connect(pool._connect_args[0])  # type: ignore[attr-defined]
    try:
        await conn.add_listener(SHOPS_CHANNEL, lambda *args: heard.put_nowait(args[3]))
        await registry.add("shop-a", SecretStr(SESSION))
        await registry.set_status("shop-a", ShopStatus.PAUSED, "paused by the operator")
        await registry.remove("shop-a")
        async with asyncio.timeout(5):
            assert [await heard.get() for _ in range(3)] == ["shop-a"] * 3
    finally:
        await conn.close()


@pytest.mark.parametrize("kind", ["pg", "memory"])
async def test_add_seed_pause_resume_remove_renew(pool: asyncpg.Pool, kind: str) -> None:
    registry: ShopRegistry = (
        PgShops(pool, SecretBox(SecretStr(generate_key()))) if kind == "pg" else MemoryShops()
    )
    await registry.add("shop-a", SecretStr("one"))
    assert await registry.seed([("shop-a", SecretStr("ignored")), ("shop-b", SecretStr("two"))]) == ["shop-b"]
    records = {r.nick: r for r in await registry.records()}
    assert {n: r.session.get_secret_value() for n, r in records.items()} == {"shop-a": "one", "shop-b": "two"}

    paused = await registry.set_status("shop-a", ShopStatus.PAUSED, "paused by the operator")
    assert (paused.active, paused.status_reason) == (False, "paused by the operator")
    assert (await registry.set_status("shop-a", ShopStatus.ACTIVE, None)).active

    await registry.set_status("shop-b", ShopStatus.PAUSED, "session expired")
    later = datetime.now(UTC) + timedelta(days=30)
    await registry.renew("shop-b", SecretStr("three"), SecretStr("r"), later)
    renewed = await registry.get("shop-b")
    assert renewed is not None
    assert renewed.active
    assert (renewed.session.get_secret_value(), renewed.expires_at) == ("three", later)

    at = datetime.now(UTC)
    outcomes = [PermitOutcome("shop-a", None, "TOP call failed"), PermitOutcome("shop-b", at, None)]
    await registry.record_permits([*outcomes, PermitOutcome("nobody", at, None)])
    recorded = {r.nick: (r.permitted_at, r.permit_error) for r in await registry.records()}
    assert recorded == {"shop-a": (None, "TOP call failed"), "shop-b": (at, None)}
    await registry.remove("shop-a")
    assert [r.nick for r in await registry.records()] == ["shop-b"]
    with pytest.raises(UnknownShop):
        await registry.remove("shop-a")
