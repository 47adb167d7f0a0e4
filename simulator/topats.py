"""The legacy asynchronous initial-load APIs (docs/top-api.md#topats): `taobao.topats.trades.sold.get` creates
a task, `taobao.topats.result.get` reports new → doing → done and, when done, a single-use download URL
and the lower-case MD5 of a zip holding one `{"trade_fullinfo_get_response":{"trade":{…}}}` line per
trade created in the range.

The zip is written to a temporary file in a worker thread, streamed, so 100k trades cost neither the
event loop nor much memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from simulator.clock import whole_seconds
from simulator.market import Market
from simulator.top_protocol import FieldSelection, TopError, dump_json, invalid, parse_int, require
from simulator.trade_index import Payload
from simulator.trade_values import top_time
from taobao.timefmt import GMT8

logger = logging.getLogger(__name__)

TOPATS_SOLD_GET = "taobao.topats.trades.sold.get"
# The result file's name inside the zip is not documented (docs/top-api.md#unknowns).
ENTRY_NAME = "trades.txt"


@dataclass
class TopatsTask:
    task_id: int
    shop: int
    created: int  # epoch seconds (server clock)
    created_at: float  # monotonic
    path: Path | None = None
    check_code: str | None = None
    failed: bool = False
    builder: asyncio.Task[None] | None = field(default=None, repr=False)


@dataclass
class TopatsTimings:
    """How long a task stays `new`, then `doing` (at least; it is `done` only once its file exists)."""

    new_seconds: float = 0.2
    doing_seconds: float = 0.3


class TopatsService:
    def __init__(
        self,
        market: Market,
        timings: TopatsTimings | None = None,
        seed: int = 0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._market = market
        self.timings = timings or TopatsTimings()
        self.monotonic = monotonic
        self._rng = random.Random(seed)
        self._tasks: dict[int, TopatsTask] = {}
        self._downloads: dict[str, int] = {}
        self._next_id = 200_000_000 + self._rng.randrange(10**8)
        self._dir: Path | None = None

    def _workdir(self) -> Path:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="standin-topats-"))
        return self._dir

    async def close(self) -> None:
        for task in self._tasks.values():
            if task.builder is not None and not task.builder.done():
                task.builder.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task.builder
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    # ----- taobao.topats.trades.sold.get -------------------------------------------------------------

    def create(self, shop: int, now: int, params: Mapping[str, str]) -> dict[str, Any]:
        selection = FieldSelection(require(params, "fields"))
        start_day = _parse_day(params, "start_time")
        end_day = _parse_day(params, "end_time")
        today = datetime.fromtimestamp(now, GMT8).date()
        # "previous 90 days … yesterday" (docs/top-api.md#topats).
        if start_day < today - timedelta(days=90):
            raise invalid("start_time", "start_time只能是前90天内")
        if end_day >= today:
            raise invalid("end_time", "end_time最大只能是昨天")
        if start_day > end_day:
            raise invalid("start_time", "start_time不能大于end_time")
        start = whole_seconds(datetime(start_day.year, start_day.month, start_day.day, tzinfo=GMT8))
        end_date = end_day + timedelta(days=1)
        end = whole_seconds(datetime(end_date.year, end_date.month, end_date.day, tzinfo=GMT8)) - 1
        self._next_id += 1
        task = TopatsTask(task_id=self._next_id, shop=shop, created=now, created_at=self.monotonic())
        self._tasks[task.task_id] = task
        # Snapshot the versions now, in the loop; the thread then only reads immutable payloads.
        payloads = [rec.current for rec in self._market.created_between(shop, start, end)]
        path = self._workdir() / f"{task.task_id}.zip"
        task.builder = asyncio.get_running_loop().create_task(
            self._build(task, payloads, selection, path), name=f"topats-build-{task.task_id}"
        )
        return {"task": {"task_id": task.task_id, "created": top_time(now)}}

    async def _build(
        self, task: TopatsTask, payloads: list[Payload], selection: FieldSelection, path: Path
    ) -> None:
        try:
            task.check_code = await asyncio.to_thread(_write_zip, self._market, payloads, selection, path)
            task.path = path
        except Exception:
            task.failed = True
            logger.exception("topats file build failed", extra={"action": "topats_build_failed"})

    # ----- taobao.topats.result.get ------------------------------------------------------------------

    def result(self, shop: int, params: Mapping[str, str], url_base: str) -> dict[str, Any]:
        require(params, "task_id")
        task_id = parse_int(params, "task_id")
        task = self._tasks.get(task_id or 0)
        # Only the creating app may read a task; with one app here that means the creating shop.
        if task is None or task.shop != shop:
            raise invalid("task_id", "任务不存在")
        if task.failed:
            raise TopError(15, "Remote Service Error", "isp.service-error", "任务执行失败")
        status = self.status(task)
        if status != "done":
            return {"task": {"task_id": task.task_id, "status": status}}
        token = f"{self._rng.getrandbits(128):032x}"
        self._downloads[token] = task.task_id
        return {
            "task": {
                "task_id": task.task_id,
                "status": "done",
                "created": top_time(task.created),
                "method": TOPATS_SOLD_GET,
                "download_url": f"{url_base}/__standin/topats/download/{token}",
                "check_code": task.check_code,
            }
        }

    def status(self, task: TopatsTask) -> str:
        age = self.monotonic() - task.created_at
        if age < self.timings.new_seconds:
            return "new"
        if task.path is None or age < self.timings.new_seconds + self.timings.doing_seconds:
            return "doing"
        return "done"

    def task(self, task_id: int) -> TopatsTask | None:
        return self._tasks.get(task_id)

    def claim_download(self, token: str) -> TopatsTask | None:
        """The task behind a download token; each token works once (docs/top-api.md#topats)."""
        task_id = self._downloads.pop(token, None)
        return None if task_id is None else self._tasks.get(task_id)


def _parse_day(params: Mapping[str, str], name: str) -> Any:
    value = require(params, name)
    try:
        return datetime.strptime(value, "%Y%m%d").date()
    except ValueError:
        raise invalid(name, f"{name}格式应为yyyyMMdd") from None


def _write_zip(market: Market, payloads: list[Payload], selection: FieldSelection, path: Path) -> str:
    """Write the result zip; return the lower-case MD5 hex of the file. Lines are plain JSON: control
    characters inside strings stay escaped, or a buyer message's newline would split its line."""
    with (
        zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive,
        archive.open(ENTRY_NAME, "w", force_zip64=True) as entry,
    ):
        batch: list[str] = []
        for payload in payloads:
            trade = selection.apply(market.materialize(payload))
            line = {"trade_fullinfo_get_response": {"trade": trade}}
            batch.append(dump_json(line, raw_control_chars=False))
            if len(batch) >= 1000:
                entry.write(("\n".join(batch) + "\n").encode("utf-8"))
                batch.clear()
        if batch:
            entry.write(("\n".join(batch) + "\n").encode("utf-8"))
    digest = hashlib.md5()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_zip_lines(data: bytes) -> list[dict[str, Any]]:
    """Decode a result zip (for tests and tools): every line of every entry, parsed leniently."""
    import io

    decoder = json.JSONDecoder(strict=False)
    out: list[dict[str, Any]] = []
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for name in archive.namelist():
            for line in archive.read(name).decode("utf-8").split("\n"):
                if line.strip():
                    out.append(decoder.decode(line))
    return out
