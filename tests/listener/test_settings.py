"""Settings: defaults, `.env`, one clear line per problem, and secrets kept out of every text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daemon.settings import Settings, SettingsError, SignMethod, load_settings

SECRET = "app-secret-7f3a"
SESSION = "6100e2f9sessionkeyZZ"
SHOPS = json.dumps([{"nick": "旗舰店", "session": SESSION}, {"nick": "outlet", "session": "s2"}])


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("TAOBAO_APP_KEY", "12345678")
    monkeypatch.setenv("TAOBAO_APP_SECRET", SECRET)
    monkeypatch.setenv("TAOBAO_SHOPS", SHOPS)


def problems_of(monkeypatch: pytest.MonkeyPatch, **env: str | None) -> SettingsError:
    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings(env_file=None)
    return caught.value


def test_defaults_follow_the_public_contract() -> None:
    settings = load_settings(env_file=None)
    assert settings.database_url is None
    assert settings.taobao_api_url == "https://eco.taobao.com/router/rest"
    assert settings.taobao_tmc_url == "ws://mc.api.taobao.com/"
    assert settings.taobao_tmc_group == "default"
    assert settings.taobao_sign_method is SignMethod.HMAC_SHA256
    assert settings.sync_overlap_seconds == 600
    assert settings.notify_channel == "trade_changed"
    assert settings.http_host == "127.0.0.1"
    assert [shop.nick for shop in settings.taobao_shops] == ["旗舰店", "outlet"]
    assert settings.shop_sessions()["旗舰店"].get_secret_value() == SESSION


def test_repr_shows_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://erp:dbpass99@db/erp")
    text = repr(load_settings(env_file=None)) + str(load_settings(env_file=None))
    for secret in (SECRET, SESSION, "dbpass99"):
        assert secret not in text


def test_values_come_from_a_dotenv_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TAOBAO_APP_KEY")
    env_file = tmp_path / ".env"
    env_file.write_text("TAOBAO_APP_KEY=from-dotenv\nSYNC_API_RATE=12.5\nTAOBAO_SIGN_METHOD=md5\n")
    settings = load_settings(env_file=env_file)
    assert settings.taobao_app_key == "from-dotenv"
    assert settings.sync_api_rate == 12.5
    assert settings.taobao_sign_method is SignMethod.MD5


def test_bad_json_in_shops_names_the_variable_and_hides_the_text(monkeypatch: pytest.MonkeyPatch) -> None:
    error = problems_of(monkeypatch, TAOBAO_SHOPS='[{"nick": "a", "session": "' + SESSION + '"')
    assert len(error.problems) == 1
    assert error.problems[0].startswith("TAOBAO_SHOPS: not valid JSON")
    assert SESSION not in str(error)


def test_bad_sign_method_lists_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    error = problems_of(monkeypatch, TAOBAO_SIGN_METHOD="sha1")
    assert error.problems == ["TAOBAO_SIGN_METHOD: Input should be 'md5', 'hmac' or 'hmac-sha256'"]


def test_missing_app_key_is_reported_with_every_other_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    error = problems_of(
        monkeypatch,
        TAOBAO_APP_KEY=None,
        SYNC_API_RATE="-1",
        TAOBAO_SHOPS=json.dumps([{"nick": "a", "session": SESSION}, {"nick": "b"}]),
    )
    assert error.problems == [
        "TAOBAO_APP_KEY: required but not set",
        "TAOBAO_SHOPS[1].session: required but not set",
        "SYNC_API_RATE: Input should be greater than 0",
    ]
    assert str(error).startswith("invalid settings:\n  TAOBAO_APP_KEY")
    assert SECRET not in str(error)
    assert SESSION not in str(error)


@pytest.mark.parametrize(
    ("shops", "expected"),
    [
        ("", "TAOBAO_SHOPS: expected a JSON list"),
        ('{"nick": "a"}', "TAOBAO_SHOPS: expected a JSON list"),
        ("[]", "TAOBAO_SHOPS: List should have at least 1 item"),
        ('[{"nick": "a", "session": "x"}, {"nick": "a", "session": "y"}]', "nick 'a' is listed twice"),
        ('[{"nick": " ", "session": "x"}]', "TAOBAO_SHOPS[0].nick: nick must not be blank"),
    ],
)
def test_shop_list_problems(monkeypatch: pytest.MonkeyPatch, shops: str, expected: str) -> None:
    error = problems_of(monkeypatch, TAOBAO_SHOPS=shops)
    assert expected in str(error)


def test_a_value_that_fails_validation_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    error = problems_of(monkeypatch, TAOBAO_APP_SECRET=SECRET, SYNC_MAX_EVENTS=SECRET)
    assert error.problems == [
        "SYNC_MAX_EVENTS: Input should be a valid integer, unable to parse string as an integer"
    ]
    assert SECRET not in str(error)


def test_worker_count_follows_the_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(env_file=None, sync_api_rate=40, sync_api_latency_seconds=0.15).worker_count() == 12
    assert load_settings(env_file=None, sync_api_rate=1).worker_count() == 4
    assert load_settings(env_file=None, sync_api_rate=10_000).worker_count() == 64
    assert load_settings(env_file=None, sync_workers=3).worker_count() == 3
