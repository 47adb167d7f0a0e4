"""`order-sync`: the console entry point. Each subcommand lives in the package that owns it."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand → module with `configure(parser)` and `run(args) -> int`
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("listener.run_cmd", "run the daemon: TMC stream → fullinfo → PostgreSQL"),
    "check": ("listener.check_cmd", "check settings, PostgreSQL, shop sessions and the TMC login"),
    "migrate": ("store.cli", "bring the database schema up to date (safe from several replicas at once)"),
    "backfill": ("reconciler.backfill_cmd", "backfill one shop's window through the increment API now"),
    "initial-load": ("reconciler.initial_load_cmd", "load a shop's three-month history, then the increment"),
    "report": ("reconciler.report_cmd", "gap-recovery reports: a table, --json, or an --html timeline"),
    "simulate": ("simulator.cli", "run the Taobao stand-in (TOP gateway + TMC server), print its endpoints"),
    "demo": ("listener.demo", "run the stand-in, a database and the daemon together, printing progress"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="order-sync",
        description="Keep a PostgreSQL copy of Taobao/Tmall sellers' orders complete and current.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        module.configure(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args._run(args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
