"""`order-sync migrate`: bring the database schema up to date (safe to run from several replicas).
DATABASE_URL and DATABASE_SCHEMA come from --database-url, the environment or the --env-file.
`--print-sql` prints the same steps for a DBA instead, without connecting."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from common.exit_codes import EXIT_FAILED, EXIT_OK
from daemon.settings import DatabaseSettings, add_env_file_option, database_overrides, settings_or_exit
from store.errors import MigrationError
from store.migrate import migrate, print_sql

logger = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        default=None,
        help="PostgreSQL DSN, e.g. postgresql://user@host:5432/db (default: DATABASE_URL)",
    )
    parser.add_argument(
        "--print-sql",
        action="store_true",
        help="print the schema's SQL (in DATABASE_SCHEMA) for a DBA to apply, without connecting",
    )
    add_env_file_option(parser)


def run(args: argparse.Namespace) -> int:
    settings = settings_or_exit(
        DatabaseSettings,
        args.env_file,
        need_database=not args.print_sql,
        **database_overrides(args.database_url),
    )
    if isinstance(settings, int):
        return settings
    if args.print_sql:
        print(print_sql(settings.database_schema), end="")
        return EXIT_OK
    try:
        applied = asyncio.run(migrate(settings.dsn(), schema=settings.database_schema))
    except MigrationError as exc:
        logger.error("migration failed: %s", exc, extra={"action": "migration_failed"})
        print(f"order-sync migrate: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if applied:
        print("applied migrations: " + ", ".join(f"{v:03d}" for v in applied))
    else:
        print("schema is up to date")
    return EXIT_OK
