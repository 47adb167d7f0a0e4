"""Initial-load throughput: a shop's three-month history through TOPATS into PostgreSQL (trades/s).

    .venv/bin/python -m bench.bench_initial_load [--trades 100000] [--days 90] [--method topats]
        [--batch 2000] [--writers 2] [--api-rate 400] [--latency-ms 0] [--admin-url postgresql://postgres@127.0.0.1:5432/test]

The stand-in runs in its own process (`python -m simulator`) with one shop and `--trades` history
trades; this process runs the reconciler's initial load exactly as `order-sync initial-load` does
(TOPATS tasks of at most 30 days, polled, downloaded with check_code verified, loaded in chunks of
`--batch` lines through the bulk path, `--writers` chunks in flight) into a throwaway database.
`--method sold_get` measures the fallback instead (day by day sold.get + one fullinfo per trade,
bound by `--api-rate`).

Figures: wall time; time waiting for the export tasks; download time and size; load time (parse +
apply, the part this service controls); trades per second over the load and over the whole run.
Prints one JSON object on stdout and a summary line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from bench.machine import machine
from bench.scenarios.database import throwaway_database
from reconciler.backfill import BackfillConfig
from reconciler.config import ReconcilerConfig
from reconciler.load_plan import InitialLoadConfig
from reconciler.progress import Progress
from reconciler.reconciler import Reconciler
from store.migrate import migrate
from store.pg import PgStore
from store.pg_reconciler import pg_reconciler_store
from taobao.client import TopClient
from taobao.limiter import TopRateLimiter
from taobao.models import TopatsTask

DEFAULT_ADMIN_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
ROOT = Path(__file__).resolve().parents[1]


class TimedClient(TopClient):
    """Adds up the time spent in TOPATS downloads and in polling for task results."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.download_s = 0.0
        self.downloaded_bytes = 0

    async def download_topats_result(self, url: str, dest: Any, *, check_code: str | None) -> None:
        started = time.monotonic()
        await super().download_topats_result(url, dest, check_code=check_code)
        self.download_s += time.monotonic() - started
        self.downloaded_bytes += await asyncio.to_thread(lambda: Path(dest).stat().st_size)


async def start_standin(args: argparse.Namespace) -> tuple[asyncio.subprocess.Process, dict[str, Any]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simulator", "--seed", "5", "--shops", "1", "--rate", "0",
        "--history", str(args.trades), "--history-days", str(args.days), "--latency-ms", str(args.latency_ms),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 300)
    return process, json.loads(line)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    client: TimedClient
    process, info = await start_standin(args)
    try:
        shop = info["shops"][0]
        async with throwaway_database(args.admin_url, "bench_initial") as (dsn, _):
            await migrate(dsn)
            store = await PgStore.connect(dsn, max_size=8)
            try:
                client = TimedClient(
                    app_key=info["app_key"],
                    app_secret=SecretStr(info["app_secret"]),
                    api_url=info["api_url"],
                    limiter=TopRateLimiter(args.api_rate),
                )
                try:
                    return await load(args, store, client, shop)
                finally:
                    await client.close()
            finally:
                await store.close()
    finally:
        process.terminate()
        await process.wait()


async def load(
    args: argparse.Namespace, store: PgStore, client: TimedClient, shop: dict[str, Any]
) -> dict[str, Any]:
    config = ReconcilerConfig(
        replica="bench",
        backfill=BackfillConfig(concurrency=args.concurrency),
        initial_load=InitialLoadConfig(
            poll_seconds=1.0, first_poll_seconds=0.1, batch=args.batch, writers=args.writers
        ),
    )
    waited = [0.0]
    poll = client.topats_result_get

    async def timed_poll(task_id: int, **kwargs: Any) -> TopatsTask:
        started = time.monotonic()
        try:
            return await poll(task_id, **kwargs)
        finally:
            waited[0] += time.monotonic() - started

    client.topats_result_get = timed_poll  # type: ignore[method-assign]

    async def timed_sleep(seconds: float) -> None:
        started = time.monotonic()
        await asyncio.sleep(seconds)
        waited[0] += time.monotonic() - started

    reconciler = Reconciler(
        config=config,
        client=client,
        storage=pg_reconciler_store(store, replica=config.replica),
        shops={shop["nick"]: SecretStr(shop["session"])},
        sleep=timed_sleep,
    )
    loader = reconciler.loader
    await loader.begin(shop["nick"], args.days)
    if args.method == "sold_get":
        await loader.switch_to_sold_get(shop["nick"])
    progress = Progress.for_terminal(f"initial load of {shop['nick']}", shop=shop["nick"])
    started = time.monotonic()
    state = await loader.run(shop["nick"], shop["session"], progress=progress)
    wall = time.monotonic() - started
    progress.done()
    rows = await store.pool.fetchval("SELECT count(*) FROM trades")
    loading = max(wall - waited[0] - client.download_s, 1e-9)
    return {
        "method": state.method,
        "trades": state.trades,
        "rows_in_database": rows,
        "wall_s": round(wall, 2),
        "task_wait_s": round(waited[0], 2),
        "download_s": round(client.download_s, 2),
        "download_mb": round(client.downloaded_bytes / 1e6, 1),
        "load_s": round(loading, 2),
        "trades_per_s_load": round(state.trades / loading),
        "trades_per_s_overall": round(state.trades / wall),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_initial_load", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--trades", type=int, default=100_000, help="history trades of the shop")
    parser.add_argument("--days", type=int, default=90, help="days of history (1-90)")
    parser.add_argument("--method", choices=("topats", "sold_get"), default="topats")
    parser.add_argument(
        "--api-rate", type=float, default=400.0, help="SYNC_API_RATE (sold_get is bound by it)"
    )
    parser.add_argument("--concurrency", type=int, default=32, help="fullinfo calls in flight (sold_get)")
    defaults = InitialLoadConfig()
    parser.add_argument("--batch", type=int, default=defaults.batch, help="lines per chunk")
    parser.add_argument("--writers", type=int, default=defaults.writers, help="chunks in flight")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="the stand-in's added latency per call")
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL)
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"benchmark": "initial_load", "machine": machine()}
    results |= asyncio.run(measure(args))
    results["machine"]["load_1m_after"] = machine()["load_1m"]
    print(
        f"initial load of {results['trades']:,} trades by {results['method']}: {results['wall_s']} s "
        f"({results['task_wait_s']} s waiting for the export, {results['download_s']} s downloading "
        f"{results['download_mb']} MB, {results['load_s']} s loading = "
        f"{results['trades_per_s_load']:,} trades/s)",
        file=sys.stderr,
    )
    print(json.dumps(results, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
