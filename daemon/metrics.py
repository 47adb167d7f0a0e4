"""The daemon's metrics: one registry holding the stream's, the coverage and the reconciler's series,
plus what the daemon reads at scrape time from the parts that keep their own counts (the TOP client,
the TMC session) and the release it runs."""

from __future__ import annotations

import time
from collections import Counter as CountTable
from collections.abc import Sequence
from importlib import metadata
from typing import Protocol

from common.metrics import Registry, Samples
from listener.metrics import ListenerMetrics, watch_session_counters
from listener.session import TmcSession
from reconciler.metrics import CoverageMetrics
from taobao.clock import ClockSkew
from taobao.pause import AppPause


class TopCallStats(Protocol):
    """What `taobao.transport.ClientStats` keeps: HTTP attempts by (method, outcome), retries, bans."""

    calls: CountTable[tuple[str, str]]
    retries: CountTable[str]
    bans: int
    ban_seconds: float


def _version() -> str:
    try:
        return metadata.version("taobao-order-sync")
    except metadata.PackageNotFoundError:
        return "unknown"


class DaemonMetrics:
    """The daemon's series, by what an operator asks: is it keeping up, is anything being lost. Every
    series is there from the first scrape, a labelled one for each of `shops` too, so an alert on
    `increase(...)` fires on the first event after a restart. The process's own (memory, CPU, open
    files) come from prometheus-client's process collector."""

    def __init__(self, registry: Registry | None = None, shops: Sequence[str] = ()) -> None:
        self.registry = registry or Registry()
        version = _version()
        self.registry.gauge(
            "build_info", "Always 1; the release in the version label", lambda: [({"version": version}, 1)]
        )
        self.registry.watch_process()
        self.stream = ListenerMetrics(self.registry)
        self.coverage = CoverageMetrics(self.registry, shops=shops)

    def watch_top_client(self, stats: TopCallStats) -> None:
        """Expose the TOP client's own counts: every HTTP attempt, so they match the gateway's."""

        def calls() -> Samples:
            return [({"method": m, "outcome": o}, n) for (m, o), n in list(stats.calls.items())]

        self.registry.counter_from(
            "top_calls_total", "TOP API HTTP attempts by method and outcome (retries included)", calls
        )
        self.registry.counter_from(
            "top_retries_total",
            "TOP API attempts retried after a retryable error or a ban, by method",
            lambda: [({"method": m}, n) for m, n in list(stats.retries.items())],
        )
        self.registry.counter_from(
            "top_bans_total", "Rate-limit bans (code 7) seen; every caller pauses", lambda: [({}, stats.bans)]
        )
        self.registry.counter_from(
            "top_ban_seconds_total",
            "Seconds of rate-limit bans announced by TOP",
            lambda: [({}, stats.ban_seconds)],
        )

    def watch_clock_skew(self, skew: ClockSkew) -> None:
        """Taobao's clock minus ours (docs/design.md#clock-skew); alert well before 600 s (code 31)."""

        def seconds() -> Samples:
            estimate = skew.estimate()
            return [] if estimate is None else [({}, estimate.total_seconds())]

        self.registry.gauge(
            "top_clock_skew_seconds",
            "Taobao's clock minus this host's, estimated from TOP answers' Date headers and TMC times",
            seconds,
        )

    def watch_app_pause(self, pause: AppPause) -> None:
        """Expose the app-wide pause (docs/design.md#app-wide-pause): alert on `top_app_paused`."""
        self.registry.gauge(
            "top_app_paused",
            "1 while every TOP call is held behind one probe after an app-wide failure",
            lambda: [({}, float(pause.paused))],
        )
        self.registry.counter_from(
            "top_app_pauses_total",
            "App-wide TOP failures that paused every call (permissions, signature, clock, unknown code)",
            lambda: [({}, pause.state().pauses)],
        )

    def watch_tmc_session(self, session: TmcSession) -> None:
        """Expose the TMC session's connection state and counters."""
        counters = session.counters

        def down_seconds() -> Samples:
            if session.connected:
                return [({}, 0.0)]
            return [({}, max(0.0, time.monotonic() - session.down_since))]

        r = self.registry
        r.gauge(
            "tmc_connected", "1 while the TMC push connection is up", lambda: [({}, float(session.connected))]
        )
        r.gauge(
            "tmc_disconnected_seconds", "How long the TMC connection has been down (0 while up)", down_seconds
        )
        r.counter_from("tmc_connects_total", "TMC connections established", lambda: [({}, counters.connects)])
        r.counter_from(
            "tmc_refusals_total", "CONNECTs the TMC server refused", lambda: [({}, counters.refusals)]
        )
        r.counter_from(
            "tmc_frames_malformed_total",
            "Frames that could not be decoded (quarantined and skipped)",
            lambda: [({}, counters.decode_errors)],
        )
        r.counter_from(
            "tmc_acks_dropped_total",
            "Confirms or fails not sent because the connection was gone (the server redelivers)",
            lambda: [({}, counters.acks_dropped)],
        )
        watch_session_counters(r, counters)

    def render(self) -> str:
        return self.registry.render()
