"""Every command reads its settings the same way: the environment, then the `.env` file in the working
directory (or --env-file), through one loader; a database-only command needs no Taobao credentials, and
bad settings are one line per problem and exit 2."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from common.exit_codes import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from daemon import demo, migrate_cmd, report_cmd
from daemon.settings import DatabaseSettings, Settings, settings_or_exit

UNREACHABLE = "postgresql://postgres@127.0.0.1:1/none"


@pytest.fixture(autouse=True)
def no_settings_in_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)


def parse(module: ModuleType, *argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    module.configure(parser)
    namespace: argparse.Namespace = parser.parse_args(list(argv))
    return namespace


async def run(command: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    # The commands run their own event loop, as `order-sync` does.
    return await asyncio.to_thread(command, args)


async def test_migrate_and_report_read_database_url_from_dot_env_in_the_working_directory(
    fresh_database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / ".env").write_text(f"DATABASE_URL={fresh_database}\n", encoding="utf-8")

    assert await run(migrate_cmd.run, parse(migrate_cmd)) == EXIT_OK
    assert "applied migrations: 001" in capsys.readouterr().out

    assert await run(report_cmd.run, parse(report_cmd, "--json")) == EXIT_OK
    assert '"reports": []' in capsys.readouterr().out


async def test_env_file_option_names_another_file(
    fresh_database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings_file = tmp_path / "sync.env"
    settings_file.write_text(f"DATABASE_URL='{fresh_database}'\n", encoding="utf-8")
    (tmp_path / ".env").write_text(f"DATABASE_URL={UNREACHABLE}\n", encoding="utf-8")

    assert await run(migrate_cmd.run, parse(migrate_cmd, "--env-file", str(settings_file))) == EXIT_OK
    assert await run(report_cmd.run, parse(report_cmd, "--env-file", str(settings_file))) == EXIT_OK
    assert capsys.readouterr().err == ""


async def test_the_environment_wins_over_the_file_and_the_option_over_both(
    fresh_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / ".env").write_text(f"DATABASE_URL={fresh_database}\n", encoding="utf-8")
    monkeypatch.setenv("DATABASE_URL", UNREACHABLE)
    assert await run(migrate_cmd.run, parse(migrate_cmd)) == EXIT_FAILED
    assert "migration failed" in capsys.readouterr().err

    given = parse(migrate_cmd, "--database-url", fresh_database)
    assert await run(migrate_cmd.run, given) == EXIT_OK


@pytest.mark.parametrize("command", [migrate_cmd, report_cmd])
def test_a_file_without_database_url_is_one_line_and_exit_2(
    command: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / ".env").write_text("TAOBAO_APP_KEY=12345678\n", encoding="utf-8")
    assert command.run(parse(command)) == EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        "invalid settings:",
        "  DATABASE_URL: required but not set",
        "hint: every setting is described in .env.example",
    ]
    assert captured.out == ""


def test_the_full_settings_list_every_problem_from_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / ".env").write_text(
        "DATABASE_URL=postgresql://db/erp\nTAOBAO_APP_KEY=k\nTAOBAO_SHOPS=[{\nSYNC_API_RATE=fast\n",
        encoding="utf-8",
    )
    assert settings_or_exit(Settings, ".env") == EXIT_USAGE
    assert capsys.readouterr().err.splitlines() == [
        "invalid settings:",
        "  TAOBAO_APP_SECRET: required but not set",
        "  TAOBAO_SHOPS: not valid JSON "
        "(Expecting property name enclosed in double quotes at line 1 column 3)",
        "  SYNC_API_RATE: Input should be a valid number, unable to parse string as a number",
        "hint: every setting is described in .env.example",
    ]


def test_the_demo_takes_its_database_from_dot_env_instead_of_starting_one(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DATABASE_URL=postgresql://erp@db.internal/erp\n", encoding="utf-8")
    settings = settings_or_exit(DatabaseSettings, parse(demo).env_file, need_database=False)
    assert isinstance(settings, DatabaseSettings)
    with demo.choose_database(settings) as dsn:
        assert dsn == "postgresql://erp@db.internal/erp"
