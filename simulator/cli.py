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
import operator
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

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


class Flag(NamedTuple):
    """One option: its names, the config field or fault knob it sets (none: read by `run`), argparse's
    keywords, and how its value becomes the field's."""

    names: tuple[str, ...]
    sets: str
    options: dict[str, Any]
    convert: Callable[[Any], Any] | None = None

    @property
    def dest(self) -> str:
        return str(self.options.get("dest") or self.names[0].lstrip("-").replace("-", "_"))


def _flag(*names: str, sets: str = "", convert: Callable[[Any], Any] | None = None, **options: Any) -> Flag:
    return Flag(names, sets, options, convert)


# Where the stand-in listens (read by `run`, not part of its config).
_LISTEN = (
    _flag("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"),
    _flag("--port", "--api-port", dest="port", type=int, default=0, help="TOP gateway port (default: any)"),
    _flag("--tmc-port", type=int, default=0, help="TMC server port (default: any)"),
)
# StandInConfig fields.
_STANDIN = (
    _flag("--seed", sets="seed", type=int, default=1, help="seed of the market and the fault dice"),
    _flag("--shops", sets="shops", type=int, default=3, help="number of shops"),
    _flag("--rate", sets="market_rate", type=float, default=5.0,
          help="market changes per second (0: frozen)"),
    _flag("--history", sets="history_trades", type=int, default=1000, help="trades created before the start"),
    _flag("--history-days", sets="history_days", type=int, default=90, help="days the history spreads over"),
    _flag("--app-key", sets="app_key", default="12345678",
          help="app key clients must use (default 12345678)"),
    _flag("--app-secret", sets="app_secret", default=None, help="default: derived from the seed"),
    _flag("--require-permits", sets="require_permits", action=argparse.BooleanOptionalAction, default=True,
          help="TMC delivers only permitted sellers' messages, as the platform does (default; "
               "--no-require-permits: every seller's, for a client that never calls taobao.tmc.user.permit)"),
)  # fmt: skip
# FaultKnobs of the TOP gateway.
_GATEWAY_FAULTS = (
    _flag("--rate-limit", sets="rate_limit_per_second", type=int, default=0,
          help="calls per second before a code-7 ban"),
    _flag("--rate-limit-scope", sets="rate_limit_scope", choices=sorted(RATE_LIMIT_SUB_CODES), default="app",
          help="whose quota a ban names"),
    _flag("--ban-seconds", sets="ban_seconds", type=int, default=1, help="length of a code-7 ban"),
    _flag("--isp-error-rate", sets="isp_error_rate", type=float, default=0.0,
          help="share of calls failing with isp.*"),
    _flag("--isp-error-code", sets="isp_error_code", type=int, default=15, help="15, or the older 520"),
    _flag("--rejection-rate", sets="trade_service_rejection_rate", type=float, default=0.0,
          help="isv.trade-service-rejection share"),
    _flag("--list-lag", sets="list_lag_seconds", type=float, default=0.0,
          help="seconds before a change shows in lists"),
    _flag("--peak-mode", sets="peak_mode", action="store_true", help="list answers without orders"),
    _flag("--non-200-rate", sets="non_200_rate", type=float, default=0.0,
          help="share of calls answered non-200"),
    _flag("--non-200-status", sets="non_200_status", type=int, default=502,
          help="HTTP status of those answers"),
    _flag("--garbled-rate", sets="garbled_rate", type=float, default=0.0, help="share of bodies cut short"),
    _flag("--latency-ms", sets="latency_ms", type=float, default=0.0, help="added latency per call"),
    _flag("--escaped-control-chars", sets="raw_control_chars", convert=operator.not_, action="store_true",
          help="escape TAB/LF/CR in JSON (TOP sends them raw)"),
    _flag("--detail-lag", sets="detail_lag_seconds", type=float, default=0.0,
          help="fullinfo: trade-not-exist for N s after TradeCreate"),
    _flag("--odd-values-rate", sets="odd_values_rate", type=float, default=0.0,
          help="share of trades with broken fullinfo values"),
    _flag("--odd-values-tids", sets="odd_values_tids", default="",
          help="comma-separated tids that always get them"),
    _flag("--odd-values-kinds", sets="odd_values_kinds", default=",".join(ODD_VALUE_KINDS),
          help=f"which broken values (default all: {','.join(ODD_VALUE_KINDS)})"),
    _flag("--odd-text-rate", sets="odd_text_rate", type=float, default=0.0,
          help="share of new trades whose buyer typed NUL etc."),
    _flag("--error-window", sets="error_window", choices=("", *ERROR_WINDOW_KINDS), default="",
          help="answer every call this way"),
    _flag("--error-window-methods", sets="error_window_methods", default="",
          help="comma-separated methods (default: all)"),
    _flag("--error-window-seconds", sets="error_window_seconds", type=float, default=0.0,
          help="the window ends after N s (0: never)"),
    _flag("--malformed-page-rate", sets="malformed_page_rate", type=float, default=0.0,
          help="share of list calls answered malformed"),
    _flag("--malformed-page-kinds", sets="malformed_page_kinds", default=",".join(MALFORMED_PAGE_KINDS),
          help=f"which malformations (default all: {','.join(MALFORMED_PAGE_KINDS)})"),
)  # fmt: skip
# TmcFaults of the TMC server.
_TMC_FAULTS = (
    _flag("--tmc-drop-every", sets="drop_every", type=float, default=None,
          help="abort every connection each N s"),
    _flag("--tmc-duplicate", sets="duplicate_fraction", type=float, default=0.0,
          help="fraction of deliveries sent twice"),
    _flag("--tmc-reorder", sets="reorder_fraction", type=float, default=0.0,
          help="fraction of messages held back briefly"),
    _flag("--tmc-lose", sets="lose_fraction", type=float, default=0.0,
          help="fraction of messages never delivered"),
    _flag("--tmc-lose-while-disconnected", sets="lose_while_disconnected", action="store_true",
          help="drop messages published while no client is connected (the old stream's behaviour)"),
    _flag("--tmc-close-every", sets="close_every", type=float, default=None,
          help="close every connection cleanly each N s"),
    _flag("--tmc-close-code", sets="close_code", type=int, default=1011, help="close code of those closes"),
    # argv cannot carry a NUL, so the flag spells it \0.
    _flag("--tmc-close-reason", sets="close_reason", convert=lambda reason: reason.replace("\\0", "\x00"),
          default=None, help=r"close reason; \0 stands for a NUL (default: 'reach max idle time' and a NUL)"),
    _flag("--tmc-oversize-every", sets="oversize_every", type=int, default=0,
          help="pad every Nth message (0: none)"),
    _flag("--tmc-oversize-bytes", sets="oversize_bytes", type=int, default=TmcFaults().oversize_bytes,
          help="padded size"),
    _flag("--tmc-unknown-headers", sets="unknown_header_fraction", type=float, default=0.0,
          help="fraction of pushes with an unknown header"),
    _flag("--tmc-unknown-header-kind", sets="unknown_header_kind", choices=UNKNOWN_HEADER_KINDS,
          default="value_format", help="which kind"),
    _flag("--tmc-refund-topics", sets="refund_topics", action="store_true",
          help="also publish refund topics (with tid) on refunds"),
)  # fmt: skip
# TmcServerConfig fields (the same help group as the TMC faults).
_TMC_SERVER = (
    _flag("--tmc-confirm-timeout", sets="confirm_timeout", type=float, default=60.0,
          help="redeliver unconfirmed messages after N s"),
    _flag("--tmc-failed-delay", sets="failed_redelivery_delay", type=float, default=330.0,
          help="redeliver Failed after N s"),
)  # fmt: skip
_GROUPS: tuple[tuple[str | None, tuple[Flag, ...]], ...] = (
    (None, _LISTEN + _STANDIN),
    ("fault knobs (all off by default)", _GATEWAY_FAULTS),
    ("TMC push server knobs (all off by default)", _TMC_FAULTS + _TMC_SERVER),
)


def configure(parser: argparse.ArgumentParser) -> None:
    for title, flags in _GROUPS:
        group = parser if title is None else parser.add_argument_group(title)
        for flag in flags:
            group.add_argument(*flag.names, **flag.options)


def config_from_args(args: argparse.Namespace) -> StandInConfig:
    knobs = FaultKnobs()
    knobs.update(_values(args, _GATEWAY_FAULTS))
    tmc_faults = TmcFaults()
    tmc_faults.update(_values(args, _TMC_FAULTS))
    return StandInConfig(
        **_values(args, _STANDIN),
        faults=knobs,
        tmc=TmcServerConfig(**_values(args, _TMC_SERVER), seed=args.seed),
        tmc_faults=tmc_faults,
    )


def _values(args: argparse.Namespace, flags: tuple[Flag, ...]) -> dict[str, Any]:
    """What `flags` set, by field or knob name; a flag left at None leaves its field at the default."""
    values: dict[str, Any] = {}
    for flag in flags:
        value = getattr(args, flag.dest)
        if value is not None:
            values[flag.sets] = value if flag.convert is None else flag.convert(value)
    return values


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
