"""Where PostgreSQL's time goes on the initial load's bulk path (store/pg_lines.py), per line.

    .venv/bin/python -m bench.bench_line_merge [--trades 20000] [--batch 2000]
        [--admin-url postgresql://postgres@127.0.0.1:5432/test]

A TOPATS result of `--trades` stand-in trades (seeded, as the stand-in writes it) is loaded chunk by
chunk on one connection into a throwaway database, and each chunk is timed three ways: COPY into the
temporary table alone; COPY and parsing every line into jsonb (what any path that stores `raw` pays);
the whole `load_lines` call (COPY, then the merge with trades, sub-orders, feed and NOTIFY). Prints
microseconds per line for each (the median chunk) on stderr and one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bench_initial_load import DEFAULT_ADMIN_URL
from bench.machine import machine
from bench.scenarios.database import throwaway_database
from simulator.market import Market, MarketConfig
from simulator.top_protocol import FieldSelection
from simulator.topats import _write_zip
from store.migrate import migrate
from store.pg import PgStore
from store.pg_lines import CREATE_LINES, copy_text, load_lines
from store.pooled import Pooled
from taobao.fields import FULLINFO_FIELDS
from taobao.topats import iter_line_chunks

PARSE = "SELECT count(*) FROM (SELECT line::jsonb AS doc FROM trade_lines) p WHERE p.doc IS NOT NULL"


async def copy_only(pool: Pooled, lines: list[bytes], parse: bool) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(CREATE_LINES)
        await conn.copy_to_table("trade_lines", source=io.BytesIO(copy_text(lines)), columns=["line"])
        if parse:
            await conn.fetchval(PARSE)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "result.zip"
        market = Market(MarketConfig(seed=5, shops=1, history_trades=args.trades, rate=0))
        payloads = [record.current for record in market.records()]
        _write_zip(market, payloads, FieldSelection(FULLINFO_FIELDS), path)
        chunks = [chunk.lines for chunk in iter_line_chunks(path, args.batch)]
    timings: dict[str, list[float]] = {"copy": [], "copy_and_parse": [], "load_lines": []}
    async with throwaway_database(args.admin_url, "bench_lines") as (dsn, _):
        await migrate(dsn)
        store = await PgStore.connect(dsn, max_size=2)
        pool = Pooled(store.pool)
        try:
            for lines in chunks:
                started = time.perf_counter()
                await copy_only(pool, lines, parse=False)
                copied = time.perf_counter()
                await copy_only(pool, lines, parse=True)
                parsed = time.perf_counter()
                await load_lines(pool, lines, source="bench", channel="bench")
                loaded = time.perf_counter()
                for name, seconds in (
                    ("copy", copied - started),
                    ("copy_and_parse", parsed - copied),
                    ("load_lines", loaded - parsed),
                ):
                    timings[name].append(seconds / len(lines) * 1e6)
        finally:
            await store.close()
    return {name: round(statistics.median(values), 1) for name, values in timings.items()} | {
        "lines": sum(len(c) for c in chunks)
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_line_merge", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--trades", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL)
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"benchmark": "line_merge", "machine": machine()}
    results["us_per_line"] = asyncio.run(measure(args))
    results["machine"]["load_1m_after"] = machine()["load_1m"]
    per = results["us_per_line"]
    print(
        f"{per['lines']:,} lines, µs per line (median chunk): COPY {per['copy']}, COPY + jsonb parse "
        f"{per['copy_and_parse']}, whole load_lines {per['load_lines']}",
        file=sys.stderr,
    )
    print(json.dumps(results, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
