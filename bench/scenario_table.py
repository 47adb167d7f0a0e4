"""Markdown table rows from scenario JSON lines (the figures table in docs/performance.md).

.venv/bin/python -m bench.scenario --preset lossy > lossy.json
.venv/bin/python -m bench.scenario_table none.json flaky.json lossy.json peak.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HEADER = (
    "| preset | size | changes | faults injected | lost / stale / extra / unseen | "
    "fullinfo per change | gap reports (withheld matched) | lag p50 / p99 | load |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


def faults_text(f: dict[str, Any]) -> str:
    parts = []
    for key, label in (
        ("tmc_drops", "TMC drops"), ("duplicated", "duplicates"), ("reordered", "reordered"),
        ("withheld", "pushes lost"), ("refused_upgrades", "refused connects"),
        ("code7_answers", "code-7 answers"), ("isp_errors", "isp errors"), ("daemon_sigkills", "SIGKILL"),
        ("pg_backends_killed", "PG backends killed"), ("bursts", "bursts"),
    ):  # fmt: skip
        if f.get(key):
            parts.append(f"{f[key]} {label}")
    if f.get("outage_s"):
        parts.append(f"{f['outage_s']:g} s outage")
    if f.get("list_lag_s"):
        parts.append(f"{f['list_lag_s']:g} s list lag")
    return ", ".join(parts) or "none"


def row(fig: dict[str, Any], size: str) -> str:
    plan = fig["plan"]
    machine = fig["machine"]
    matched = f"{fig['withheld_in_reports']}/{fig['withheld_needing_recovery']}"
    return (
        f"| {fig['scenario']} | {size} ({plan['duration_s']:g} s @ {plan['rate']:.3g}/s) "
        f"| {fig['changes']} | "
        f"{faults_text(fig['faults'])} | {fig['lost']} / {fig['stale']} / {fig['extra']} / {fig['unseen']} | "
        f"{fig['fullinfo_per_change']} | {fig['gap_reports']} ({matched}) | "
        f"{fig['lag_p50_ms']} / {fig['lag_p99_ms']} ms | {machine['load_1m']} |"
    )


def main(argv: list[str]) -> int:
    print(HEADER)
    for name in argv:
        fig = json.loads(Path(name).read_text().strip().splitlines()[-1])
        size = "standard" if "std" in Path(name).stem or "standard" in Path(name).stem else "small"
        print(row(fig, size))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
