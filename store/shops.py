"""The shop registry (docs/operations.md#shops): which sellers the service follows, their sessions and
their TMC subscription, kept in PostgreSQL (`store.pg_shops`) so that `order-sync shops` changes them
while replicas run.

Session keys and refresh tokens are `SecretStr` everywhere above the table and encrypted in it
(`store.secret_box`); a `ShopRecord`'s repr shows neither.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from pydantic import SecretStr

from common.errors import OrderSyncError

# The NOTIFY channel a change to the registry rings (payload: the nick); replicas re-read on it.
SHOPS_CHANNEL = "order_sync_shops"


class ShopStatus(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"


class UnknownShop(OrderSyncError):
    """The registry has no shop by that nick."""


@dataclass(frozen=True, slots=True)
class ShopRecord:
    nick: str
    session: SecretStr = field(repr=False)
    refresh_token: SecretStr | None = field(default=None, repr=False)
    expires_at: datetime | None = None
    status: ShopStatus = ShopStatus.ACTIVE
    status_reason: str | None = None
    permitted_at: datetime | None = None
    permit_error: str | None = None
    added_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.status is ShopStatus.ACTIVE


@dataclass(frozen=True, slots=True)
class PermitOutcome:
    """A shop's TMC permit succeeded at `at` (error None), or failed with `error`."""

    nick: str
    at: datetime | None
    error: str | None


class ShopRegistry(Protocol):
    """The registry's operations. Every write of what the daemon serves (shops, sessions, status) rings
    `SHOPS_CHANNEL` in its own transaction; recorded permits ring nothing (no replica acts on them)."""

    async def records(self) -> list[ShopRecord]: ...

    async def get(self, nick: str) -> ShopRecord | None: ...

    async def add(
        self,
        nick: str,
        session: SecretStr,
        *,
        refresh_token: SecretStr | None = None,
        expires_at: datetime | None = None,
    ) -> ShopRecord:
        """Add a shop, or give a known one a new session (it becomes active again, its permit is
        asked for again)."""
        ...

    async def seed(self, shops: Sequence[tuple[str, SecretStr]]) -> list[str]:
        """Add the shops the registry does not know (TAOBAO_SHOPS); returns the nicks added."""
        ...

    async def set_status(self, nick: str, status: ShopStatus, reason: str | None) -> ShopRecord: ...

    async def remove(self, nick: str) -> ShopRecord: ...

    async def record_permits(self, outcomes: Sequence[PermitOutcome]) -> None:
        """Record permit outcomes in one write (a thousand shops at start are one statement, not a
        thousand); a shop no longer in the registry is skipped."""
        ...

    async def renew(
        self, nick: str, session: SecretStr, refresh_token: SecretStr | None, expires_at: datetime | None
    ) -> None:
        """A refreshed session replaces the old one (status and permit unchanged)."""
        ...
