"""Store throughput and doorbell latency on this machine; prints one JSON object.

    .venv/bin/python -m bench.bench_store [--admin-url postgresql://postgres@127.0.0.1:5432/test]

Creates a throwaway database on the server of `--admin-url` (default: $TEST_DATABASE_URL or the local
test server), applies the migrations, measures, and drops it. Every phase stops after `--budget`
seconds, so the whole run is bounded (about 6 x budget plus setup).

Figures:
- upsert: trades per second through `PgStore.apply_trades` for batches of 1, 50 and 1000, one writer,
  each trade with 3 sub-orders: `insert` (new tids), `update` (newer `modified`: orders replaced,
  feed row, NOTIFY) and `unchanged` (same version again: the guard says no, nothing is written).
- concurrent: 8 writers, batches of 50, updates: how the commit-ordered counter row scales.
- prepare: validation + canonical JSON + hash per second in Python alone (no database).
- notify_latency_ms: single-trade transactions; time from sending COMMIT to the notification arriving
  on a LISTEN connection (p50/p99/max), and the COMMIT round trip for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from store.migrate import migrate
from store.pg import PgStore
from store.schema import connection_settings
from store.upsert import apply_batch
from store.validation import prepare_batch
from taobao.models import Trade
from taobao.timefmt import GMT8, format_top_time

DEFAULT_ADMIN_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
BASE = datetime(2024, 11, 11, tzinfo=GMT8)
CHANNEL = "trade_changed"


def _trade(tid: int, version: int) -> Trade:
    modified = format_top_time(BASE + timedelta(seconds=version))
    return Trade.model_validate(
        {
            "tid": tid,
            "seller_nick": "bench-shop",
            "buyer_nick": "buyer",
            "status": "WAIT_SELLER_SEND_GOODS",
            "type": "fixed",
            "created": format_top_time(BASE),
            "modified": modified,
            "pay_time": modified,
            "payment": "129.00",
            "total_fee": "129.00",
            "post_fee": "0.00",
            "receiver_address": "浙江省杭州市余杭区文一西路969号",
            "orders": {
                "order": [
                    {
                        "oid": (tid % 10**17) * 10 + i,
                        "status": "WAIT_SELLER_SEND_GOODS",
                        "refund_status": "NO_REFUND",
                        "title": f"商品 {i} 测试标题",
                        "num": 1,
                        "num_iid": 600000 + i,
                        "price": "43.00",
                        "payment": "43.00",
                        "total_fee": "43.00",
                    }
                    for i in range(3)
                ]
            },
        }
    )


async def _throughput(store: PgStore, batches: Iterable[Sequence[Trade]], budget: float) -> dict[str, Any]:
    """Apply batches until `budget` seconds were spent inside apply_trades (building the trades is not
    timed)."""
    applied = 0
    elapsed = 0.0
    for batch in batches:
        started = time.perf_counter()
        await store.apply_trades(batch, source="bench")
        elapsed += time.perf_counter() - started
        applied += len(batch)
        if elapsed > budget:
            break
    return {"trades": applied, "seconds": round(elapsed, 3), "trades_per_second": round(applied / elapsed)}


def _batches(tids: Sequence[int], size: int, version: int) -> Iterator[list[Trade]]:
    for i in range(0, len(tids), size):
        yield [_trade(t, version) for t in tids[i : i + size]]


async def _upsert_figures(store: PgStore, tids: itertools.count[int], budget: float) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for size, count in ((1, 2000), (50, 20_000), (1000, 40_000)):
        block = [next(tids) for _ in range(count)]
        row = {"insert": await _throughput(store, _batches(block, size, 0), budget)}
        # Updates and no-ops only for the trades the insert phase got to.
        block = block[: row["insert"]["trades"]]
        row["update"] = await _throughput(store, _batches(block, size, 1), budget)
        block = block[: row["update"]["trades"]]
        row["unchanged"] = await _throughput(store, _batches(block, size, 1), budget)
        figures[f"batch_{size}"] = row
    return figures


async def _concurrent_figures(store: PgStore, tids: itertools.count[int], budget: float) -> dict[str, Any]:
    writers, size, per_writer = 8, 50, 2500
    blocks = [[next(tids) for _ in range(per_writer)] for _ in range(writers)]
    for block in blocks:
        for batch in _batches(block, 1000, 0):
            await store.apply_trades(batch, source="bench")
    # Trades built up front: with 8 writers the wall clock is what counts.
    work = [list(_batches(block, size, 1)) for block in blocks]
    started = time.perf_counter()
    results = await asyncio.gather(*(_throughput(store, w, budget) for w in work))
    elapsed = time.perf_counter() - started
    applied = sum(r["trades"] for r in results)
    return {
        "writers": writers,
        "batch": size,
        "trades": applied,
        "seconds": round(elapsed, 3),
        "trades_per_second": round(applied / elapsed),
    }


def _prepare_figure(budget: float) -> dict[str, Any]:
    trades = [_trade(t, 0) for t in range(1000)]
    done = 0
    started = time.perf_counter()
    while time.perf_counter() - started < min(budget, 1.0):
        prepare_batch(trades)
        done += len(trades)
    elapsed = time.perf_counter() - started
    return {"trades_per_second": round(done / elapsed)}


async def _notify_latency(dsn: str, tids: itertools.count[int], budget: float) -> dict[str, Any]:
    listener = await asyncpg.connect(dsn)
    writer = await asyncpg.connect(dsn, server_settings=connection_settings())
    arrived: asyncio.Queue[float] = asyncio.Queue()

    def on_notify(*_: Any) -> None:
        arrived.put_nowait(time.perf_counter())

    await listener.add_listener(CHANNEL, on_notify)
    latencies: list[float] = []
    round_trips: list[float] = []
    started = time.perf_counter()
    try:
        while len(latencies) < 2000 and time.perf_counter() - started < budget:
            tx = writer.transaction()
            await tx.start()
            await apply_batch(writer, [_trade(next(tids), 0)], source="bench", channel=CHANNEL)
            sent = time.perf_counter()
            await tx.commit()
            round_trips.append(time.perf_counter() - sent)
            latencies.append(await asyncio.wait_for(arrived.get(), 10) - sent)
    finally:
        await listener.close()
        await writer.close()
    return {
        "samples": len(latencies),
        "p50": _ms(_percentile(latencies, 50)),
        "p99": _ms(_percentile(latencies, 99)),
        "max": _ms(max(latencies)),
        "commit_round_trip_p50": _ms(_percentile(round_trips, 50)),
    }


def _percentile(values: Sequence[float], pct: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1] if len(values) > 1 else values[0]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


async def run(admin_url: str, budget: float) -> dict[str, Any]:
    name = f"tos_bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        version = await admin.fetchval("SHOW server_version")
        settings = {
            row["name"]: row["setting"]
            for row in await admin.fetch(
                "SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit')"
            )
        }
    finally:
        await admin.close()
    dsn = f"{admin_url.rpartition('/')[0]}/{name}"
    tids = itertools.count(2899536456494937165, 1)
    try:
        await migrate(dsn)
        store = await PgStore.connect(dsn, min_size=1, max_size=8)
        try:
            upsert = await _upsert_figures(store, tids, budget)
            concurrent = await _concurrent_figures(store, tids, budget)
        finally:
            await store.close()
        notify = await _notify_latency(dsn, tids, budget)
    finally:
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
    return {
        "postgres": version,
        "settings": settings,
        "cpus": os.cpu_count(),
        "orders_per_trade": 3,
        "upsert": upsert,
        "concurrent": concurrent,
        "prepare": _prepare_figure(budget),
        "notify_latency_ms": notify,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL)
    parser.add_argument("--budget", type=float, default=4.0, help="seconds per measured phase")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.admin_url, args.budget)), indent=2))


if __name__ == "__main__":
    main()
