"""When the reconciler tries again, on the service's one delay schedule (`common.backoff`).

* A report left `partial` (a window failed for a reason worth retrying) is tried again after a delay
  that starts at one round (`SYNC_RECONCILE_SECONDS`) and doubles up to `retry_cap_seconds`
  (`RetrySchedule`); until then the rounds pass it by.
* Database work that must not be lost (the gate, the session's connect and disconnect records, a
  pass's bookkeeping) is retried past a lost connection with a short backoff (`retrying_db`): the next
  attempt opens a new connection.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from common.backoff import Backoff, BackoffPolicy, retrying
from store.errors import StoreError

logger = logging.getLogger(__name__)

T = TypeVar("T")


def db_policy(cap_seconds: float) -> BackoffPolicy:
    """From 0.2 s, doubling, to 5 s (or `cap_seconds`, when shorter) between two tries."""
    cap = min(5.0, cap_seconds)
    return BackoffPolicy(base=min(0.2, cap), cap=cap)


class RetrySchedule:
    """Per report, when it may be tried again. `clock` is monotonic seconds."""

    def __init__(
        self,
        policy: BackoffPolicy,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.policy = policy
        self._clock = clock
        self._rng = rng
        self._waits: dict[int, tuple[float, Backoff]] = {}  # report id → (due at, its delays)

    @classmethod
    def for_rounds(cls, tick_seconds: float, cap_seconds: float) -> RetrySchedule:
        """From one round, doubling, up to `cap_seconds` (never less than a round)."""
        base = min(tick_seconds, cap_seconds)
        return cls(BackoffPolicy(base=base, cap=max(base, cap_seconds)))

    def due(self, report_id: int) -> bool:
        wait = self._waits.get(report_id)
        return wait is None or self._clock() >= wait[0]

    def failed(self, report_id: int) -> float:
        """The report failed again: it is due after the next delay of its schedule, which is returned."""
        wait = self._waits.get(report_id)
        delays = wait[1] if wait is not None else Backoff(self.policy, self._rng)
        delay = delays.next_delay()
        self._waits[report_id] = (self._clock() + delay, delays)
        return delay

    def forget(self, report_id: int) -> None:
        """The report is done: nothing to wait for."""
        self._waits.pop(report_id, None)


async def retrying_db(
    action: str,
    work: Callable[[], Awaitable[T]],
    *,
    policy: BackoffPolicy,
    sleep: Callable[[float], Awaitable[None]],
    attempts: int | None = None,
) -> T:
    """`await work()` until it gets past database errors (StoreError); with `attempts`, the last error
    is raised after that many tries."""

    def log(error: BaseException, attempt: int, delay: float) -> None:
        logger.warning(
            "database error: %s; retrying in %.1f s",
            error,
            delay,
            extra={"action": action, "attempt": attempt},
        )

    return await retrying(
        work, retry_on=StoreError, policy=policy, attempts=attempts, sleep=sleep, on_retry=log
    )
