"""scripts/ensure-postgres on Debian as root, against clusters of its own on free ports: it creates and
readies a cluster where none serves the port, opens trust auth in a fresh cluster that refuses it, and
leaves a cluster that holds data alone (the tests then fall back to their embedded server)."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import ROOT
from tests.ops.processes import free_port

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("pg_createcluster") is None,
    reason="needs root and Debian's postgresql-common (CI has both)",
)
SCRIPT = ROOT / "scripts" / "ensure-postgres"


def version() -> str:
    return sorted(os.listdir("/etc/postgresql"), key=lambda v: [int(p) for p in v.split(".")])[-1]


class Cluster:
    def __init__(self) -> None:
        self.name = f"ost-{uuid.uuid4().hex[:8]}"
        self.port = free_port()

    def create(self) -> None:
        run(["pg_createcluster", "--port", str(self.port), version(), self.name, "--start"])

    def psql(self, sql: str, database: str = "postgres") -> str:
        """As the postgres system user over the unix socket (peer auth): works whatever pg_hba says."""
        result = run(["runuser", "-u", "postgres", "--", "psql", "-X", "-At", "-p", str(self.port),
                      "-d", database, "-c", sql])  # fmt: skip
        return result.stdout.strip()

    def trust_login(self, database: str) -> bool:
        result = subprocess.run(
            ["psql", "-X", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database,
             "-At", "-c", "SELECT 1"],
            capture_output=True, text=True, timeout=30, env={**os.environ, "PGCONNECT_TIMEOUT": "5"},
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        return result.returncode == 0

    def ensure(self) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PGPORT_FOR_TESTS": str(self.port), "PGCLUSTER_FOR_TESTS": self.name}
        return run([str(SCRIPT)], env=env)

    def hba(self) -> str:
        return Path(f"/etc/postgresql/{version()}/{self.name}/pg_hba.conf").read_text()


def run(command: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env,
                            stdin=subprocess.DEVNULL)  # fmt: skip
    assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"
    return result


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    made = Cluster()
    try:
        yield made
    finally:
        subprocess.run(["pg_dropcluster", "--stop", version(), made.name], capture_output=True, timeout=120)


def test_a_port_nobody_serves_gets_a_ready_cluster(cluster: Cluster) -> None:
    assert not cluster.trust_login("postgres")
    result = cluster.ensure()
    assert f"creating cluster {version()}/{cluster.name}" in result.stderr
    assert cluster.trust_login("test")
    # Trust for role postgres only: any other role still needs its password.
    cluster.psql("CREATE ROLE erp LOGIN PASSWORD 'secret'")
    other = subprocess.run(
        ["psql", "-X", "-w", "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "erp", "-d", "test",
         "-c", "SELECT 1"],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert other.returncode != 0
    assert cluster.ensure().stderr == ""  # a second run finds everything in place and says nothing


def test_a_fresh_cluster_that_refuses_trust_is_opened_for_role_postgres(cluster: Cluster) -> None:
    cluster.create()  # Debian's defaults, as `apt-get install postgresql` leaves them: no trust on TCP
    assert not cluster.trust_login("postgres")
    result = cluster.ensure()
    assert "trust auth for role postgres" in result.stderr
    assert "created database test" in result.stderr
    assert cluster.trust_login("test")
    assert cluster.hba().splitlines()[0].startswith("host all postgres 127.0.0.1/32 trust")


def test_a_cluster_holding_data_is_left_alone(cluster: Cluster) -> None:
    cluster.create()
    cluster.psql("CREATE DATABASE erp")
    before = cluster.hba()
    result = cluster.ensure()  # exits 0: the tests fall back to their embedded server
    assert "left as it is" in result.stderr
    assert "embedded PostgreSQL instead" in result.stderr
    assert cluster.hba() == before
    assert not cluster.trust_login("postgres")
