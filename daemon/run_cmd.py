"""`order-sync run` and `python -m listener`: the daemon, configured from the environment and `.env`."""

from __future__ import annotations

import argparse
import sys

from common.errors import OrderSyncError
from common.exit_codes import EXIT_FAILED
from daemon.app import build
from daemon.service import run_daemon
from daemon.settings import add_env_file_option

EPILOG = (
    "Settings come from the environment and .env: DATABASE_URL, TAOBAO_APP_KEY, TAOBAO_APP_SECRET, "
    "TAOBAO_SHOPS, TAOBAO_API_URL, TAOBAO_TMC_URL, TAOBAO_TMC_GROUP, TAOBAO_SIGN_METHOD, SYNC_API_RATE, "
    "SYNC_OVERLAP_SECONDS, SYNC_SWEEP_SECONDS, NOTIFY_CHANNEL (see .env.example)."
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    add_env_file_option(parser)


def run(args: argparse.Namespace) -> int:
    try:
        return run_daemon(build, env_file=args.env_file)
    except OrderSyncError as exc:
        print(f"order-sync run: {exc}", file=sys.stderr)
        print("hint: `order-sync check` tests each part of the configuration", file=sys.stderr)
        return EXIT_FAILED


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m listener", description="Run the order-sync daemon.")
    configure(parser)
    return run(parser.parse_args())
