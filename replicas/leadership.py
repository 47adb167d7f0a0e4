"""Which replica reconciles which shop: one leader per shop, through PostgreSQL advisory locks.

A replica leads a shop while it holds the shop's session-level advisory lock on its coordination
connection (`replicas.replica_set.CoordinationLink`). Only the leader reads a shop's gap windows, sweeps
it and loads its history; the other replicas consume the shop's pushes like any other (the TMC group
spreads messages over every connection) and leave its reconciliation alone.

* **Takeover.** When a leader dies, PostgreSQL ends its connection and releases the lock at once; the
  other replicas see it on their next round (every SYNC_HEARTBEAT_SECONDS) and one of them takes the
  shop and resumes from the ledger and the open gap reports. A replica that froze without dying is
  ended by the others (`replica_sql.END_FROZEN`), which frees its locks the same way.
* **Fair share.** Each replica leads at most ceil(shops / live replicas), preferring the shops that
  rank highest for it (rendezvous hashing, so the assignment stays put as replicas come and go). A
  replica above its share first stops *leading* the extra shops (`leads()` turns false, so a backfill
  stops at its next window boundary) and releases each lock once nothing runs for the shop.
* **Fencing.** A replica that lost its connection may still be half-way through a window. The
  transaction that advances the ledger therefore checks, in the database, that the replica's
  connection still holds the shop's lock (`fence`); if not, it rolls back with `NotLeader`, and the
  window is read again by the new leader. Nothing stale is ever recorded as proven.
* **A replica that cannot heartbeat** stops claiming leadership after the liveness timeout, even
  before PostgreSQL notices its connection is gone.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any, Protocol

from store import replica_sql
from store.errors import NotLeader

logger = logging.getLogger(__name__)

# The reason given when a replica lets its shops go because it is shutting down.
STOPPING = "stopping"

ChangeListener = Callable[[str, str], None]  # (change, shop): acquired, released, lost


class LockLink(Protocol):
    """What leadership needs from the coordination connection."""

    @property
    def pid(self) -> int | None: ...

    async def fetch(self, query: str, *args: Any) -> list[Any]: ...

    async def fetchval(self, query: str, *args: Any) -> Any: ...


def fair_share(shops: int, replicas: int) -> int:
    """The most shops one replica leads."""
    return math.ceil(shops / max(1, replicas))


def rank(shop: str, replica: str) -> int:
    """How much `replica` wants `shop` (rendezvous hashing): the same on every replica, stable over time."""
    digest = hashlib.blake2b(f"{shop}\0{replica}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class ShopLeadership:
    def __init__(
        self,
        shops: Collection[str],
        replica: str,
        *,
        on_change: ChangeListener | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._shops = shops  # read live: the daemon's shop book changes while it runs
        self.replica = replica
        self._on_change = on_change
        self._clock = clock
        self._held: set[str] = set()
        self._draining: set[str] = set()
        self._pid: int | None = None
        self._trusted_until = 0.0  # leadership claims count until then (last good round + liveness)
        self._busy: Callable[[str], bool] = lambda shop: False
        self._changed = asyncio.Event()

    @property
    def shops(self) -> list[str]:
        return list(self._shops)

    # ---- what the reconciler asks ---------------------------------------------------------------------

    def leads(self, shop: str) -> bool:
        """Reconcile `shop` now: its lock is held and it is not being handed over."""
        return shop in self._held and shop not in self._draining and self._clock() < self._trusted_until

    def holds(self, shop: str) -> bool:
        """The lock is held (a shop being handed over may still record the window it is reading)."""
        return shop in self._held and self._clock() < self._trusted_until

    @property
    def led(self) -> list[str]:
        return sorted(s for s in self._held if s not in self._draining)

    def watch_busy(self, busy: Callable[[str], bool]) -> None:
        """`busy(shop)`: reconciliation of `shop` is running; its lock is not released meanwhile."""
        self._busy = busy

    async def changed(self, within: float) -> None:
        """Wait until the set of led shops changes, or `within` seconds."""
        try:
            async with asyncio.timeout(within):
                await self._changed.wait()
        except TimeoutError:
            pass
        self._changed.clear()

    async def fence(self, conn: Any, shop: str) -> None:
        """Inside a transaction about to advance `shop`'s ledger: raise NotLeader unless this replica's
        coordination connection still holds the shop's lock."""
        pid = self._pid
        if pid is None or not self.holds(shop):
            raise NotLeader(shop)
        if not await conn.fetchval(replica_sql.STILL_LEADS, shop, pid):
            self._lose(shop, "lock gone")
            raise NotLeader(shop)

    # ---- rounds -------------------------------------------------------------------------------------

    async def round(self, link: LockLink, live: Sequence[str], *, trust_for: float) -> None:
        """One look at who leads what: drop shops whose lock is gone, hand over shops above the fair
        share, release the handed-over ones that are idle, and take free shops up to the share."""
        pid = link.pid
        if pid != self._pid:
            self.lose_all("new coordination connection")  # locks die with the connection that held them
            self._pid = pid
        shops = self.shops
        rows = await link.fetch(replica_sql.LEADERS, shops)
        holder = {row["shop"]: row["pid"] for row in rows}
        for shop in sorted(self._held):
            if shop not in holder:  # no longer served: nobody leads it
                self._lose(shop, "no longer served")
                await link.fetchval(replica_sql.STOP_LEADING, shop)
            elif holder.get(shop) != pid:
                self._lose(shop, "lock gone")
        members = list(live) or [self.replica]
        share = fair_share(len(shops), len(members))
        mine = sorted(self._held, key=lambda s: rank(s, self.replica), reverse=True)
        draining = set(mine[share:])
        for shop in draining - self._draining:
            logger.info(
                "handing shop over: %d replicas share %d shops",
                len(members),
                len(shops),
                extra={"action": "leadership_handover", "shop": shop},
            )
        if draining != self._draining:
            self._changed.set()
        self._draining = draining
        for shop in sorted(self._draining):
            if not self._busy(shop):
                # Noted before the unlock: nothing of this replica runs for the shop any more.
                self._held.discard(shop)
                self._draining.discard(shop)
                self._note("released", shop)
                await link.fetchval(replica_sql.STOP_LEADING, shop)
        if len(self._held) < share:
            for shop in self._candidates(holder, members):
                if await link.fetchval(replica_sql.TRY_LEAD, shop):
                    self._held.add(shop)
                    self._note("acquired", shop)
                    if len(self._held) >= share:
                        break
        self._trusted_until = self._clock() + trust_for

    def _candidates(self, holder: dict[str, int | None], members: Sequence[str]) -> list[str]:
        """Free shops, those this replica ranks first among the live ones before the others."""
        free = [s for s in self.shops if holder.get(s) is None and s not in self._held]

        def order(shop: str) -> tuple[bool, int]:
            first_choice = max(members, key=lambda r: rank(shop, r)) == self.replica
            return (not first_choice, -rank(shop, self.replica))

        return sorted(free, key=order)

    def lose_all(self, reason: str) -> None:
        """The coordination connection is gone or cannot be trusted: every lock went with it."""
        for shop in sorted(self._held):
            self._lose(shop, reason)
        self._pid = None
        self._trusted_until = 0.0

    def _lose(self, shop: str, reason: str) -> None:
        if shop not in self._held:
            return
        self._held.discard(shop)
        self._draining.discard(shop)
        # Letting go on a clean stop is routine; losing a lock while running is worth a warning.
        logger.log(
            logging.INFO if reason == STOPPING else logging.WARNING,
            "no longer leading the shop (%s)",
            reason,
            extra={"action": "leadership_lost", "shop": shop},
        )
        self._note("lost", shop)

    def _note(self, change: str, shop: str) -> None:
        if change == "acquired":
            logger.info("leading the shop", extra={"action": "leadership_acquired", "shop": shop})
        elif change == "released":
            logger.info("handed the shop over", extra={"action": "leadership_released", "shop": shop})
        self._changed.set()
        if self._on_change is not None:
            self._on_change(change, shop)

    def __repr__(self) -> str:
        draining = sorted(self._draining)
        return f"ShopLeadership(replica={self.replica!r}, leads={self.led}, draining={draining})"
