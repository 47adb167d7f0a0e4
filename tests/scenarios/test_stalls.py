"""The scenario runner's reading of the daemon's reconnect stalls (bench/scenarios/stalls.py): summed over
daemon processes, p50 interpolated in its bucket, max as the highest bucket's bound."""

from __future__ import annotations

from bench.scenarios.stalls import StallHistogram
from listener.metrics import ListenerMetrics


def scraped(*stalls: float) -> str:
    metrics = ListenerMetrics()
    for stall in stalls:
        metrics.reconnect_stall.observe(stall)
    return metrics.registry.render()


def test_stalls_of_several_daemon_processes_add_up() -> None:
    histogram = StallHistogram()
    histogram.add(scraped(0.8, 1.5, 1.6))
    histogram.add(scraped(4.0))  # the process started after a SIGKILL
    figures = histogram.figures()
    assert figures["count"] == 4
    assert figures["mean_s"] == round((0.8 + 1.5 + 1.6 + 4.0) / 4, 2)
    assert 1.0 <= figures["p50_s"] <= 2.0  # the second and third stalls' bucket
    assert figures["max_le_s"] == 5.0
    assert figures["scrapes"] == 2


def test_no_reconnect_gives_no_figures() -> None:
    histogram = StallHistogram()
    histogram.add(scraped())
    assert histogram.figures() == {"count": 0, "mean_s": None, "p50_s": None, "max_le_s": None, "scrapes": 1}
