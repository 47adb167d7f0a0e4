"""Keeping each served shop subscribed (docs/operations.md#shops): `taobao.tmc.user.permit` for every
active shop not permitted yet, at start and whenever one is added or resumed, `taobao.tmc.user.cancel`
when one is removed.

Several replicas: a shop's leader (`replicas.leadership`) makes its calls, so a thousand shops on three
replicas cost a thousand permits, not three thousand. A replica that takes a shop's lead (at start, from
a replica that stopped or handed it over) reads the shop's registry record: a permit recorded there
within `PERMIT_TRUSTED_FOR` holds at the platform (a permit is the app's, whichever replica made it),
so the shop is taken as permitted; otherwise (never permitted, failed, permitted long ago, or its
leader died before recording) it is permitted again, which the platform allows. A replica lets go of
what it said of a shop it no longer leads: the new leader speaks for it in /readyz.

TMC delivers an app's messages only for sellers it permitted, so until a shop's permit succeeds the
stream proves nothing of it and the reconciler covers it by its lists alone; a shop whose permit failed
is tried again on every registry read, and makes /readyz say which and why. The calls go through the
TOP client's retries, taxonomy and rate limiter like every other.

A thousand shops at start: WORKERS calls in flight (the shared limiter paces them, so more workers never
mean more than the quota), and the outcomes are written to the registry in batches by one writer, so
neither a permit nor the stream ever waits on another shop's database write.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from pydantic import SecretStr

from common.errors import OrderSyncError
from common.health import Check
from common.metrics import Registry
from store.errors import DATABASE_ERRORS
from store.shop_book import BookChange
from store.shops import PermitOutcome, ShopRecord, ShopRegistry
from taobao import shop_calls
from taobao.transport import TopTransport

log = logging.getLogger(__name__)

# Permit calls in flight at once. Each waits mostly on the network; the limiter bounds the rate.
WORKERS = 32
# How long a recorded permit is taken on trust when a replica takes a shop's lead. Within it, a
# rolling start of several replicas costs one permit per shop; past it, the shop is permitted again,
# which also repairs a subscription cancelled outside the service.
PERMIT_TRUSTED_FOR = timedelta(hours=24)


class StreamCoverage(Protocol):
    """The reconciler's side: whether the stream carries a shop's changes, and since when."""

    def streamed(self, shop: str, since: datetime | None) -> None: ...


class ShopKeeper:
    def __init__(
        self,
        client: TopTransport,
        registry: ShopRegistry | None,
        coverage: StreamCoverage | None,
        *,
        workers: int = WORKERS,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        leads: Callable[[str], bool] = lambda shop: True,
        sessions: Mapping[str, SecretStr] | None = None,
    ) -> None:
        """`leads(shop)`: this replica makes `shop`'s calls (one replica: every shop). `sessions`: the
        served shops' sessions, read live (the shop book), for the shops whose lead is taken."""
        self._client = client
        self._leads = leads
        self._sessions: Mapping[str, SecretStr] = sessions if sessions is not None else {}
        self._registry = registry
        self._coverage = coverage
        self._workers = workers
        self._now = now
        self._work: asyncio.Queue[tuple[str, str, SecretStr | None]] = asyncio.Queue()
        self._queued: set[str] = set()
        self.permitted: set[str] = set()
        self.failures: dict[str, str] = {}  # nick → why its permit failed
        self.cancelled = 0
        self._unrecorded: dict[str, PermitOutcome] = {}  # the writer's next batch, newest per shop
        self._to_record = asyncio.Event()

    def register_metrics(self, registry: Registry) -> None:
        registry.gauge(
            "shop_permitted",
            "1 once the shop's TMC permit succeeded, 0 while it has not (its lists alone cover it)",
            lambda: (
                [({"shop": s}, 1.0) for s in sorted(self.permitted)]
                + [({"shop": s}, 0.0) for s in sorted(self.failures)]
            ),
        )

    async def shops_changed(self, change: BookChange, records: dict[str, ShopRecord]) -> None:
        """After each registry read: permit the active shops not permitted yet, cancel the removed."""
        for nick in sorted(change.removed):
            self.permitted.discard(nick)
            self.failures.pop(nick, None)
            # Read before the leadership round hears of the removal: the shop's leader cancels it.
            if nick not in records and self._leads(nick):
                self._queue("cancel", nick, None)
        for nick, record in sorted(records.items()):
            if record.active and nick not in self.permitted and self._leads(nick):
                self._queue("permit", nick, record.session)

    def permit_all(self, records: dict[str, ShopRecord]) -> None:
        """Permit every led shop of `records` (the TAOBAO_SHOPS of a daemon without a registry); the
        others when this replica takes their lead."""
        for nick, record in sorted(records.items()):
            if self._leads(nick):
                self._queue("permit", nick, record.session)

    def leadership_changed(self, change: str, shop: str) -> None:
        """`replicas.leadership`'s news: a shop taken is permitted unless its record says it is; one let
        go is its new leader's to speak for."""
        if change == "acquired":
            session = self._sessions.get(shop)
            if session is not None:
                self._queue("take", shop, session)
        else:
            self.permitted.discard(shop)
            self.failures.pop(shop, None)

    async def run(self) -> None:
        """The side task: a few workers making the calls (a thousand shops at start do not wait in line
        behind one slow answer, nor take more than their share of the quota's first place)."""
        await asyncio.gather(self._writer(), *(self._worker() for _ in range(self._workers)))

    def readiness(self) -> tuple[Check, dict[str, Any]]:
        if not self.failures:
            return Check(True, f"{len(self.permitted)} shop(s) permitted"), {}
        first = sorted(self.failures)[:5]
        detail = f"{len(self.failures)} shop(s) not permitted for TMC: " + "; ".join(
            f"{nick}: {self.failures[nick]}" for nick in first
        )
        return Check(False, detail), {"not_permitted": dict(self.failures)}

    def _queue(self, action: str, nick: str, session: SecretStr | None) -> None:
        # A take is a permit that may be spared: one of the two in line for a shop is enough.
        key = f"{'permit' if action == 'take' else action}:{nick}"
        if key not in self._queued:
            self._queued.add(key)
            self._work.put_nowait((action, nick, session))

    async def _worker(self) -> None:
        while True:
            action, nick, session = await self._work.get()
            try:
                if action == "permit" and session is not None:
                    await self._permit(nick, session)
                elif action == "take" and session is not None:
                    await self._take(nick, session)
                elif action == "cancel":
                    await self._cancel(nick)
            finally:
                self._queued.discard(f"{'permit' if action == 'take' else action}:{nick}")

    async def _take(self, nick: str, session: SecretStr) -> None:
        """This replica took `nick`'s lead: permitted already if its record says so, else permit it."""
        record: ShopRecord | None = None
        if self._registry is not None:
            try:
                record = await self._registry.get(nick)
            except (OrderSyncError, *DATABASE_ERRORS) as exc:
                log.warning(
                    "cannot read the shop's permit (%s); permitting it",
                    exc,
                    extra={"action": "shop_take_read_failed", "shop": nick},
                )
        if (
            record is None
            or record.permitted_at is None
            or record.permit_error is not None
            or self._now() - record.permitted_at > PERMIT_TRUSTED_FOR
        ):
            await self._permit(nick, session)
            return
        self.permitted.add(nick)
        self.failures.pop(nick, None)
        if self._coverage is not None:
            self._coverage.streamed(nick, record.permitted_at)

    async def _permit(self, nick: str, session: SecretStr) -> None:
        try:
            await shop_calls.permit(self._client, session)
        except OrderSyncError as exc:
            reason = str(exc)
            if self._leads(nick):  # else its new leader permits it again and speaks for it
                self.failures[nick] = reason
            log.error(
                "TMC permit failed (%s): the shop's lists alone cover it until a permit succeeds",
                reason,
                extra={"action": "shop_permit_failed", "shop": nick},
            )
            if self._coverage is not None:
                self._coverage.streamed(nick, None)
            self._record(PermitOutcome(nick, None, reason))
            return
        at = self._now()
        self.permitted.add(nick)
        self.failures.pop(nick, None)
        if self._coverage is not None:
            self._coverage.streamed(nick, at)
        log.info("TMC permit granted", extra={"action": "shop_permitted", "shop": nick})
        self._record(PermitOutcome(nick, at, None))

    async def _cancel(self, nick: str) -> None:
        try:
            await shop_calls.cancel(self._client, nick)
        except OrderSyncError as exc:
            log.warning("TMC cancel failed: %s", exc, extra={"action": "shop_cancel_failed", "shop": nick})
            return
        self.cancelled += 1
        log.info("TMC delivery cancelled", extra={"action": "shop_cancelled", "shop": nick})

    def _record(self, outcome: PermitOutcome) -> None:
        if self._registry is not None:
            self._unrecorded[outcome.nick] = outcome
            self._to_record.set()

    async def _writer(self) -> None:
        """Writes what was decided while the previous write ran, in one statement. A failed write is
        logged and dropped: the permits hold at TMC, the registry's column only informs `shops list`
        and the next start."""
        if self._registry is None:
            return
        while True:
            await self._to_record.wait()
            self._to_record.clear()
            batch, self._unrecorded = list(self._unrecorded.values()), {}
            try:
                await self._registry.record_permits(batch)
            except (OrderSyncError, *DATABASE_ERRORS) as exc:
                log.warning(
                    "could not record %d permit(s): %s",
                    len(batch),
                    exc,
                    extra={"action": "shop_permit_unrecorded"},
                )
