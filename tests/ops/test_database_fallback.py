"""The tests' own PostgreSQL (tests/database_server.py, started as daemon/embedded_db.py starts the
demo's): with nothing at TEST_DATABASE_URL the suite still passes on an embedded server, and that server
never outlives its test run, not even one killed by SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemon.embedded_db import OWNER_FILE, WATCHDOG_FILE, reap_orphans
from tests.integration.harness import ROOT

CLOSED = "postgresql://postgres@127.0.0.1:1/test"  # nothing listens on port 1
WAIT = 30.0


def nested_pytest(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_suite_passes_on_the_embedded_server_when_the_url_does_not_answer() -> None:
    result = nested_pytest("tests/store/test_migrations.py", TEST_DATABASE_URL=CLOSED)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "database: embedded PostgreSQL" in result.stdout
    assert " passed" in result.stdout.splitlines()[-1]


def test_without_the_fallback_an_unanswered_url_fails_the_run() -> None:
    result = nested_pytest(
        "tests/store/test_migrations.py", TEST_DATABASE_URL=CLOSED, TEST_DATABASE_FALLBACK="off"
    )
    assert result.returncode != 0
    assert "TEST_DATABASE_FALLBACK=off" in result.stdout + result.stderr


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_until(condition: object, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.05)


def start_owner(parent: Path) -> tuple[subprocess.Popen[str], Path, int]:
    """A process that starts an embedded server under `parent` and waits to be killed: (process, its run
    directory, the postmaster's pid)."""
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from pathlib import Path\n"
            "from daemon.embedded_db import start_embedded\n"
            "server = start_embedded(Path(sys.argv[1]))\n"
            "print(server.admin_dsn, flush=True)\n"
            "time.sleep(600)\n",
            str(parent),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert owner.stdout is not None
    dsn = owner.stdout.readline()
    assert dsn.startswith("postgresql://"), dsn
    (run,) = parent.glob("run-*")
    postmaster = int((run / "pgdata" / "postmaster.pid").read_text().split("\n", 1)[0])
    assert alive(postmaster)
    return owner, run, postmaster


@pytest.fixture
def parent(outside_basetemp: Path) -> Path:
    directory = outside_basetemp / "servers"  # not under tmp_path: see the fixture
    directory.mkdir()
    return directory


def test_a_run_killed_by_sigkill_leaves_no_server(parent: Path) -> None:
    owner, run, postmaster = start_owner(parent)
    assert int((run / OWNER_FILE).read_text()) == owner.pid
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    wait_until(lambda: not alive(postmaster), "the watchdog stopped the orphaned server")
    wait_until(lambda: not run.exists(), "the watchdog removed its directory")


def test_the_next_run_reaps_a_server_whose_owner_and_watchdog_were_both_killed(parent: Path) -> None:
    owner, run, postmaster = start_owner(parent)
    watchdog = int((run / WATCHDOG_FILE).read_text())
    os.kill(watchdog, signal.SIGKILL)
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    wait_until(lambda: not alive(watchdog), "the watchdog is gone")
    assert alive(postmaster)  # orphaned: nobody stops it until a later run looks

    assert reap_orphans(parent) == [run]
    assert not alive(postmaster)
    assert not run.exists()
