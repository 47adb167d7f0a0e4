"""Keeping each shop's session valid (docs/operations.md#sessions): its expiry is known (from the
token's expiry fields or what the operator gave), and

* where a refresh token is held, the session is renewed (`taobao.top.auth.token.refresh`) before it
  expires, and at once when a call answered code 27 (the dispatcher paused the shop);
* where none is held (apps not sold through the service market get fixed-length tokens), the expiry
  is announced ahead (a metric, `/readyz` detail, `order-sync check`) and the shop is paused at expiry;
  `order-sync shops add` with a new session resumes it, and the reconciler reads what it missed.

A renewed session is written to the registry, whose NOTIFY brings it to every replica's shop book.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from common.errors import OrderSyncError
from common.health import Check
from common.metrics import Registry
from store.errors import DATABASE_ERRORS
from store.shop_book import BookChange
from store.shops import ShopRecord, ShopRegistry, ShopStatus
from taobao import shop_calls
from taobao.transport import TopTransport

log = logging.getLogger(__name__)

EXPIRED = "session expired"


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    renew_ahead: timedelta = timedelta(days=1)  # renew this long before expiry
    warn_ahead: timedelta = timedelta(days=3)  # without a refresh token: announce this long ahead
    check_seconds: float = 5.0
    # A rejection this soon after a renewal is the old session's: the new one reaches the dispatcher
    # with the registry's next read, which resumes the shop. No second renewal for it.
    rejection_grace: timedelta = timedelta(seconds=30)


class SessionKeeper:
    def __init__(
        self,
        client: TopTransport,
        registry: ShopRegistry,
        policy: SessionPolicy,
        *,
        rejected: Callable[[], Collection[str]] = tuple,
        leads: Callable[[str], bool] = lambda shop: True,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._client = client
        self._registry = registry
        self._policy = policy
        self._rejected = rejected  # shops whose session a call rejected (code 27)
        self._leads = leads  # several replicas: only a shop's leader renews it
        self._now = now
        self.records: dict[str, ShopRecord] = {}
        self.renewals = 0
        self.renewal_failures: dict[str, str] = {}
        self._renewed_at: dict[str, datetime] = {}

    def watch_rejected(self, rejected: Callable[[], Collection[str]]) -> None:
        """`rejected()`: the shops whose session a call answered with code 27 (the dispatcher's)."""
        self._rejected = rejected

    def register_metrics(self, registry: Registry) -> None:
        registry.gauge(
            "shop_session_expires_seconds",
            "Seconds until the shop's session expires (negative: expired), where the expiry is known",
            self._expiry_samples,
        )

    async def shops_changed(self, change: BookChange, records: dict[str, ShopRecord]) -> None:
        self.records = records

    async def run(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self._policy.check_seconds)  # a period, not a wait for something

    async def check(self) -> None:
        """Renew what is due, pause what expired with nothing to renew it."""
        now = self._now()
        rejected = set(self._rejected())
        for nick, record in sorted(self.records.items()):
            if not record.active or not self._leads(nick):
                continue
            left = None if record.expires_at is None else record.expires_at - now
            if record.refresh_token is not None:
                if self._rejected_now(nick, rejected, now) or (
                    left is not None and left <= self._policy.renew_ahead
                ):
                    await self._renew(record, now)
            elif left is not None and left <= timedelta(0):
                await self._pause_expired(nick)

    def _rejected_now(self, nick: str, rejected: set[str], now: datetime) -> bool:
        renewed = self._renewed_at.get(nick)
        return nick in rejected and (renewed is None or now - renewed > self._policy.rejection_grace)

    def expiring(self) -> dict[str, datetime]:
        """Active shops without a refresh token whose session expires within the warning time."""
        horizon = self._now() + self._policy.warn_ahead
        return {
            nick: r.expires_at
            for nick, r in sorted(self.records.items())
            if r.active and r.refresh_token is None and r.expires_at is not None and r.expires_at <= horizon
        }

    def readiness(self) -> tuple[Check, dict[str, Any]]:
        """Ready either way (an expiry ahead is a warning, not an outage); the detail names them."""
        soon = self.expiring()
        detail = {nick: at.isoformat() for nick, at in soon.items()}
        text = f"{len(soon)} session(s) expire soon, no refresh token" if soon else "no session expires soon"
        return Check(True, text), ({"expiring": detail} if soon else {})

    async def _renew(self, record: ShopRecord, now: datetime) -> None:
        assert record.refresh_token is not None
        try:
            renewed = await shop_calls.refresh(self._client, record.refresh_token, now)
            await self._registry.renew(
                record.nick, renewed.session, renewed.refresh_token, renewed.expires_at
            )
        except (OrderSyncError, *DATABASE_ERRORS) as exc:
            self.renewal_failures[record.nick] = str(exc)
            log.error(
                "session renewal failed: %s; trying again in %.0f s",
                exc,
                self._policy.check_seconds,
                extra={"action": "session_renewal_failed", "shop": record.nick},
            )
            return
        self.renewals += 1
        self._renewed_at[record.nick] = now
        self.renewal_failures.pop(record.nick, None)
        # Until the registry's doorbell brings the new session, this copy must not renew again.
        self.records[record.nick] = ShopRecord(
            record.nick, renewed.session, renewed.refresh_token, renewed.expires_at, record.status
        )
        log.info("session renewed", extra={"action": "session_renewed", "shop": record.nick})

    async def _pause_expired(self, nick: str) -> None:
        try:
            await self._registry.set_status(nick, ShopStatus.PAUSED, EXPIRED)
        except (OrderSyncError, *DATABASE_ERRORS) as exc:
            log.error(
                "could not pause the shop: %s", exc, extra={"action": "shop_pause_failed", "shop": nick}
            )
            return
        self.records.pop(nick, None)
        log.error(
            "session expired and no refresh token is held: shop paused until a new session is added "
            "(order-sync shops add)",
            extra={"action": "session_expired", "shop": nick},
        )

    def _expiry_samples(self) -> list[tuple[dict[str, str], float]]:
        now = self._now()
        return [
            ({"shop": nick}, (r.expires_at - now).total_seconds())
            for nick, r in sorted(self.records.items())
            if r.expires_at is not None and r.active
        ]
