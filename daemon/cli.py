"""`order-sync`: the console entry point. It only parses and delegates: each subcommand is a module
with `configure(parser)` and `run(args) -> int`, imported only when that subcommand runs, so
`order-sync run` loads the daemon and nothing else (no stand-in, no demo)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from importlib import metadata

from common.exit_codes import EXIT_INTERRUPTED

# subcommand → module with `configure(parser)` and `run(args) -> int`
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("daemon.run_cmd", "run the daemon: TMC stream → fullinfo → PostgreSQL"),
    "check": ("daemon.check_cmd", "check settings, PostgreSQL, shop sessions and the TMC login"),
    "migrate": (
        "daemon.migrate_cmd",
        "bring the database schema up to date (safe from several replicas at once)",
    ),
    "backfill": ("daemon.backfill_cmd", "backfill one shop's window through the increment API now"),
    "initial-load": ("daemon.initial_load_cmd", "load a shop's three-month history, then the increment"),
    "report": ("daemon.report_cmd", "gap-recovery reports: a table, --json, or an --html timeline"),
    "dead-letters": (
        "daemon.dead_letters_cmd",
        "unresolved trades (could not be fetched or stored): a table or --json; --retry them now",
    ),
    "shops": ("daemon.shops_cmd", "the shop registry: add, list, pause, resume, remove shops; key"),
    "simulate": ("simulator.cli", "run the Taobao stand-in (TOP gateway + TMC server), print its endpoints"),
    "demo": ("daemon.demo", "run the stand-in, a database and the daemon together, printing progress"),
}


def version() -> str:
    """The installed release, from the package's metadata (what /metrics shows as build_info)."""
    try:
        return metadata.version("taobao-order-sync")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser with every subcommand's options, or (`only`) with just that one's: the others are
    then listed by name and help alone, and their modules are not imported."""
    parser = argparse.ArgumentParser(
        prog="order-sync",
        description="Keep a PostgreSQL copy of Taobao/Tmall sellers' orders complete and current.",
    )
    parser.add_argument("--version", action="version", version=f"order-sync {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        if only is None or name == only:
            module = importlib.import_module(module_name)
            module.configure(cmd)
            cmd.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    # The first word that is not an option names the subcommand (the top level has no valued options).
    chosen = next((word for word in args_in if not word.startswith("-")), None)
    args = build_parser(chosen if chosen in COMMANDS else "").parse_args(args_in)
    try:
        code: int = args._run(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return code


if __name__ == "__main__":
    sys.exit(main())
