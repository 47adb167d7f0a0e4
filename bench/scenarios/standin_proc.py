"""The stand-in as its own process for scenarios and benchmarks: `python -m simulator` (same flags, same
JSON line on stdout, same admin surface) plus two bench-only admin routes.

    python -m bench.scenarios.standin_proc --seed 3 --shops 3 --rate 0 [simulator flags]

* `GET /__bench/published?after=SEQ` → `{"seq": [...], "at": [...]}`: the wall-clock instant (epoch
  seconds, `time.time()`) at which each market change was published on the TMC queue. The truth's
  `modified` has one-second resolution; this is what sub-second publish → ERP lag is measured from. The
  runner stamps arrivals with `time.time()` on the same machine, so both sides read one clock.
* `POST /__bench/burst {"trades": N, "create_window": S, "span": S, "seed": K}` → `{"changes": M}`:
  a Double-11 burst (bench/burst.py): N new trades, each changed 3-4 times within `span` seconds of its
  creation. Answers when the burst is over.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from typing import Any

from aiohttp import web

from bench.burst import run_burst
from simulator import cli as simulator_cli
from simulator.market import MarketChange
from simulator.standin import StandIn

logger = logging.getLogger(__name__)

BENCH_PREFIX = "/__bench"


class PublishClock:
    """Records when each market change was published (the market calls listeners synchronously, right
    after the TMC publish of the same change)."""

    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.times: list[float] = []

    def on_change(self, change: MarketChange) -> None:
        self.seqs.append(change.seq)
        self.times.append(time.time())

    def after(self, seq: int) -> dict[str, list[Any]]:
        # Seqs only grow, so a binary search would do; a linear scan from the end is as simple and the
        # runner asks once at the end of a run.
        start = len(self.seqs)
        while start > 0 and self.seqs[start - 1] > seq:
            start -= 1
        return {"seq": self.seqs[start:], "at": self.times[start:]}


def add_bench_routes(standin: StandIn, clock: PublishClock) -> None:
    async def published(request: web.Request) -> web.Response:
        try:
            after = int(request.query.get("after", "0"))
        except ValueError:
            return web.json_response({"error": "after must be an integer"}, status=400)
        return web.json_response(clock.after(after))

    async def burst(request: web.Request) -> web.Response:
        try:
            body = await request.json()
            trades = int(body.get("trades", 100))
            create_window = float(body.get("create_window", 1.0))
            span = float(body.get("span", 2.0))
            seed = int(body.get("seed", 11))
        except (ValueError, TypeError, AttributeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        made = await run_burst(
            standin.market, trades=trades, create_window=create_window, span=span, seed=seed
        )
        return web.json_response({"changes": made})

    standin.app.router.add_get(BENCH_PREFIX + "/published", published)
    standin.app.router.add_post(BENCH_PREFIX + "/burst", burst)


async def serve(args: argparse.Namespace) -> None:
    config = simulator_cli.config_from_args(args)
    standin = StandIn(config)
    clock = PublishClock()
    standin.add_change_listener(clock.on_change)
    add_bench_routes(standin, clock)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await standin.start(host=args.host, api_port=args.port, tmc_port=args.tmc_port)
        try:
            sys.stdout.write(json.dumps(standin.connection_info(), ensure_ascii=False) + "\n")
            sys.stdout.flush()
            await stop.wait()
        finally:
            await standin.stop()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scenarios.standin_proc", description="The stand-in with bench routes."
    )
    simulator_cli.configure(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
