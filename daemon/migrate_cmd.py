"""`order-sync migrate`: bring the database schema up to date (safe to run from several replicas)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from common.exit_codes import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from store.errors import MigrationError
from store.migrate import migrate

logger = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        default=None,
        help="PostgreSQL DSN, e.g. postgresql://user@host:5432/db (default: $DATABASE_URL)",
    )


def run(args: argparse.Namespace) -> int:
    dsn: str | None = args.database_url or os.environ.get("DATABASE_URL")
    if not dsn:
        print("order-sync migrate: give --database-url or set DATABASE_URL", file=sys.stderr)
        return EXIT_USAGE
    try:
        applied = asyncio.run(migrate(dsn))
    except MigrationError as exc:
        logger.error("migration failed: %s", exc, extra={"action": "migration_failed"})
        print(f"order-sync migrate: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if applied:
        print("applied migrations: " + ", ".join(f"{v:03d}" for v in applied))
    else:
        print("schema is up to date")
    return EXIT_OK
