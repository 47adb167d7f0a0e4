"""Reconnect delays for the TMC session: jittered, capped, and reset only by a connection that lasted.

A server that accepts and then drops at once must not cause a tight loop (STYLE.md §9), so a
successful handshake alone does not reset the delay; the connection has to stay up `reset_after`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    base: float = 1.0
    cap: float = 60.0
    factor: float = 2.0
    # A connection must stay up this long before the next reconnect starts again from `base`.
    reset_after: float = 30.0
    # The least wait after a refused CONNECT. The production refusal codes are unknown (tmc.md §15),
    # so every refusal is treated as a possible credential problem and retried slowly.
    refusal_floor: float = 30.0

    def __post_init__(self) -> None:
        if self.base <= 0 or self.cap < self.base or self.factor < 1:
            raise ValueError("backoff needs 0 < base <= cap and factor >= 1")


class Backoff:
    """The delay sequence of one policy: base·factorⁿ capped, with "equal jitter" (half fixed, half
    random), so no delay is ever shorter than half the un-jittered value."""

    def __init__(self, policy: BackoffPolicy, rng: random.Random | None = None) -> None:
        self.policy = policy
        self.attempts = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        policy = self.policy
        ceiling = policy.base
        for _ in range(self.attempts):
            ceiling *= policy.factor
            if ceiling >= policy.cap:
                ceiling = policy.cap
                break
        self.attempts += 1
        half = min(ceiling, policy.cap) / 2
        return half + self._rng.uniform(0, half)

    def reset(self) -> None:
        self.attempts = 0
