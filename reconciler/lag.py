"""List lag, measured: how late Taobao's list indexes show a change (docs/top-api.md#data-delay: about ten
minutes at sale peaks). The overlap every window is shifted back by widens when the measured lag grows
(docs/design.md#list-lag-converges).

A trade stored here with `modified` m inside a window that the window's listing left out, although
fullinfo says it has not changed since, is a *suspect*: the list may not yet have seen a change
`queried_at - m` old, or it may have left the trade out for another reason. Only a later listing that
shows the trade at m confirms it as lag; that sample, `queried_at - m` of the read that missed it, is a
lower bound of the real lag. A suspect never listed again (the trade changed after the window, or the
list leaves it out for good) is no evidence and expires. Samples are therefore all below the real lag,
so the overlap (`factor` times the largest recent sample) converges on it instead of ratcheting up.

A window proven while the list could not yet see its end (read less than the lag now measured after
its end) is suspect too: its proof is queued for withdrawal, and the stretch is read again.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from common.intervals import Interval
from taobao.fields import MAX_INCREMENT_SPAN

logger = logging.getLogger(__name__)


class ProofWithdrawal(Protocol):
    async def withdraw_list_proofs(self, shop: str, interval: Interval) -> bool: ...


@dataclass(slots=True)
class Suspect:
    """A stored trade a listing left out although it had not changed since (see the module docstring)."""

    shop: str
    tid: int
    modified: datetime
    unlisted_at: datetime  # the latest listing that should have shown it and did not
    checks: int = 0  # later listings that still did not show it


@dataclass(frozen=True, slots=True)
class _Proof:
    shop: str
    interval: Interval
    queried_at: datetime


class LagMeter:
    # A suspect still unlisted after this many checks is not lag (the list leaves it out for good).
    MAX_CHECKS = 3

    def __init__(
        self,
        configured_overlap: timedelta,
        *,
        memory: timedelta = timedelta(hours=1),
        factor: float = 1.5,
    ) -> None:
        if factor < 1:
            raise ValueError("factor must be at least 1")
        self.configured_overlap = configured_overlap
        self.memory = memory
        self.factor = factor
        self._samples: deque[tuple[datetime, float]] = deque()
        self._last_overlap = configured_overlap
        self._suspects: dict[tuple[str, int], Suspect] = {}
        self._proofs: deque[_Proof] = deque()
        self._withdrawals: dict[str, list[Interval]] = {}

    # ---- suspects --------------------------------------------------------------------------------

    def suspect(self, shop: str, tid: int, modified: datetime, unlisted_at: datetime) -> None:
        """A listing at `unlisted_at` left out `tid`, stored and unchanged at `modified`."""
        known = self._suspects.get((shop, tid))
        if known is not None and known.modified == modified:
            known.unlisted_at = max(known.unlisted_at, unlisted_at)
            return
        self._suspects[(shop, tid)] = Suspect(shop, tid, modified, unlisted_at)

    def suspects(self, shop: str, now: datetime) -> list[Suspect]:
        """`shop`'s suspects still worth a look (older ones expire)."""
        horizon = now - self.memory
        for key in [k for k, s in self._suspects.items() if s.unlisted_at < horizon]:
            del self._suspects[key]
        return [s for s in self._suspects.values() if s.shop == shop]

    def checked(self, suspect: Suspect, *, listed: bool, at: datetime) -> None:
        """A later listing of `suspect.modified`'s second did (`listed`) or did not show the trade."""
        key = (suspect.shop, suspect.tid)
        if self._suspects.get(key) is not suspect:
            return
        if listed:
            del self._suspects[key]
            self.observe((suspect.unlisted_at - suspect.modified).total_seconds(), at, suspect.shop)
            return
        suspect.checks += 1
        if suspect.checks >= self.MAX_CHECKS:
            del self._suspects[key]  # left out for another reason than lag: no evidence

    # ---- samples ---------------------------------------------------------------------------------

    def observe(self, seconds: float, at: datetime, shop: str | None = None) -> None:
        """One confirmed lag sample (seconds a change stayed invisible to the lists), seen at `at`."""
        if seconds <= 0:
            return
        self._samples.append((at, seconds))
        logger.info(
            "list lag sample: a change %.0f s old was not listed yet",
            seconds,
            extra={"action": "list_lag_sample", "shop": shop},
        )
        self._withdraw_short_proofs(self.overlap(at))

    def measured(self, now: datetime) -> float | None:
        """The largest sample within `memory` of `now`, in seconds (None: no recent sample)."""
        horizon = now - self.memory
        while self._samples and self._samples[0][0] < horizon:
            self._samples.popleft()
        return max((s for _, s in self._samples), default=None)

    def overlap(self, now: datetime) -> timedelta:
        """The overlap to use now: never less than configured, widened to cover the measured lag."""
        overlap = self.configured_overlap
        lag = self.measured(now)
        if lag is not None:
            widened = timedelta(seconds=math.ceil(lag * self.factor))
            overlap = min(max(overlap, widened), MAX_INCREMENT_SPAN)
        if overlap != self._last_overlap:
            logger.warning(
                "increment overlap now %.0f s (configured %.0f s, measured list lag %s s)",
                overlap.total_seconds(),
                self.configured_overlap.total_seconds(),
                "none" if lag is None else f"{lag:.0f}",
                extra={"action": "overlap_changed"},
            )
            self._last_overlap = overlap
        return overlap

    # ---- proofs made under a lag later measured longer -------------------------------------------

    def proven(self, shop: str, interval: Interval, queried_at: datetime) -> None:
        """A list read at `queried_at` proved `interval`; remembered for `memory`."""
        horizon = queried_at - self.memory
        while self._proofs and self._proofs[0].queried_at < horizon:
            self._proofs.popleft()
        self._proofs.append(_Proof(shop, interval, queried_at))

    def withdrawals(self, shop: str) -> list[Interval]:
        """The stretches of `shop` whose proof is to be withdrawn (each handed out once; `requeue` what
        could not be withdrawn)."""
        return self._withdrawals.pop(shop, [])

    def requeue(self, shop: str, holes: list[Interval]) -> None:
        self._withdrawals.setdefault(shop, [])[:0] = holes

    async def withdraw(self, shop: str, ledger: ProofWithdrawal) -> int:
        """Withdraw `shop`'s queued stretches from `ledger`; how many held a list proof. What a failed
        write leaves is queued again for the next pass."""
        holes = self.withdrawals(shop)
        withdrawn = 0
        for at, hole in enumerate(holes):
            try:
                withdrawn += await ledger.withdraw_list_proofs(shop, hole)
            except BaseException:
                self.requeue(shop, holes[at:])
                raise
        return withdrawn

    def _withdraw_short_proofs(self, overlap: timedelta) -> None:
        """Proofs whose read came less than `overlap` after the interval's end: the part the list could
        not see yet is queued for withdrawal."""
        kept: deque[_Proof] = deque()
        for proof in self._proofs:
            blind_from = proof.queried_at - overlap
            if blind_from >= proof.interval.end:
                kept.append(proof)
                continue
            blind = Interval(max(proof.interval.start, _floor_second(blind_from)), proof.interval.end)
            self._withdrawals.setdefault(proof.shop, []).append(blind)
            if blind.start > proof.interval.start:
                kept.append(_Proof(proof.shop, Interval(proof.interval.start, blind.start), proof.queried_at))
        self._proofs = kept


def _floor_second(moment: datetime) -> datetime:
    return moment - timedelta(microseconds=moment.microsecond)
