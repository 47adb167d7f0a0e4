"""Gap reports for people and machines: a plain-text table, JSON, and a self-contained HTML page with a
timeline per shop (stream up/down, proven stretches, gaps and their recoveries). Pure: it formats what
it is given (`ReportData`; `daemon.report_data` reads it from the database for `order-sync report` and
the daemon's `/reports` pages alike).

Each report gets one of three verdicts, so a real problem stands out among reports that are open by
design (reconciler/__init__.py: a report stays open until the lag horizon passes its end):

* **recovered** — its window is proven complete;
* **data in, proof pending** — open, every stretch of its window was read (or proven by the ledger
  otherwise) and nothing in it failed: it only waits for the horizon, and says when that comes;
* **data may be missing** — a failed or partial window, a stretch nobody has read yet, or unresolved
  trades (fetched or stored by nobody yet, `store.unresolved`) that belong to its window. A report's
  dead letters are history, not a debt: a trade that failed is unresolved until a fetch stores it.

Times are shown in GMT+8, Taobao's clock, which is also what sellers and on-call talk in.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from common.intervals import Interval, gaps
from store.coverage import Coverage
from store.gap_reports import Cause, GapReport, Outcome, StreamConnection
from taobao.timefmt import GMT8

SECOND = timedelta(seconds=1)


class Status(enum.StrEnum):
    RECOVERED = "recovered"
    PENDING = "proof_pending"
    MISSING = "may_be_missing"


LABELS = {
    Status.RECOVERED: "recovered",
    Status.PENDING: "data in · proof pending",
    Status.MISSING: "data may be missing",
}


@dataclass(frozen=True, slots=True)
class Verdict:
    status: Status
    why: str  # one line for people
    needs_action: bool = False  # failed for good: nothing retries it

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status.value, "why": self.why, "needs_action": self.needs_action}


@dataclass(frozen=True)
class ReportData:
    """What one rendering shows: the reports (newest first), the TMC connections beside them, each
    shop's ledger stretches, and its unresolved trades: how many, and the stretches of those that
    reach into the reports' windows."""

    generated_at: datetime
    reports: Sequence[GapReport]
    connections: Sequence[StreamConnection] = ()
    coverage: Mapping[str, Sequence[Coverage]] = field(default_factory=dict)
    # Per shop, trades not fetched or stored yet (docs/design.md#unresolved-trades-block-proof), and
    # the stretch of `modified` time each of those in the reports' windows belongs to.
    unresolved: Mapping[str, int] = field(default_factory=dict)
    owed: Mapping[str, Sequence[Interval]] = field(default_factory=dict)
    # An unread stretch at most this long is the safety lag every fresh read leaves, not a hole.
    slack: timedelta = timedelta(seconds=31)
    shops: Sequence[str] = ()  # shops to show even without reports (a `--shop` asked for)

    def verdict(self, report: GapReport) -> Verdict:
        return verdict(
            report,
            covered=[c.interval for c in self.coverage.get(report.shop, ())],
            owed=self.owed.get(report.shop, ()),
            slack=self.slack,
            now=self.generated_at,
        )

    def shop_names(self) -> list[str]:
        return sorted({*self.shops, *(r.shop for r in self.reports)})


def verdict(
    report: GapReport,
    *,
    covered: Sequence[Interval],
    owed: Sequence[Interval],
    slack: timedelta,
    now: datetime,
) -> Verdict:
    """Recovered, proof pending or data may be missing (module docstring), with the reason in words."""
    outcome = report.outcome
    if outcome == Outcome.FAILED.value:
        return Verdict(Status.MISSING, f"failed for good: {report.reason or 'no reason recorded'}", True)
    if outcome == Outcome.PARTIAL.value:
        return Verdict(Status.MISSING, f"part of the window failed, retried: {report.reason or '-'}")
    unresolved = sum(1 for b in owed if b.end > report.window_start and b.start < report.window_end)
    if unresolved:
        why = f"{unresolved} unresolved trade(s) in its window, retried (order-sync dead-letters)"
        return Verdict(Status.MISSING, why)
    if outcome == Outcome.RECOVERED.value:
        return Verdict(Status.RECOVERED, "proven complete")
    read_until = max(report.progress_until or report.window_start, report.fresh_until or report.window_start)
    known = (
        [*covered, Interval(report.window_start, read_until)] if read_until > report.window_start else covered
    )
    unread = sum((hole.length for hole in gaps(known, report.window_start, report.window_end)), timedelta(0))
    if read_until <= report.window_start and unread > slack:
        if report.cause == Cause.INITIAL_LOAD.value and report.started_at is not None:
            return Verdict(Status.MISSING, "history still loading")
        return Verdict(Status.MISSING, f"not read yet (detected {local(report.detected_at)})")
    # What is left unread after a read is the tail a fresh read cannot reach (it stops at now - safety
    # lag, and a reconnect extends the window): the proof read reads it once the horizon passes.
    tail = f" · last {duration(unread.total_seconds())} read then" if unread > slack else ""
    when = "once the lag horizon passes" if report.provable_at is None else relative(report.provable_at, now)
    return Verdict(Status.PENDING, f"all found trades are in · provable {when}{tail}")


def relative(moment: datetime, now: datetime) -> str:
    """'at 21:08:00 (in 8.0m)', or 'since 21:08:00 (2.0m ago)' once it has passed."""
    ahead = (moment - now).total_seconds()
    if ahead > 0:
        return f"at {clock(moment, now)} (in {duration(ahead)})"
    return f"since {clock(moment, now)} ({duration(-ahead)} ago)"


def clock(moment: datetime, now: datetime) -> str:
    """`moment` in GMT+8, without the date when it is `now`'s."""
    shown = moment.astimezone(GMT8)
    return shown.strftime("%H:%M:%S" if shown.date() == now.astimezone(GMT8).date() else "%m-%d %H:%M:%S")


def local(moment: datetime | None, *, seconds: bool = True) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(GMT8).strftime("%m-%d %H:%M:%S" if seconds else "%m-%d %H:%M")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def window_text(report: GapReport) -> str:
    start, end = report.window_start.astimezone(GMT8), report.window_end.astimezone(GMT8)
    tail = end.strftime("%H:%M:%S") if start.date() == end.date() else end.strftime("%m-%d %H:%M")
    return f"{start.strftime('%m-%d %H:%M:%S')} → {tail}"


# ---- the terminal ----------------------------------------------------------------------------------------

COLUMNS = (
    ("id", 5),
    ("shop", 14),
    ("cause", 12),
    ("window (GMT+8)", 29),
    ("took", 7),
    ("list", 5),
    ("fullinfo", 8),
    ("skip", 5),
    ("found", 6),
    ("new", 5),
    ("chg", 5),
    ("same", 6),
    ("dead", 4),
    ("lost", 4),
    ("outcome", 9),
    ("status", 23),
)


def _cell(text: str, width: int) -> str:
    # East Asian wide characters take two columns; shop nicks are mostly Chinese.
    shown, used = "", 0
    for ch in text:
        step = 2 if ord(ch) > 0x2E7F else 1
        if used + step > width:
            shown = shown[:-1] + "…" if shown else ""
            used = sum(2 if ord(c) > 0x2E7F else 1 for c in shown)
            break
        shown += ch
        used += step
    return shown + " " * max(0, width - used)


def table(data: ReportData) -> str:
    """One line per report, newest first, each followed by its verdict's reason."""
    header = " ".join(_cell(name, width) for name, width in COLUMNS)
    lines = [header, "-" * len(header)]
    for r in data.reports:
        seen = data.verdict(r)
        values = (
            str(r.id), r.shop, r.cause, window_text(r), duration(r.duration_seconds), str(r.list_calls),
            str(r.fullinfo_calls), str(r.fetches_skipped), str(r.trades_found), str(r.trades_new),
            str(r.trades_changed), str(r.trades_unchanged), str(r.dead_letters), str(r.push_loss),
            r.outcome or "open",
            LABELS[seen.status].upper() if seen.status is Status.MISSING else LABELS[seen.status],
        )  # fmt: skip
        lines.append(" ".join(_cell(v, w) for v, (_, w) in zip(values, COLUMNS, strict=True)).rstrip())
        lines.append(f"      ↳ {seen.why[:150]}")
    if not data.reports:
        lines.append("(no gap reports yet)")
    return "\n".join(lines)


def to_json(data: ReportData) -> str:
    return json.dumps(
        {
            "generated_at": data.generated_at.isoformat(),
            "reports": [r.to_json() | data.verdict(r).to_json() for r in data.reports],
            "stream_connections": [
                {
                    "replica": c.replica,
                    "connected_at": c.connected_at.isoformat(),
                    "disconnected_at": c.disconnected_at.isoformat() if c.disconnected_at else None,
                    "reason": c.reason,
                }
                for c in data.connections
            ],
            "unresolved_trades": dict(data.unresolved),
        },
        ensure_ascii=False,
        indent=2,
    )
