"""The sweeps' share of the TOP rate: with few shops every SYNC_SWEEP_SECONDS, with many stretched so
that sweeping them all stays within SYNC_RECONCILE_SHARE of SYNC_API_RATE."""

from __future__ import annotations

from datetime import timedelta

import pytest

from reconciler.config import ReconcilerConfig, sweep_interval


@pytest.mark.parametrize(
    ("shops", "expected"),
    [(0, 300.0), (1, 300.0), (600, 300.0), (601, 300.5), (1000, 500.0), (10_000, 5000.0)],
)
def test_the_sweep_interval_keeps_sweeps_within_their_share(shops: int, expected: float) -> None:
    config = ReconcilerConfig(sweep_every=timedelta(seconds=300), api_rate=40.0, reconcile_share=0.1)
    interval = sweep_interval(config, shops)
    assert interval == pytest.approx(expected)
    assert shops * config.calls_per_sweep / interval <= 0.1 * 40.0 + 1e-9
