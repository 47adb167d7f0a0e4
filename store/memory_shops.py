"""`ShopRegistry` in memory, for tests of the parts above the store. Holds `SecretStr`s; no encryption."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from pydantic import SecretStr

from store.shops import PermitOutcome, ShopRecord, ShopStatus, UnknownShop


class MemoryShops:
    def __init__(self, on_change: Callable[[str], None] | None = None) -> None:
        self._shops: dict[str, ShopRecord] = {}
        self._on_change = on_change

    async def records(self) -> list[ShopRecord]:
        return [self._shops[nick] for nick in sorted(self._shops)]

    async def get(self, nick: str) -> ShopRecord | None:
        return self._shops.get(nick)

    async def add(
        self,
        nick: str,
        session: SecretStr,
        *,
        refresh_token: SecretStr | None = None,
        expires_at: datetime | None = None,
    ) -> ShopRecord:
        now = datetime.now(UTC)
        known = self._shops.get(nick)
        added_at = known.added_at if known else now
        record = ShopRecord(nick, session, refresh_token, expires_at, added_at=added_at, updated_at=now)
        return self._put(record)

    async def seed(self, shops: Sequence[tuple[str, SecretStr]]) -> list[str]:
        added = [nick for nick, _ in shops if nick not in self._shops]
        for nick, session in shops:
            if nick in added:
                await self.add(nick, session)
        return added

    async def set_status(self, nick: str, status: ShopStatus, reason: str | None) -> ShopRecord:
        return self._put(dataclasses.replace(self._known(nick), status=status, status_reason=reason))

    async def remove(self, nick: str) -> ShopRecord:
        record = self._known(nick)
        del self._shops[nick]
        self._changed(nick)
        return record

    async def record_permits(self, outcomes: Sequence[PermitOutcome]) -> None:
        for outcome in outcomes:
            record = self._shops.get(outcome.nick)
            if record is not None:  # as in PostgreSQL, no doorbell for a recorded permit
                permitted_at = outcome.at or record.permitted_at
                self._shops[outcome.nick] = dataclasses.replace(
                    record, permitted_at=permitted_at, permit_error=outcome.error
                )

    async def renew(
        self, nick: str, session: SecretStr, refresh_token: SecretStr | None, expires_at: datetime | None
    ) -> None:
        if nick not in self._shops:
            return
        record = self._shops[nick]
        expired = record.status_reason == "session expired"
        self._put(
            dataclasses.replace(
                record,
                session=session,
                refresh_token=refresh_token,
                expires_at=expires_at,
                status=ShopStatus.ACTIVE if expired else record.status,
                status_reason=None if expired else record.status_reason,
            )
        )

    def _known(self, nick: str) -> ShopRecord:
        if nick not in self._shops:
            raise UnknownShop(f"no shop {nick!r}")
        return self._shops[nick]

    def _put(self, record: ShopRecord) -> ShopRecord:
        self._shops[record.nick] = record
        self._changed(record.nick)
        return record

    def _changed(self, nick: str) -> None:
        if self._on_change is not None:
            self._on_change(nick)
