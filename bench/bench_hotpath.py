"""What one change costs the daemon, step by step, against the floor of each step's I/O; prints JSON.

    .venv/bin/python -m bench.bench_hotpath [--trades 300] [--rounds 3] [--admin-url DSN]

One trade at a time, as a shop's steady stream arrives (nothing batches), the CPU time of this
thread (`time.thread_time()`: user + system, the kernel's share of each socket call included) per
operation, the best of `--rounds` rounds:

- `floor_pg_round_trip`: `SELECT 1` on an open asyncpg connection, the least a commit can cost;
- `floor_pool_round_trip`: the same through the store's pool (acquire, statement, release);
- `floor_http_post`: a bare aiohttp POST to the stand-in's gateway, the least a fullinfo call can cost;
- `fetch`: `TopClient.trade_fullinfo` (limiter, signing, the app-wide pause, the request, the answer
  parsed and validated);
- `prepare`: `store.validation.prepare_batch` of one trade (checks, canonical JSON, hash);
- `commit_new`: `PgStore.apply_trades` of one trade not stored yet (prepare, the one-statement commit
  with its feed row and NOTIFY, the pool), first round only; `commit_unchanged`: the same trade
  again (the guard keeps the stored one), best of the later rounds.

The stand-in runs on its own event loop in another thread, so its CPU is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import asyncpg
from pydantic import SecretStr

from bench.bench_e2e import DEFAULT_ADMIN_URL
from bench.scenarios.database import throwaway_database
from simulator.standin import StandIn, StandInConfig
from store.migrate import migrate
from store.pg import PgStore
from store.validation import prepare_batch
from taobao.client import TopClient
from taobao.limiter import Priority, TopRateLimiter
from taobao.models import Trade


def _standin_thread(trades: int) -> StandIn:
    started = threading.Event()
    holder: list[StandIn] = []

    def serve() -> None:
        loop = asyncio.new_event_loop()
        standin = StandIn(StandInConfig(seed=5, shops=3, market_rate=0, history_trades=trades))
        loop.run_until_complete(standin.start())
        holder.append(standin)
        started.set()
        loop.run_forever()

    threading.Thread(target=serve, name="standin", daemon=True).start()
    if not started.wait(60):
        raise RuntimeError("the stand-in did not start")
    return holder[0]


async def _per_op(count: int, op: Callable[[int], Awaitable[Any]]) -> float:
    """Microseconds of this thread's CPU per call of `op(i)`."""
    started = time.thread_time()
    for i in range(count):
        await op(i)
    return (time.thread_time() - started) / count * 1e6


async def _round(
    n: int, dsn: str, standin: StandIn, work: list[tuple[int, str]], client: TopClient, store: PgStore
) -> dict[str, float]:
    figures: dict[str, float] = {}
    conn = await asyncpg.connect(dsn)
    try:
        figures["floor_pg_round_trip"] = await _per_op(n, lambda _: conn.fetchval("SELECT 1"))
    finally:
        await conn.close()

    async def pooled(_: int) -> None:
        async with store.pool.acquire() as c:
            await c.fetchval("SELECT 1")

    figures["floor_pool_round_trip"] = await _per_op(n, pooled)
    async with aiohttp.ClientSession() as http:

        async def post(_: int) -> None:
            async with http.post(standin.api_url, data=b"method=taobao.time.get") as resp:
                await resp.read()

        figures["floor_http_post"] = await _per_op(n, post)
    trades: list[Trade] = []

    async def fetch(i: int) -> None:
        tid, session = work[i]
        trades.append(await client.trade_fullinfo(session, tid, priority=Priority.STREAM))

    figures["fetch"] = await _per_op(len(work), fetch)
    figures["prepare"] = await _per_op(len(trades), lambda i: _sync(prepare_batch, [trades[i]]))
    figures["commit"] = await _per_op(len(trades), lambda i: store.apply_trades([trades[i]], source="stream"))
    return figures


async def _sync(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


async def run(admin_url: str, trades: int, rounds: int) -> dict[str, Any]:
    standin = _standin_thread(trades)
    sessions = {shop.nick: shop.session for shop in standin.shops}
    nicks = [shop.nick for shop in standin.shops]
    work = [(record.tid, sessions[nicks[record.shop]]) for record in standin.market.records()][:trades]
    async with throwaway_database(admin_url, "bench_hotpath") as (dsn, _):
        await migrate(dsn)
        store = await PgStore.connect(dsn)
        client = TopClient(
            app_key=standin.app_key,
            app_secret=SecretStr(standin.app_secret),
            api_url=standin.api_url,
            limiter=TopRateLimiter(100_000),
        )
        try:
            # Round 1 inserts; later rounds store the same versions again (the guard keeps them).
            results = [await _round(len(work), dsn, standin, work, client, store) for _ in range(rounds)]
        finally:
            await client.close()
            await store.close()
    best = {key: round(min(r[key] for r in results), 1) for key in results[0]}
    # Only the first round's commits store something new (a feed row and a NOTIFY each).
    best["commit_new"] = round(results[0]["commit"], 1)
    best["commit_unchanged"] = best.pop("commit")
    return {"benchmark": "hotpath", "trades": len(work), "rounds": rounds, "us_cpu_per_op": best}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_hotpath", description=__doc__.split("\n")[0])
    parser.add_argument("--trades", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL)
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(run(args.admin_url, args.trades, args.rounds))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
