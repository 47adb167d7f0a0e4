"""README's alerts fire on the first event after a restart. Prometheus' `increase()` sees a rise only
between two samples of one series, so a series born at 1 with the first event would raise no alert
until the second: every series an alert reads is there at 0 from the first scrape. Here a process just
started is scraped, the sweep finds the first push loss, and the scrape after it shows 0 → 1."""

from __future__ import annotations

from daemon.metrics import DaemonMetrics
from simulator.clock import ManualClock
from simulator.standin import StandIn
from store.pg import PgStore
from taobao.client import TopClient
from taobao.tmc.events import Connected
from tests.ops.helpers import parse_metrics
from tests.reconciler.conftest import make_reconciler, small_config
from tests.reconciler.hand_stream import OVERLAP, client, clock, deliver, lose_a_change, standin

__all__ = ["client", "clock", "standin"]  # the fixtures this module uses

Scrape = dict[str, list[tuple[dict[str, str], float]]]


def sample(scrape: Scrape, name: str, **labels: str) -> float | None:
    """The one series `name{labels}`, or None when the scrape has no such series."""
    found = [value for got, value in scrape.get(name, []) if got == labels]
    assert len(found) <= 1
    return found[0] if found else None


def increase(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    """What `increase(name{labels}[window])` sees over a window holding these two scrapes."""
    first, last = sample(before, name, **labels), sample(after, name, **labels)
    if first is None or last is None:
        return 0.0  # one sample or none: no rise to see
    return last - first


def test_every_series_an_alert_reads_is_there_at_zero_from_the_first_scrape() -> None:
    metrics = DaemonMetrics(shops=["shop-a", "shop-b"])
    at_start = parse_metrics(metrics.render())
    for shop in ("shop-a", "shop-b"):
        assert sample(at_start, "order_sync_push_lost_total", shop=shop) == 0
        assert sample(at_start, "order_sync_gaps_open", shop=shop) == 0
        assert sample(at_start, "order_sync_unresolved_trades", shop=shop) == 0
        assert sample(at_start, "order_sync_ledger_lag_seconds", shop=shop) is None  # nothing proven yet
    for reason in ("invalid_trade", "refused_by_database", "malformed_frame", "text_replaced"):
        assert sample(at_start, "order_sync_dead_letters_total", reason=reason) == 0
    assert sample(at_start, "order_sync_store_batches_total", outcome="failed") == 0
    assert sample(at_start, "order_sync_fullinfo_fetches_total", outcome="permanent_error") == 0
    # The process's own, from prometheus-client's process collector.
    assert (sample(at_start, "process_resident_memory_bytes") or 0) > 0
    assert (sample(at_start, "process_open_fds") or 0) > 0
    assert sample(at_start, "process_cpu_seconds_total") is not None


async def test_the_push_loss_alert_fires_on_the_first_loss_after_a_restart(
    standin: StandIn, clock: ManualClock, pg: PgStore, client: TopClient
) -> None:
    shop = standin.shops[0].nick
    metrics = DaemonMetrics(shops=[shop])  # a process that just started
    metrics.watch_top_client(client.stats)
    at_start = parse_metrics(metrics.render())
    assert sample(at_start, "order_sync_push_lost_total", shop=shop) == 0

    reconciler = make_reconciler(
        standin, pg, client, small_config(overlap=OVERLAP), now=clock.now,
        registry=metrics.registry, coverage_metrics=metrics.coverage,
    )  # fmt: skip
    await reconciler.start()
    await reconciler.on_state(Connected(clock.now(), "token"))
    clock.advance(1)
    stored = {change.tid for change in standin.market.step(6)}
    await deliver(standin, pg, client, stored)
    clock.advance(5)
    await lose_a_change(standin, pg, client, stored)
    await reconciler.detector.flush_stream(clock.now())
    await reconciler.sweep(shop)  # the stream has not claimed the change's second yet: no loss
    clock.advance(5)
    await reconciler.detector.flush_stream(clock.now())
    assert (await reconciler.sweep(shop)).push_loss == 1

    after = parse_metrics(metrics.render())
    assert sample(after, "order_sync_push_lost_total", shop=shop) == 1
    assert increase(at_start, after, "order_sync_push_lost_total", shop=shop) > 0  # the alert fires
    # Had the series been born with the loss, the same two scrapes would have shown no rise.
    born_late = {k: v for k, v in at_start.items() if k != "order_sync_push_lost_total"}
    assert increase(born_late, after, "order_sync_push_lost_total", shop=shop) == 0
