"""Fault presets: which stand-in flags, daemon settings and timed actions make up each scenario.

Times are seconds after the market opens. Every preset scales to the run's duration and market rate,
so the same preset runs small in CI and long on a workstation.

* none: no faults.
* flaky: the TMC connection dropped every 10 s, 5 % duplicate pushes, 10 % of pushes reordered, 5 % of
  TOP calls failing with isp.* errors, and every 15 s the app's quota drops to a third of the offered
  rate for 2.5 s, so calls over it get code-7 bans ("This ban will last for 2 more seconds").
* lossy: flaky + 2 % of pushes lost outright + list lag + a TMC outage (connects refused for 20 s after
  every connection is dropped) + one SIGKILL of the daemon and a restart + one kill of the daemon's
  PostgreSQL connections (pg_terminate_backend).
* peak: a Double-11 hour scaled down: a steady market plus a burst every 6 s (new trades each changed
  3-4 times within 2 s), list lag of 30 s (minutes in production) with peak-mode list answers, 20 ms
  API latency, and an API quota (SYNC_API_RATE) at the steady rate, below the bursts' event rate.
* hostile: lossy + what real Taobao sends that a careful client still trips over: fullinfo says
  trade-not-exist for 3 s after a TradeCreate, 3 % of trades answered with broken values (a date
  before year 1, 1E-20000 and "N/A" as money, arrays nested thousands deep), 3 % of new trades whose
  buyer typed a NUL and a lone surrogate, 3 % of list pages malformed, one app-wide error window of
  10 s (the permission package lapsed), refund topics with a tid on every refund, 2 % of pushes with
  a header the protocol does not define, one clean close whose reason holds a NUL, and one push
  larger than the daemon's frame limit. The broken-answer faults are off for the settle phase.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PRESETS = ("none", "flaky", "lossy", "peak", "hostile")


@dataclass(frozen=True, slots=True)
class Action:
    at: float  # seconds after the market opens
    kind: str  # tmc | faults | kill_daemon | pg_kill | burst
    body: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Size:
    duration: float
    rate: float  # market changes per second (the steady part)


# Small: what CI runs (each about a minute or two end to end). Standard: the documented runs.
SIZES: dict[str, dict[str, Size]] = {
    "small": {
        "none": Size(20, 30),
        "flaky": Size(40, 30),
        "lossy": Size(60, 30),
        "peak": Size(30, 20),
        "hostile": Size(80, 30),
    },
    "standard": {
        "none": Size(90, 100),
        "flaky": Size(120, 60),
        "lossy": Size(150, 60),
        "peak": Size(90, 40),
        "hostile": Size(180, 60),
    },
}


@dataclass(frozen=True, slots=True)
class Plan:
    preset: str
    duration: float
    rate: float
    standin_args: tuple[str, ...]
    daemon_settings: dict[str, Any]
    actions: tuple[Action, ...]
    list_lag: float = 0.0
    outage_seconds: float = 0.0
    # Knobs set when the market stops, so the settle phase recovers what was lost instead of losing
    # more: the stand-in's /__standin/faults and /__standin/tmc patches.
    settle_faults: dict[str, Any] = field(default_factory=lambda: {"rate_limit_per_second": 0})
    settle_tmc: dict[str, Any] = field(default_factory=dict)

    def faults_summary(self) -> dict[str, Any]:
        kinds: dict[str, int] = {}
        for action in self.actions:
            kinds[action.kind] = kinds.get(action.kind, 0) + 1
        return {"standin_flags": list(self.standin_args), "actions": kinds}


def _bans(duration: float, rate: float) -> list[Action]:
    """A quota that drops below the offered rate for 2.5 s every 15 s: code-7 bans of 2 s."""
    limit = max(1, int(rate // 3))
    actions: list[Action] = []
    at = 4.0
    while at + 3 < duration:
        actions.append(Action(at, "faults", {"rate_limit_per_second": limit, "ban_seconds": 2}))
        actions.append(Action(at + 2.5, "faults", {"rate_limit_per_second": 0}))
        at += 15.0
    return actions


FLAKY_FLAGS: tuple[str, ...] = (
    "--tmc-drop-every", "10",
    "--tmc-duplicate", "0.05",
    "--tmc-reorder", "0.10",
    "--isp-error-rate", "0.05",
)  # fmt: skip

# Daemon settings every scenario shares: the reconciler's timers scaled from minutes to seconds so a
# lost push is found within a short run, and no initial load (the shops are followed from the start).
COMMON_SETTINGS: dict[str, Any] = {
    "sync_initial_load_days": 0,
    # Unresolved trades tried again within seconds, so what the faults left owed is stored in the settle
    # phase (production: from 10 s to 10 min).
    "sync_redrive_seconds": 1,
    "sync_redrive_cap_seconds": 5,
    "sync_reconcile_seconds": 2,
    "sync_stream_settle_seconds": 2,
    "sync_safety_lag_seconds": 2,
    "sync_drain_seconds": 5,
    "sync_rejection_retry_seconds": 5,
}


# hostile on top of lossy's flags. The pushes padded past 9 MiB are bigger than the daemon's 8 MiB
# frame limit; the other rates are modest so that what breaks shows as a few trades, not all of them.
HOSTILE_FLAGS: tuple[str, ...] = (
    "--detail-lag", "3",
    "--odd-values-rate", "0.03",
    "--odd-text-rate", "0.03",
    "--malformed-page-rate", "0.03",
    "--tmc-unknown-headers", "0.02",
    "--tmc-refund-topics",
    "--tmc-oversize-bytes", str(9 * 1024 * 1024),
)  # fmt: skip
HOSTILE_SETTLE_FAULTS: dict[str, Any] = {
    "rate_limit_per_second": 0,
    "odd_values_rate": 0.0,
    "malformed_page_rate": 0.0,
    "error_window": "",
}
HOSTILE_SETTLE_TMC: dict[str, Any] = {
    "unknown_header_fraction": 0.0,
    "oversize_every": 0,
    "oversize_next": 0,
    "close_next": 0,
}


def _lossy_actions(d: float, r: float, outage_seconds: float) -> list[Action]:
    outage_at = max(5.0, d * 0.15)
    return [
        *_bans(d, r),
        Action(outage_at, "tmc", {"refuse_for": outage_seconds, "drop_now": True}),
        Action(max(outage_at + outage_seconds + 5, d * 0.6), "kill_daemon"),
        Action(max(outage_at + outage_seconds + 10, d * 0.85), "pg_kill"),
    ]


def _hostile_actions(d: float, outage_seconds: float) -> list[Action]:
    """After lossy's outage: a close with a NUL in its reason, one oversize push, and a 10 s error
    window between the daemon's restart and the PostgreSQL kill."""
    after_outage = max(5.0, d * 0.15) + outage_seconds
    window = {"error_window": "permission", "error_window_seconds": 10}
    return [
        # The daemon may be between connections then: the close waits for the next one.
        Action(after_outage + 3, "tmc", {"close_next": 1}),
        Action(max(after_outage + 6, d * 0.5), "tmc", {"oversize_next": 1}),
        Action(max(after_outage + 12, d * 0.65), "faults", window),
    ]


def plan(preset: str, size: str = "small", duration: float | None = None, rate: float | None = None,
         outage_seconds: float = 20.0) -> Plan:  # fmt: skip
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; known: {', '.join(SIZES)}")
    base = SIZES[size][preset]
    d = float(duration if duration is not None else base.duration)
    r = float(rate if rate is not None else base.rate)
    settings = dict(COMMON_SETTINGS)
    if preset == "none":
        settings["sync_sweep_seconds"] = 30
        return Plan(preset, d, r, (), settings, ())
    if preset == "flaky":
        settings["sync_sweep_seconds"] = 10
        return Plan(preset, d, r, FLAKY_FLAGS, settings, tuple(_bans(d, r)))
    if preset in ("lossy", "hostile"):
        # hostile's own faults come after lossy's outage and need about 25 s of it.
        shortest = outage_seconds + (20 if preset == "lossy" else 45)
        if d < shortest:
            raise ValueError(f"{preset} needs a duration of at least {shortest:g} s")
        list_lag = 3.0
        settings |= {"sync_sweep_seconds": 10, "sync_overlap_seconds": 30}
        actions = _lossy_actions(d, r, outage_seconds)
        flags: tuple[str, ...] = (*FLAKY_FLAGS, "--tmc-lose", "0.02", "--list-lag", f"{list_lag:g}")
        extra: dict[str, Any] = {}
        if preset == "hostile":
            actions += _hostile_actions(d, outage_seconds)
            flags += HOSTILE_FLAGS
            extra = {"settle_faults": HOSTILE_SETTLE_FAULTS, "settle_tmc": HOSTILE_SETTLE_TMC}
        return Plan(preset, d, r, flags, settings, tuple(sorted(actions, key=lambda a: a.at)),
                    list_lag=list_lag, outage_seconds=outage_seconds, **extra)  # fmt: skip
    # peak
    list_lag = 30.0
    # The quota binds during the bursts (about 3.5 events per new trade within 2 s): the figure that
    # matters is fullinfo calls per event when events outrun the quota.
    settings |= {"sync_sweep_seconds": 30, "sync_overlap_seconds": 60, "sync_api_rate": max(5, int(r))}
    bursts = []
    at = 2.0
    while at + 3 <= d:
        bursts.append(Action(at, "burst", {"trades": max(10, int(r * 2)), "create_window": 1.0, "span": 2.0}))
        at += 6.0
    peak_flags: tuple[str, ...] = ("--list-lag", f"{list_lag:g}", "--peak-mode", "--latency-ms", "20")
    return Plan(preset, d, r / 3, peak_flags, settings, tuple(bursts), list_lag=list_lag)
