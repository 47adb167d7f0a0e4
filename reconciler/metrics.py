"""The reconciler's series: coverage (how far each shop is proven, open gaps, push loss) and the cost
and outcome of its backfills and sweeps."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime

from common.metrics import Registry, Samples
from store.fetch_apply import dead_letter_counter
from store.gap_reports import Cause, PassCounts

# The `purpose` of list and fullinfo calls (reconciler.sweep, reconciler.processing).
PURPOSES = ("sweep", "backfill")


class CoverageMetrics:
    """Series the reconciler keeps current; the listener only exposes them.

    `set_proven_until(shop, t)` after each interval the ledger proves complete; `ledger_lag_seconds`
    is then `now - t` at scrape time, so it keeps growing while nothing is proven. `set_gaps_open`
    after each gap scan; `set_unresolved` each round; `add_push_loss` for every trade a backfill found
    that the stream never announced. The configured `shops` show 0 from the start (no lag until
    something is proven: a 0 there would claim a proof)."""

    def __init__(
        self,
        registry: Registry,
        clock: Callable[[], datetime] | None = None,
        shops: Sequence[str] = (),
    ) -> None:
        self._clock = clock or (lambda: datetime.now(UTC))
        self._proven_until: dict[str, datetime] = {}
        self._gaps_open: dict[str, int] = {}
        self._unresolved: dict[str, int] = {}
        self.push_lost = registry.counter(
            "push_lost_total",
            "Trade changes found by reconciliation that the TMC stream never delivered",
            labels=("shop",),
        )
        for shop in shops:
            self.start_at_zero(shop)
        registry.gauge(
            "ledger_lag_seconds",
            "Now minus the end of the last interval the coverage ledger proved complete, per shop",
            self._lag_samples,
        )
        registry.gauge("gaps_open", "Coverage gaps not yet backfilled, per shop", self._gap_samples)
        registry.gauge(
            "unresolved_trades",
            "Trades that could not be fetched or stored and are not yet stored, per shop",
            lambda: [({"shop": shop}, float(n)) for shop, n in sorted(self._unresolved.items())],
        )

    def start_at_zero(self, shop: str) -> None:
        """Show `shop`'s series at 0 (a shop the daemon started with, or one added while it runs)."""
        self.push_lost.touch(shop=shop)
        self._gaps_open.setdefault(shop, 0)
        self._unresolved.setdefault(shop, 0)

    def set_proven_until(self, shop: str, until: datetime) -> None:
        if until.tzinfo is None:
            raise ValueError("until must be an aware datetime")
        self._proven_until[shop] = until

    def set_gaps_open(self, shop: str, count: int) -> None:
        self._gaps_open[shop] = count

    def set_unresolved(self, counts: Mapping[str, int], shops: Iterable[str]) -> None:
        """Unresolved trades per shop (`shops` are shown at 0 when they have none)."""
        self._unresolved = {shop: 0 for shop in shops} | dict(counts)

    def add_push_loss(self, shop: str, count: int = 1) -> None:
        self.push_lost.inc(count, shop=shop)

    def _lag_samples(self) -> Samples:
        now = self._clock()
        return [({"shop": s}, max(0.0, (now - t).total_seconds())) for s, t in self._proven_until.items()]

    def _gap_samples(self) -> Samples:
        return [({"shop": shop}, float(n)) for shop, n in self._gaps_open.items()]


class ReconcilerMetrics:
    def __init__(
        self, registry: Registry, coverage: CoverageMetrics | None, shops: Sequence[str] = ()
    ) -> None:
        self.coverage = coverage or CoverageMetrics(registry, shops=shops)
        self.recovered = registry.counter(
            "reconciler_trades_recovered_total",
            "Trades a backfill brought in or up to date, by shop and cause",
            labels=("shop", "cause"),
        )
        self.list_calls = registry.counter(
            "reconciler_list_calls_total", "Increment/sold.get calls, by purpose", labels=("purpose",)
        )
        self.fullinfo_calls = registry.counter(
            "reconciler_fullinfo_calls_total",
            "Fullinfo calls made by backfills and sweeps, by purpose",
            labels=("purpose",),
        )
        self.windows_failed = registry.counter(
            "reconciler_windows_failed_total",
            "Windows not read completely (they stay gaps), by shop",
            labels=("shop",),
        )
        self.gaps_opened = registry.counter(
            "reconciler_gaps_opened_total", "Gap reports opened, by cause", labels=("cause",)
        )
        self._start_at_zero(shops)
        # The service's one dead-letter series: trades a backfill could not fetch or store count there,
        # as the stream's do.
        self.dead_letters = dead_letter_counter(registry)
        self.gate_seconds = registry.histogram(
            "reconciler_gate_seconds",
            "How long the stream waited for the backfill before (re)connecting",
            (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600),
        )

    def _start_at_zero(self, shops: Sequence[str]) -> None:
        for purpose in PURPOSES:
            self.list_calls.touch(purpose=purpose)
            self.fullinfo_calls.touch(purpose=purpose)
        for cause in Cause:
            self.gaps_opened.touch(cause=cause.value)
        for shop in shops:
            self._shop_at_zero(shop)

    def shop_added(self, shop: str) -> None:
        """A shop added while the daemon runs gets its series at 0 at once, as the shops it started with
        did: an alert on `increase(...)` then fires on its first loss, not its second."""
        self.coverage.start_at_zero(shop)
        self._shop_at_zero(shop)

    def _shop_at_zero(self, shop: str) -> None:
        self.windows_failed.touch(shop=shop)
        for cause in Cause:
            self.recovered.touch(shop=shop, cause=cause.value)

    def count_pass(self, shop: str, cause: str, counts: PassCounts, *, purpose: str) -> None:
        """What a backfill or sweep pass cost and found."""
        if counts.brought_in:
            self.recovered.inc(counts.brought_in, shop=shop, cause=cause)
        if counts.push_loss:
            self.coverage.add_push_loss(shop, counts.push_loss)
        self.list_calls.inc(counts.list_calls, purpose=purpose)
        self.fullinfo_calls.inc(counts.fullinfo_calls, purpose=purpose)
        if counts.windows_failed:
            self.windows_failed.inc(counts.windows_failed, shop=shop)
