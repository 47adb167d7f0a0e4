"""Fault-injected end-to-end scenarios: does every market change reach the database and the ERP?

    .venv/bin/python -m bench.scenario --preset lossy [--size small|standard] [--duration S] [--rate R]
        [--shops N] [--seed K] [--api-rate R] [--admin-url postgresql://postgres@127.0.0.1:5432/test]

Starts the stand-in (a seeded market, ≥ 3 shops) as a child process, a fresh database on the admin
URL's server (an embedded PostgreSQL when none answers), the daemon as a child process
(`python -m listener`) and an independent ERP consumer here (LISTEN + catch-up by position). The market
trades for the duration while the preset's faults are applied (bench/scenarios/presets.py), then stops;
the run settles (polled until the database and the consumer show the truth, or a deadline), and the
database and the consumer's view are compared with the stand-in's truth (bench/scenarios/verdict.py).

Prints ONE JSON line of figures on stdout; exits 1 on any loss (lost, stale, extra, unseen, a trade left
unresolved, a consumer view that differs, or no settle before the deadline), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from bench.scenarios.database import throwaway_database
from bench.scenarios.presets import PRESETS, SIZES, plan
from bench.scenarios.runner import Options, Scenario
from common.exit_codes import EXIT_FAILED, EXIT_OK, EXIT_USAGE

DEFAULT_ADMIN_URL = os.environ.get(
    "TEST_DATABASE_URL", os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=PRESETS, required=True)
    parser.add_argument("--size", choices=sorted(SIZES), default="small", help="default durations and rates")
    parser.add_argument("--duration", type=float, default=None, help="seconds the market trades")
    parser.add_argument("--rate", type=float, default=None, help="market changes per second")
    parser.add_argument("--shops", type=int, default=3, help="shops (at least 3)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--history", type=int, default=300, help="trades that exist before the run")
    parser.add_argument("--api-rate", type=float, default=200.0, help="the daemon's SYNC_API_RATE")
    parser.add_argument("--outage", type=float, default=20.0, help="TMC outage length in lossy (seconds)")
    parser.add_argument("--settle-timeout", type=float, default=None, help="default: from the preset")
    parser.add_argument(
        "--admin-url", default=DEFAULT_ADMIN_URL, help="server the throwaway database lives on"
    )
    parser.add_argument(
        "--keep-logs", type=Path, default=None, help="keep the processes' logs in this folder"
    )
    parser.add_argument("--daemon-log-level", default="WARNING")


async def _run(args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    scenario_plan = plan(args.preset, args.size, args.duration, args.rate, args.outage)
    options = Options(
        seed=args.seed, shops=args.shops, history=args.history, api_rate=args.api_rate,
        settle_timeout=args.settle_timeout, log_level=args.daemon_log_level,
    )  # fmt: skip
    async with throwaway_database(args.admin_url, f"scenario_{args.preset}") as (dsn, admin_dsn):
        scenario = Scenario(scenario_plan, options, dsn, admin_dsn, workdir)
        figures = await scenario.run()
    if not figures["ok"]:
        print("scenario failed; samples: " + json.dumps(scenario.samples), file=sys.stderr)
    for log in scenario.crash_logs:  # a daemon that exited unasked is worth reading about, pass or fail
        print(log, file=sys.stderr)
    return figures


def run(args: argparse.Namespace) -> int:
    if args.shops < 3:
        print("bench.scenario: --shops must be at least 3", file=sys.stderr)
        return EXIT_USAGE
    started = time.monotonic()
    try:
        if args.keep_logs is not None:
            args.keep_logs.mkdir(parents=True, exist_ok=True)
            figures = asyncio.run(_run(args, args.keep_logs))
        else:
            with tempfile.TemporaryDirectory(prefix="scenario-") as workdir:
                figures = asyncio.run(_run(args, Path(workdir)))
    except ValueError as exc:
        print(f"bench.scenario: {exc}", file=sys.stderr)
        return EXIT_USAGE
    figures["wall_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(figures, ensure_ascii=False, default=str), flush=True)
    return EXIT_OK if figures["ok"] else EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scenario", description=__doc__.split("\n")[0])
    configure(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
