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
from simulator.faults import (
    ERROR_WINDOW_KINDS,
    MALFORMED_PAGE_KINDS,
    ODD_VALUE_KINDS,
    RATE_LIMIT_SUB_CODES,
    FaultKnobs,
)
from simulator.standin import StandIn, StandInConfig
from simulator.tmc_faults import TmcFaults
from simulator.tmc_frames import UNKNOWN_HEADER_KINDS
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
    faults.add_argument(
        "--detail-lag", type=float, default=0.0, help="fullinfo: trade-not-exist for N s after TradeCreate"
    )
    faults.add_argument(
        "--odd-values-rate", type=float, default=0.0, help="share of trades with broken fullinfo values"
    )
    faults.add_argument("--odd-values-tids", default="", help="comma-separated tids that always get them")
    faults.add_argument(
        "--odd-values-kinds",
        default=",".join(ODD_VALUE_KINDS),
        help=f"which broken values (default all: {','.join(ODD_VALUE_KINDS)})",
    )
    faults.add_argument(
        "--odd-text-rate", type=float, default=0.0, help="share of new trades whose buyer typed NUL etc."
    )
    faults.add_argument(
        "--error-window", choices=("", *ERROR_WINDOW_KINDS), default="", help="answer every call this way"
    )
    faults.add_argument("--error-window-methods", default="", help="comma-separated methods (default: all)")
    faults.add_argument(
        "--error-window-seconds", type=float, default=0.0, help="the window ends after N s (0: never)"
    )
    faults.add_argument(
        "--malformed-page-rate", type=float, default=0.0, help="share of list calls answered malformed"
    )
    faults.add_argument(
        "--malformed-page-kinds",
        default=",".join(MALFORMED_PAGE_KINDS),
        help=f"which malformations (default all: {','.join(MALFORMED_PAGE_KINDS)})",
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
        "--tmc-close-every", type=float, default=None, help="close every connection cleanly each N s"
    )
    tmc.add_argument("--tmc-close-code", type=int, default=1011, help="close code of those closes")
    tmc.add_argument(
        "--tmc-close-reason",
        default=None,
        help=r"close reason; \0 stands for a NUL (default: 'reach max idle time' and a NUL)",
    )
    tmc.add_argument("--tmc-oversize-every", type=int, default=0, help="pad every Nth message (0: none)")
    tmc.add_argument(
        "--tmc-oversize-bytes", type=int, default=TmcFaults().oversize_bytes, help="padded size"
    )
    tmc.add_argument(
        "--tmc-unknown-headers", type=float, default=0.0, help="fraction of pushes with an unknown header"
    )
    tmc.add_argument(
        "--tmc-unknown-header-kind", choices=UNKNOWN_HEADER_KINDS, default="value_format", help="which kind"
    )
    tmc.add_argument(
        "--tmc-refund-topics", action="store_true", help="also publish refund topics (with tid) on refunds"
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
            "detail_lag_seconds": args.detail_lag,
            "odd_values_rate": args.odd_values_rate,
            "odd_values_tids": args.odd_values_tids,
            "odd_values_kinds": args.odd_values_kinds,
            "odd_text_rate": args.odd_text_rate,
            "error_window": args.error_window,
            "error_window_methods": args.error_window_methods,
            "error_window_seconds": args.error_window_seconds,
            "malformed_page_rate": args.malformed_page_rate,
            "malformed_page_kinds": args.malformed_page_kinds,
        }
    )
    tmc_faults = TmcFaults()
    # argv cannot carry a NUL, so the flag spells it \0.
    reason = None if args.tmc_close_reason is None else args.tmc_close_reason.replace("\\0", "\x00")
    tmc_faults.update(
        {
            "drop_every": args.tmc_drop_every,
            "duplicate_fraction": args.tmc_duplicate,
            "reorder_fraction": args.tmc_reorder,
            "lose_fraction": args.tmc_lose,
            "lose_while_disconnected": args.tmc_lose_while_disconnected,
            "close_every": args.tmc_close_every,
            "close_code": args.tmc_close_code,
            "oversize_every": args.tmc_oversize_every,
            "oversize_bytes": args.tmc_oversize_bytes,
            "unknown_header_fraction": args.tmc_unknown_headers,
            "unknown_header_kind": args.tmc_unknown_header_kind,
            "refund_topics": args.tmc_refund_topics,
        }
        | ({} if reason is None else {"close_reason": reason}),
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
