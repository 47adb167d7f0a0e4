"""The reconciler tests' fixtures: a migrated database per test and a store over it."""

from tests.reconciler.conftest import dsn, pg

__all__ = ["dsn", "pg"]
