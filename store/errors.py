"""What the store raises. Driver errors are wrapped (`raise ... from exc`) so callers catch one root."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

import asyncpg

from common.errors import OrderSyncError

T = TypeVar("T")

# What a database operation that was refused, or whose connection was lost, raises from the driver:
# a server error, a connection the pool closed or reset (InterfaceError, InternalClientError after
# pg_terminate_backend), the socket itself (OSError) or a timeout. The one definition the service uses.
DATABASE_ERRORS: Final = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)

# What PostgreSQL answers about the data of a write, not about the connection: a value it cannot hold
# (DataError, raised by asyncpg's encoders too), a constraint (a CHECK the ERP's DBA added, NOT NULL,
# a foreign key), a trigger's RAISE, a limit (a JSON nested too deep). A batch refused with one of
# these is bisected to find the trades it is about (docs/design.md#bad-input-never-crashes).
TRADE_REFUSALS: Final = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.RaiseError,
    asyncpg.ProgramLimitExceededError,
)


class StoreError(OrderSyncError):
    """The database refused or lost a store operation; the transaction was rolled back."""


class MigrationError(StoreError):
    """The schema could not be brought up to date (a bad file, a changed applied migration, SQL error)."""


class InvalidTradeError(StoreError):
    """A trade the store cannot keep (no `modified`, text PostgreSQL refuses, amounts out of range).

    `apply_trades` never raises it for a whole batch: it quarantines the trade and goes on. It is raised
    by `store.validation.check_trade` for callers that want to check before applying."""

    def __init__(self, reason: str, *, tid: int | None = None) -> None:
        super().__init__(reason if tid is None else f"trade {tid}: {reason}")
        self.reason = reason
        self.tid = tid


class NotLeader(OrderSyncError):
    """This replica does not (or no longer) lead the shop: its reconciliation is another replica's."""

    def __init__(self, shop: str) -> None:
        self.shop = shop
        super().__init__(f"this replica does not lead shop {shop!r}")


async def guarded(what: str, work: Callable[[], Awaitable[T]]) -> T:
    """Run a database call, turning driver errors into StoreError (one exception root)."""
    try:
        return await work()
    except DATABASE_ERRORS as exc:
        raise StoreError(f"{what} failed: {exc}") from exc
