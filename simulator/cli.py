"""`simulate`: run the Taobao stand-in until SIGINT/SIGTERM.

On start it prints exactly one JSON line to stdout (api_url, tmc_url, app_key, app_secret, shops,
truth_url) so a script or a test can read where to connect; logs go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Iterator

from common.exit_codes import EXIT_OK, EXIT_USAGE
from simulator.faults import RATE_LIMIT_SUB_CODES, FaultKnobs
from simulator.standin import StandIn, StandInConfig, apply_tmc_faults
from simulator.tmc_faults import TmcFaults
from simulator.tmc_server import TmcServerConfig

logger = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument(
        "--port",
        "--api-port",
        dest="port",
        type=int,
        default=0,
        help="TOP gateway port (default: any)",
    )
    parser.add_argument(
        "--tmc-port", type=int, default=0, help="TMC server port (default: any)"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the market and the fault dice")
    parser.add_argument("--shops", type=int, default=3, help="number of shops")
    parser.add_argument("--rate", type=float, default=5.0, help="market changes per second (0: frozen)")
    parser.add_argument("--history", type=int, default=1000, help="trades created before the start")
    parser.add_argument("--history-days", type=int, default=90, help="days the history spreads over")
    parser.add_argument("--app-key", default="12345678", help="app key clients must use (default 12345678)")
    parser.add_argument("--app-secret", default=None, help="default: derived from the seed")
    faults = parser.add_argument_group("fault knobs (all off by default)")
    faults.add_argument("--rate-limit", type=int, default=0, help="calls per second before a code-7 ban")
    faults.add_argument(
        "--rate-limit-scope",
        choices=sorted(RATE_LIMIT_SUB_CODES),
        default="app",
        help="whose quota a ban names",
    )
    faults.add_argument("--ban-seconds", type=int, default=1, help="length of a code-7 ban")
    faults.add_argument("--isp-error-rate", type=float, default=0.0, help="share of calls failing with isp.*")
    faults.add_argument("--isp-error-code", type=int, default=15, help="15, or the older 520")
    faults.add_argument("--rejection-rate", type=float, default=0.0, help="isv.trade-service-rejection share")
    faults.add_argument("--list-lag", type=float, default=0.0, help="seconds before a change shows in lists")
    faults.add_argument("--peak-mode", action="store_true", help="list answers without orders")
    faults.add_argument("--non-200-rate", type=float, default=0.0, help="share of calls answered non-200")
    faults.add_argument("--non-200-status", type=int, default=502, help="HTTP status of those answers")
    faults.add_argument("--garbled-rate", type=float, default=0.0, help="share of bodies cut short")
    faults.add_argument("--latency-ms", type=float, default=0.0, help="added latency per call")
    faults.add_argument(
        "--escaped-control-chars", action="store_true", help="escape TAB/LF/CR in JSON (TOP sends them raw)"
    )
    tmc = parser.add_argument_group("TMC push server knobs (all off by default)")
    tmc.add_argument("--tmc-drop-every", type=float, default=None, help="abort every connection each N s")
    tmc.add_argument("--tmc-duplicate", type=float, default=0.0, help="fraction of deliveries sent twice")
    tmc.add_argument("--tmc-reorder", type=float, default=0.0, help="fraction of messages held back briefly")
    tmc.add_argument("--tmc-lose", type=float, default=0.0, help="fraction of messages never delivered")
    tmc.add_argument(
        "--tmc-lose-while-disconnected",
        action="store_true",
        help="drop messages published while no client is connected (the old stream's behaviour)",
    )
    tmc.add_argument(
        "--tmc-confirm-timeout", type=float, default=60.0, help="redeliver unconfirmed messages after N s"
    )
    tmc.add_argument(
        "--tmc-failed-delay", type=float, default=330.0, help="redeliver Failed after N s"
    )


def config_from_args(args: argparse.Namespace) -> StandInConfig:
    knobs = FaultKnobs()
    knobs.update(
        {
            "rate_limit_per_second": args.rate_limit,
            "rate_limit_scope": args.rate_limit_scope,
            "ban_seconds": args.ban_seconds,
            "isp_error_rate": args.isp_error_rate,
            "isp_error_code": args.isp_error_code,
            "trade_service_rejection_rate": args.rejection_rate,
            "list_lag_seconds": args.list_lag,
            "peak_mode": args.peak_mode,
            "non_200_rate": args.non_200_rate,
            "non_200_status": args.non_200_status,
            "garbled_rate": args.garbled_rate,
            "latency_ms": args.latency_ms,
            "raw_control_chars": not args.escaped_control_chars,
        }
    )
    tmc_faults = TmcFaults()
    apply_tmc_faults(
        tmc_faults,
        {
            "drop_every": args.tmc_drop_every,
            "duplicate_fraction": args.tmc_duplicate,
            "reorder_fraction": args.tmc_reorder,
            "lose_fraction": args.tmc_lose,
            "lose_while_disconnected": args.tmc_lose_while_disconnected,
        },
    )
    return StandInConfig(
        seed=args.seed,
        shops=args.shops,
        market_rate=args.rate,
        history_trades=args.history,
        history_days=args.history_days,
        app_key=args.app_key,
        app_secret=args.app_secret,
        faults=knobs,
        tmc=TmcServerConfig(
            confirm_timeout=args.tmc_confirm_timeout,
            failed_redelivery_delay=args.tmc_failed_delay,
            seed=args.seed,
        ),
        tmc_faults=tmc_faults,
    )


@contextlib.contextmanager
def _stop_on_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> Iterator[None]:
    """SIGINT/SIGTERM set `stop`; the previous handlers come back afterwards."""
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-Unix loops
            pass
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def serve(config: StandInConfig, host: str, port: int, tmc_port: int = 0) -> None:
    standin = StandIn(config)
    stop = asyncio.Event()
    with _stop_on_signals(asyncio.get_running_loop(), stop):
        await standin.start(host=host, api_port=port, tmc_port=tmc_port)
        try:
            sys.stdout.write(json.dumps(standin.connection_info(), ensure_ascii=False) + "\n")
            sys.stdout.flush()
            logger.info("stand-in listening", extra={"action": "standin_started", "shop": len(standin.shops)})
            await stop.wait()
        finally:
            await standin.stop()
    logger.info("stand-in stopped", extra={"action": "standin_stopped"})


def run(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
    except ValueError as exc:
        sys.stderr.write(f"simulate: {exc}\n")
        return EXIT_USAGE
    asyncio.run(serve(config, args.host, args.port, args.tmc_port))
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulator", description="Run the Taobao stand-in.")
    configure(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    return run(args)
