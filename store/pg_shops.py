"""`ShopRegistry` over PostgreSQL (table `shops`, migration 060). Each write and its NOTIFY on
`SHOPS_CHANNEL` commit together, so a replica that hears the doorbell reads the change."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
from pydantic import SecretStr

from store.errors import guarded
from store.secret_box import SecretBox
from store.shops import SHOPS_CHANNEL, PermitOutcome, ShopRecord, ShopStatus, UnknownShop

_COLUMNS = (
    "nick, session_enc, refresh_token_enc, expires_at, paused, paused_reason, permitted_at, "
    "permit_error, created_at, updated_at"
)
SELECT_SHOPS = f"SELECT {_COLUMNS} FROM shops ORDER BY nick"
SELECT_SHOP = f"SELECT {_COLUMNS} FROM shops WHERE nick = $1"
UPSERT_SHOP = f"""
INSERT INTO shops (nick, session_enc, refresh_token_enc, expires_at)
VALUES ($1, $2, $3, $4)
ON CONFLICT (nick) DO UPDATE SET
    session_enc = excluded.session_enc, refresh_token_enc = excluded.refresh_token_enc,
    expires_at = excluded.expires_at, paused = false, paused_reason = NULL, paused_at = NULL,
    permitted_at = NULL, permit_error = NULL, updated_at = now()
RETURNING {_COLUMNS}
"""
SEED_SHOPS = """
INSERT INTO shops (nick, session_enc)
SELECT nick, session_enc FROM unnest($1::text[], $2::bytea[]) AS s(nick, session_enc)
ON CONFLICT (nick) DO NOTHING RETURNING nick
"""
SET_STATUS = f"""
UPDATE shops SET paused = $2, paused_reason = $3, paused_at = CASE WHEN $2 THEN now() END, updated_at = now()
WHERE nick = $1 RETURNING {_COLUMNS}
"""
DELETE_SHOP = f"DELETE FROM shops WHERE nick = $1 RETURNING {_COLUMNS}"
RECORD_PERMITS = """
UPDATE shops SET permitted_at = coalesce(p.at, shops.permitted_at), permit_error = p.error, updated_at = now()
FROM unnest($1::text[], $2::timestamptz[], $3::text[]) AS p(nick, at, error)
WHERE shops.nick = p.nick
"""
RENEW_SESSION = """
UPDATE shops SET session_enc = $2, refresh_token_enc = $3, expires_at = $4,
    paused = paused AND paused_reason IS DISTINCT FROM 'session expired',
    paused_reason = CASE WHEN paused_reason = 'session expired' THEN NULL ELSE paused_reason END,
    updated_at = now()
WHERE nick = $1
"""
NOTIFY = "SELECT pg_notify($1, $2)"


class PgShops:
    def __init__(self, pool: asyncpg.Pool, box: SecretBox) -> None:
        self._pool = pool
        self._box = box

    async def records(self) -> list[ShopRecord]:
        rows = await guarded("reading shops", lambda: self._pool.fetch(SELECT_SHOPS))
        return [self._record(r) for r in rows]

    async def get(self, nick: str) -> ShopRecord | None:
        row = await guarded("reading a shop", lambda: self._pool.fetchrow(SELECT_SHOP, nick))
        return None if row is None else self._record(row)

    async def add(
        self,
        nick: str,
        session: SecretStr,
        *,
        refresh_token: SecretStr | None = None,
        expires_at: datetime | None = None,
    ) -> ShopRecord:
        refresh = None if refresh_token is None else self._box.seal(refresh_token)
        row = await self._write(nick, UPSERT_SHOP, nick, self._box.seal(session), refresh, expires_at)
        assert row is not None  # an upsert returns its row
        return self._record(row)

    async def seed(self, shops: Sequence[tuple[str, SecretStr]]) -> list[str]:
        """One statement and one doorbell for all of them (a thousand TAOBAO_SHOPS at a first start)."""
        if not shops:
            return []
        nicks = [nick for nick, _ in shops]
        sealed = [self._box.seal(session) for _, session in shops]

        async def work() -> list[str]:
            async with self._pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(SEED_SHOPS, nicks, sealed)
                if rows:
                    await conn.execute(NOTIFY, SHOPS_CHANNEL, rows[0]["nick"])
                return [row["nick"] for row in rows]

        added = set(await guarded("adding shops", work))
        return [nick for nick in nicks if nick in added]

    async def set_status(self, nick: str, status: ShopStatus, reason: str | None) -> ShopRecord:
        row = await self._write(nick, SET_STATUS, nick, status is ShopStatus.PAUSED, reason)
        if row is None:
            raise UnknownShop(f"no shop {nick!r}")
        return self._record(row)

    async def remove(self, nick: str) -> ShopRecord:
        row = await self._write(nick, DELETE_SHOP, nick)
        if row is None:
            raise UnknownShop(f"no shop {nick!r}")
        return self._record(row)

    async def record_permits(self, outcomes: Sequence[PermitOutcome]) -> None:
        """No doorbell: what the daemon serves did not change, and a thousand permits at start would
        make every replica re-read the registry a thousand times."""
        if not outcomes:
            return
        columns = ([o.nick for o in outcomes], [o.at for o in outcomes], [o.error for o in outcomes])
        await guarded("recording permits", lambda: self._pool.execute(RECORD_PERMITS, *columns))

    async def renew(
        self, nick: str, session: SecretStr, refresh_token: SecretStr | None, expires_at: datetime | None
    ) -> None:
        refresh = None if refresh_token is None else self._box.seal(refresh_token)
        await self._write(nick, RENEW_SESSION, nick, self._box.seal(session), refresh, expires_at)

    async def _write(self, nick: str, query: str, *args: Any) -> Any:
        async def work() -> Any:
            async with self._pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(query, *args)
                await conn.execute(NOTIFY, SHOPS_CHANNEL, nick)
                return row

        return await guarded("changing a shop", work)

    def _record(self, row: Any) -> ShopRecord:
        refresh = row["refresh_token_enc"]
        return ShopRecord(
            nick=row["nick"],
            session=self._box.open(row["session_enc"]),
            refresh_token=None if refresh is None else self._box.open(refresh),
            expires_at=row["expires_at"],
            status=ShopStatus.PAUSED if row["paused"] else ShopStatus.ACTIVE,
            status_reason=row["paused_reason"],
            permitted_at=row["permitted_at"],
            permit_error=row["permit_error"],
            added_at=row["created_at"],
            updated_at=row["updated_at"],
        )
