"""`order-sync shops`: add, list (table and --json), pause, resume, remove; never a session in the output."""

from __future__ import annotations

import io
import json

import pytest

from daemon.cli import main
from store.secret_box import generate_key

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
