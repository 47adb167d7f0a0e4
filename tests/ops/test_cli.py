"""The console script as an operator meets it: complete help for every subcommand, and a daemon that
cannot start says why in a line or two with a hint, never with a traceback."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import sys
from importlib import metadata
from pathlib import Path

import pytest

from daemon.cli import COMMANDS, build_parser
from daemon.service import Service, ServiceFailed
from daemon.settings import Settings
from tests.integration.harness import ROOT
from tests.listener.fakes import FakeChannel, FakeFetcher, FakeStore, Journal


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(actions) == 1
    return dict(actions[0].choices)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_subcommand_and_option_has_help(name: str) -> None:
    parser = subcommands()[name]
    assert parser.description, f"`order-sync {name}` has no description"
    undocumented = [a.option_strings or [a.dest] for a in parser._actions if not a.help]
    assert undocumented == [], f"`order-sync {name}` options without help: {undocumented}"
    parser.format_help()  # renders (a bad %-placeholder in a help text raises here)


def clean_env() -> dict[str, str]:
    prefixes = ("TAOBAO_", "SYNC_", "DATABASE_", "HTTP_", "LOG_", "READY_", "NOTIFY_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    return env | {"PYTHONPATH": str(ROOT), "PYTHONIOENCODING": "utf-8"}


async def order_sync(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "daemon.cli",
        *args,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_top_level_help_lists_every_command(tmp_path: Path) -> None:
    code, out, _ = await order_sync("--help", env=clean_env(), cwd=tmp_path)
    assert code == 0
    for name in COMMANDS:
        # A long name (initial-load) gets its help text on the next line.
        assert f"    {name} " in out or f"    {name}\n" in out, name


async def test_version_is_the_installed_release(tmp_path: Path) -> None:
    code, out, err = await order_sync("--version", env=clean_env(), cwd=tmp_path)
    assert (code, err) == (0, "")
    assert out == f"order-sync {metadata.version('taobao-order-sync')}\n"
    assert re.fullmatch(r"order-sync \d+\.\d+\.\d+\S*\n", out)


async def test_run_with_bad_settings_exits_2_with_one_line_per_problem(tmp_path: Path) -> None:
    env = clean_env() | {"TAOBAO_APP_KEY": "k", "TAOBAO_APP_SECRET": "s3cr3t", "TAOBAO_SHOPS": "[{"}
    env["HTTP_PORT"] = "http"
    code, out, err = await order_sync("run", env=env, cwd=tmp_path)
    assert code == 2
    assert err.splitlines() == [
        "invalid settings:",
        "  TAOBAO_SHOPS: not valid JSON "
        "(Expecting property name enclosed in double quotes at line 1 column 3)",
        "  HTTP_PORT: Input should be a valid integer, unable to parse string as an integer",
        "hint: every setting is described in .env.example",
    ]
    assert out == ""


@pytest.mark.parametrize("command", ["run", "check", "backfill"])
@pytest.mark.parametrize("channel", ["Trade-Changed", "trade changed; DROP TABLE trades", "1st", "x" * 64])
async def test_a_notify_channel_that_is_no_identifier_stops_every_command_before_it_starts(
    tmp_path: Path, command: str, channel: str
) -> None:
    # The database is unreachable: a command that got as far as migrating would fail with exit 1.
    env = clean_env() | {
        "TAOBAO_APP_KEY": "k",
        "TAOBAO_APP_SECRET": "s3cr3t",
        "TAOBAO_SHOPS": '[{"nick": "a", "session": "6100secret"}]',
        "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/orders",
        "NOTIFY_CHANNEL": channel,
    }
    extra = ["--shop", "a", "--since", "2026-11-11", "--until", "2026-11-12"] if command == "backfill" else []
    code, out, err = await order_sync(command, *extra, env=env, cwd=tmp_path)
    assert code == 2, err
    # `check` lists it in its checklist on stdout; the others print the settings' problems on stderr.
    said = out if command == "check" else err
    [problem] = [line for line in said.splitlines() if "NOTIFY_CHANNEL" in line]
    assert problem.endswith(
        "NOTIFY_CHANNEL: expected a lower-case PostgreSQL identifier (a-z, 0-9, _; not starting with "
        "a digit; at most 63 characters), like trade_changed"
    ) or problem.endswith("NOTIFY_CHANNEL: String should have at most 63 characters")
    if command != "check":
        assert said.splitlines() == [
            "invalid settings:",
            problem,
            "hint: every setting is described in .env.example",
        ]
    assert channel not in out + err
    assert "Traceback" not in out + err


async def test_run_with_an_unreachable_database_says_so_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = clean_env() | {
        "TAOBAO_APP_KEY": "k",
        "TAOBAO_APP_SECRET": "s3cr3t",
        "TAOBAO_SHOPS": '[{"nick": "a", "session": "6100secret"}]',
        "DATABASE_URL": f"postgresql://ordersync:pa55word@127.0.0.1:{port}/orders",
    }
    code, _out, err = await order_sync("run", env=env, cwd=tmp_path)
    assert code == 1
    lines = err.splitlines()
    assert len(lines) == 2, err
    assert lines[0].startswith("order-sync run: migration failed: ")
    assert "Connect call failed" in lines[0]
    assert lines[1] == "hint: `order-sync check` tests each part of the configuration"
    assert "pa55word" not in err
    assert "6100secret" not in err


async def test_an_http_port_in_use_is_a_one_line_failure() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = Settings(
            _env_file=None,
            taobao_app_key="k",
            taobao_app_secret="s",
            taobao_shops=[{"nick": "a", "session": "x"}],
            http_port=port,
        )
        journal = Journal()
        service = Service(
            settings,
            fetcher=FakeFetcher(journal),
            store=FakeStore(journal),
            channel_factory=lambda handler: FakeChannel(handler, journal, ()),
        )
        with pytest.raises(
            ServiceFailed, match=rf"^cannot listen on 127\.0\.0\.1:{port} \(.+\); set HTTP_HOST/HTTP_PORT$"
        ):
            await service.run()
    assert service.state == "stopped"
