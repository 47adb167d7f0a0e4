"""How many pushed messages per second one TmcSession decodes and confirms.

The stand-in TMC server runs in a child process (so the session's CPU time is its own), queues N
messages, and reports when its queue is empty, i.e. when every confirm has arrived. Prints one JSON line.

    .venv/bin/python bench/bench_tmc.py [--messages 50000] [--gzip-fraction 0.0] [--max-in-flight 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import multiprocessing.connection
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pydantic import SecretStr

from listener.session import SessionTiming, TmcSession
from simulator.tmc_server import TmcServer, TmcServerConfig
from taobao.tmc.events import TmcMessage

APP_KEY, APP_SECRET = "bench-app", "bench-secret"


def _serve(
    pipe: multiprocessing.connection.Connection, messages: int, gzip_fraction: float, cap: int
) -> None:
    asyncio.run(_serve_async(pipe, messages, gzip_fraction, cap))


async def _serve_async(
    pipe: multiprocessing.connection.Connection, messages: int, gzip_fraction: float, cap: int
) -> None:
    config = TmcServerConfig(gzip_fraction=gzip_fraction, max_in_flight=cap, confirm_timeout=600.0)
    server = TmcServer({APP_KEY: APP_SECRET}, config)
    await server.start()
    published = datetime.now(UTC)
    # The shape of a real taobao_trade_TradeBuyerPay body (docs/tmc-protocol.md#trade-topics).
    body = (
        '{"buyer_nick":"b***","payment":"128.00","oid":%d,'
        '"status":"WAIT_SELLER_SEND_GOODS","tid":%d,"type":"fixed"}'
    )
    for i in range(messages):
        tid = 4_000_000_000_000_000 + i
        server.publish(
            APP_KEY,
            topic="taobao_trade_TradeBuyerPay",
            content=body % (tid + 1, tid),
            nick="bench-shop",
            user_id=2_200_000_000_001,
            time=published,
        )
    pipe.send(server.url)
    await server.wait_drained(APP_KEY)
    pipe.send({"server_cpu_s": time.process_time(), "server_stats": {"confirmed": server.stats.confirmed}})
    await server.stop()


async def _consume(url: str, pipe: multiprocessing.connection.Connection, messages: int) -> dict[str, float]:
    session: TmcSession

    async def handler(message: TmcMessage) -> None:
        await session.confirm(message.id)

    session = TmcSession(
        url=url,
        app_key=APP_KEY,
        app_secret=SecretStr(APP_SECRET),
        handler=handler,
        timing=SessionTiming(pull_interval=5.0),
    )
    loop = asyncio.get_running_loop()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    runner = asyncio.create_task(session.run())
    done = await loop.run_in_executor(None, pipe.recv)  # the server says its queue is empty
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    session.stop()
    await runner
    if session.counters.confirmed != messages:
        raise SystemExit(f"confirmed {session.counters.confirmed} of {messages}")
    return {
        "seconds": round(wall, 3),
        "msgs_per_s": round(messages / wall),
        "session_cpu_s": round(cpu, 3),
        "session_cpu_us_per_msg": round(cpu / messages * 1e6, 1),
        "server_cpu_s": round(float(done["server_cpu_s"]), 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--gzip-fraction", type=float, default=0.0)
    parser.add_argument("--max-in-flight", type=int, default=1000)
    args = parser.parse_args()

    ours, theirs = multiprocessing.Pipe()
    child = multiprocessing.get_context("spawn").Process(
        target=_serve, args=(theirs, args.messages, args.gzip_fraction, args.max_in_flight), daemon=True
    )
    child.start()
    try:
        url = ours.recv()
        figures = asyncio.run(_consume(url, ours, args.messages))
    finally:
        child.join(timeout=10)
        if child.is_alive():
            child.kill()
    result = {
        "benchmark": "tmc_session_decode_and_confirm",
        "messages": args.messages,
        "gzip_fraction": args.gzip_fraction,
        "max_in_flight": args.max_in_flight,
        **figures,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
