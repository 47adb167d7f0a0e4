"""`order-sync shops`: add, list (table and --json), pause, resume, remove; never a session in the output."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from pydantic import SecretStr

from daemon.check_cmd import check_registry
from daemon.cli import main
from daemon.settings import load_settings
from store.pg_shops import PgShops
from store.secret_box import SecretBox, generate_key

SESSION = "6100secret-session-of-shop-x"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, dsn: str) -> None:
    for name in ("TAOBAO_SHOPS", "DATABASE_URL", "SYNC_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", dsn)
    monkeypatch.setenv("SYNC_SECRET_KEY", generate_key())


def shops(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["shops", *args, "--env-file", "/nonexistent"])
    out = capsys.readouterr()
    assert SESSION not in out.out + out.err
    return code, out.out


def listed(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    code, out = shops(capsys, "list", "--json")
    assert code == 0
    result: list[dict[str, object]] = json.loads(out)
    return result


def test_add_list_pause_resume_remove(
    env: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(SESSION + "\n"))
    expiry = "2030-01-01T00:00:00Z"
    code, out = shops(capsys, "add", "--nick", "shop-x", "--session", "-", "--expires-at", expiry)
    assert code == 0
    assert "shop-x" in out
    assert shops(capsys, "add", "--nick", "shop-y", "--session", SESSION, "--refresh-token", "r1")[0] == 0
    rows = {row["nick"]: row for row in listed(capsys)}
    assert rows["shop-x"]["expires_at"] == "2030-01-01T00:00:00+00:00"
    assert (rows["shop-x"]["refresh_token"], rows["shop-y"]["refresh_token"]) == (False, True)
    assert {row["status"] for row in rows.values()} == {"active"}

    assert shops(capsys, "pause", "--nick", "shop-x")[0] == 0
    code, table = shops(capsys, "list")
    assert code == 0
    assert table.splitlines()[0].split() == ["nick", "status", "expires", "refresh", "permitted", "reason"]
    assert "paused by the operator" in table
    assert shops(capsys, "resume", "--nick", "shop-x")[0] == 0
    assert {row["status"] for row in listed(capsys)} == {"active"}

    assert shops(capsys, "remove", "--nick", "shop-x")[0] == 0
    assert [row["nick"] for row in listed(capsys)] == ["shop-y"]
    assert shops(capsys, "remove", "--nick", "shop-x")[0] == 1  # unknown now


def test_without_a_key_the_command_says_how_to_make_one(
    env: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SYNC_SECRET_KEY")
    assert main(["shops", "list", "--env-file", "/nonexistent"]) == 2
    assert "order-sync shops key" in capsys.readouterr().err
    assert main(["shops", "key"]) == 0
    assert len(capsys.readouterr().out.strip()) == 44  # a Fernet key: 32 bytes, url-safe base64


async def test_check_names_sessions_about_to_expire_without_a_refresh_token(dsn: str) -> None:
    key = generate_key()
    settings = load_settings(
        env_file=None,
        database_url=dsn,
        sync_secret_key=key,
        taobao_app_key="12345678",
        taobao_app_secret="secret",
        sync_session_warn_seconds=3600,
    )
    now = datetime.now(UTC)
    async with asyncpg.create_pool(dsn, min_size=1, max_size=2) as pool:
        registry = PgShops(pool, SecretBox(SecretStr(key)))
        await registry.add("soon", SecretStr(SESSION), expires_at=now + timedelta(minutes=30))
        await registry.add("renewable", SecretStr("s"), refresh_token=SecretStr("r"), expires_at=now)
        await registry.add("later", SecretStr("s"), expires_at=now + timedelta(days=30))
    items = await check_registry(settings, now)
    assert [(i.ok, i.name) for i in items] == [(True, "registry"), (False, "shop soon")]
    assert items[1].detail == "session expires in 0.5 h, no refresh token"
    assert SESSION not in str(items)
