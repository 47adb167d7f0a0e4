"""The built image, run as users run it: its entrypoint, command, user, environment and HEALTHCHECK from
the image's own configuration, on its own filesystem, read-only but for a writable /tmp.

No container can be started on the CI machine (the OCI runtime's setrlimit is refused), so the image's
filesystem is mounted (`podman image mount`) and each process runs in it through chroot as the image's
user, in a mount namespace of its own (host network: PostgreSQL and the ports are on 127.0.0.1). The
stand-in runs from the image too, as the compose demo runs it. CI builds the image (scripts/build-image)
and names it in ORDER_SYNC_IMAGE; there this test must run, elsewhere it is skipped without one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.ops.processes import (
    Process,
    daemon_environment,
    eventually,
    fetch,
    free_port,
    required,
    start_standin,
)

IMAGE = os.environ.get("ORDER_SYNC_IMAGE", "")
SYNC_SECONDS = 120.0
# Runs "$@" in the image at $2 as user $3 from directory $4, with $1 as its /tmp and the host's /dev.
IN_IMAGE = (
    "tmp=$1 root=$2 user=$3 dir=$4; shift 4; "
    'mount --bind "$tmp" "$root/tmp" && mount --rbind /dev "$root/dev" '
    '&& exec chroot --userspec="$user" "$root" /usr/bin/env -i -C "$dir" "$@"'
)


@dataclass
class Image:
    root: Path  # the mounted filesystem, read-only
    config: dict[str, Any]  # the image's Config: User, Env, Entrypoint, Cmd, WorkingDir
    healthcheck: list[str]
    tmp: Path  # the writable directory the processes see as /tmp

    @property
    def workdir(self) -> str:
        # Buildah leaves creating WORKDIR to the runtime, which does it at container start; a chroot
        # cannot, so where the image lacks it the process starts in / (the daemon reads nothing there).
        wanted = str(self.config.get("WorkingDir") or "/")
        return wanted if (self.root / wanted.lstrip("/")).is_dir() else "/"

    def command(self, argv: Sequence[str], env: dict[str, str]) -> list[str]:
        """`argv` in the image, with the image's environment overlaid by `env`."""
        environment = dict(item.split("=", 1) for item in self.config.get("Env", []))
        environment.update(env)
        return [
            "unshare", "--mount", "--propagation", "private", "sh", "-c", IN_IMAGE, "sh",
            str(self.tmp), str(self.root), self.config["User"], self.workdir,
            *(f"{k}={v}" for k, v in environment.items()), *argv,
        ]  # fmt: skip

    @property
    def entrypoint(self) -> list[str]:
        return list(self.config.get("Entrypoint") or [])


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Image]:
    required(bool(IMAGE), "no image to run: build one with scripts/build-image, name it in ORDER_SYNC_IMAGE")
    required(
        os.geteuid() == 0 and shutil.which("podman") is not None, "running the image needs root and podman"
    )
    inspected = json.loads(podman("image", "inspect", IMAGE))[0]
    root = Path(podman("image", "mount", IMAGE).strip())
    tmp = tmp_path_factory.mktemp("image-tmp")
    tmp.chmod(0o1777)
    try:
        yield Image(root, inspected["Config"], inspected["Healthcheck"]["Test"], tmp)
    finally:
        podman("image", "unmount", IMAGE)


def podman(*args: str) -> str:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


def test_the_image_runs_as_configured(image: Image) -> None:
    assert image.config["User"] == "10001:10001"
    assert image.entrypoint == ["order-sync"]
    assert image.config["Cmd"] == ["run"]
    assert image.healthcheck[0] == "CMD"
    with pytest.raises(OSError, match="Read-only"):
        (image.root / "probe").write_text("")


async def test_the_image_syncs_the_standin_and_answers_its_healthcheck(
    image: Image, fresh_database: str, tmp_path: Path
) -> None:
    required(urlsplit(fresh_database).hostname == "127.0.0.1", "the image reaches PostgreSQL over TCP only")
    standin, info = await start_standin(
        image.command(image.entrypoint, {}), tmp_path,
        "--seed", "5", "--shops", "2", "--rate", "0", "--history", "100",
    )  # fmt: skip
    http_port = free_port()
    # HTTP_HOST: loopback here, where the host's network is shared; a container's own 0.0.0.0 otherwise.
    env = daemon_environment(info, fresh_database, http_port)
    daemon = Process("daemon", image.command([*image.entrypoint, *image.config["Cmd"]], env), tmp_path)
    try:
        await daemon.start()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            async with http.get(info["truth_url"], params={"digest": "0"}) as response:
                truth = {int(tid) for tid in (await response.json())["trades"]}

            async def synced() -> bool:
                rows = await fetch(fresh_database, "SELECT tid FROM trades") if await migrated() else []
                return {row["tid"] for row in rows} == truth

            async def migrated() -> bool:
                rows = await fetch(fresh_database, "SELECT to_regclass('trades') IS NOT NULL AS ok")
                return bool(rows[0]["ok"])

            async def ready() -> bool:
                try:
                    async with http.get(f"http://127.0.0.1:{http_port}/readyz") as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            await eventually(
                synced, SYNC_SECONDS, f"the database holds the stand-in's {len(truth)} trades", daemon
            )
            await eventually(ready, 30, "/readyz answers 200", daemon)

        assert uid_of(daemon.pid) == 10001
        health = Process("healthcheck", image.command(image.healthcheck[1:], env), tmp_path)
        await health.start()
        assert await health.stop(sig=None, within=30) == 0, health.tail()
        assert await daemon.stop() == 0, daemon.tail()  # SIGTERM, the image's STOPSIGNAL: a graceful stop
        after = Process("healthcheck-after", image.command(image.healthcheck[1:], env), tmp_path)
        await after.start()
        assert await after.stop(sig=None, within=30) != 0  # and it does tell a dead daemon
    finally:
        await daemon.stop()
        await standin.stop()

    logs = [json.loads(line) for line in daemon.stderr_path.read_text().splitlines() if line.startswith("{")]
    assert logs, daemon.tail()
    assert all("action" in entry for entry in logs)  # LOG_FORMAT=json from the image's environment
    assert len(truth) == 100
