"""Shops the ledger does not know yet. With `SYNC_INITIAL_LOAD_DAYS` their initial load is planned (by
the shop's leader: at start, or on a later round when the leader at start died or none led it) and run
on the rounds until done; the load's gap report then carries on with the increment. Without it, a new
shop is followed from the first TMC connection on: its ledger starts there."""

from __future__ import annotations

import logging
from datetime import datetime

from reconciler.config import Shared
from reconciler.initial_load import InitialLoader
from reconciler.load_plan import InitialLoadFailed
from store.gap_reports import Cause, GapReport
from taobao.errors import SessionExpired

logger = logging.getLogger(__name__)


class NewShops:
    def __init__(self, shared: Shared, loader: InitialLoader, *, several: bool) -> None:
        self._shared = shared
        self.loader = loader
        self._several = several  # replicas: a load nobody planned at start is planned on a round
        self._unregistered: set[str] = set()  # followed from the next connection on

    async def at_start(self, shop: str) -> GapReport | None:
        """`shop` is new to the ledger: plan its load (its report is the outage to read), or follow it
        from the next connection on. None when there is nothing to read yet."""
        shared = self._shared
        if shared.config.initial_load_days <= 0:
            self._unregistered.add(shop)
            return None
        if not shared.coordination.leads(shop):
            return None  # its leader plans the load (see `run_due`)
        state = await self.loader.begin(shop, shared.config.initial_load_days)
        shared.metrics.gaps_opened.inc(cause=Cause.INITIAL_LOAD.value)
        return None if state.report_id is None else await shared.reports.get(state.report_id)

    async def load_pending(self, shop: str) -> bool:
        """`shop` has an initial load to run, or to plan on this round (`run_due`)."""
        load = await self.loader.state(shop)
        if load is not None:
            return not load.done
        days = self._shared.config.initial_load_days
        return self._several and days > 0 and await self._shared.ledger.sync_from(shop) is None

    async def run_due(self, shop: str) -> tuple[bool, int | None]:
        """On a round of the shop's leader: plan a load nobody planned yet (several replicas), run a
        load that is not done. Returns whether the shop's reports may be read now (not while its load
        failed this round), and the report of a load planned here."""
        shared = self._shared
        loader = self.loader
        planned: int | None = None
        load = await loader.state(shop)
        days = shared.config.initial_load_days
        if load is None and self._several and days > 0 and await shared.ledger.sync_from(shop) is None:
            # A new shop whose load nobody planned yet (its leader at start died, or it was not led).
            load = await loader.begin(shop, days)
            shared.metrics.gaps_opened.inc(cause=Cause.INITIAL_LOAD.value)
            planned = load.report_id
        if load is None or load.done:
            return True, planned
        try:
            await loader.run(shop, shared.session_of(shop))
        except (InitialLoadFailed, SessionExpired) as exc:
            # Both resume on a later round: a rejected session once the shop has a new one.
            cause = "the shop's session was rejected: " if isinstance(exc, SessionExpired) else ""
            logger.error(
                "initial load stopped (%s%s); it resumes on a later round",
                cause,
                exc,
                extra={"action": "initial_load_failed", "shop": shop},
            )
            return False, planned
        return True, planned

    def forget(self, shop: str) -> None:
        self._unregistered.discard(shop)

    async def register(self, at: datetime) -> None:
        """The stream is up: shops followed without an initial load start their ledger now."""
        for shop in sorted(self._unregistered):
            await self._shared.ledger.register_shop(shop, at)
            self._unregistered.discard(shop)
            logger.info(
                "shop followed from now on (no initial load)",
                extra={"action": "shop_registered", "shop": shop},
            )
