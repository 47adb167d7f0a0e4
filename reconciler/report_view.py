"""Gap reports for people and machines: a plain-text table, JSON, and a self-contained HTML page with a
timeline per shop (stream up/down, proven stretches, gaps and their recoveries). Pure: it formats what
it is given.

Times are shown in GMT+8, Taobao's clock, which is also what sellers and on-call talk in.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from common.intervals import Interval
from store.coverage import Coverage, ProvenBy
from store.gap_reports import Cause, GapReport, StreamConnection
from taobao.timefmt import GMT8

COLUMNS = (
    ("id", 5),
    ("shop", 14),
    ("cause", 12),
    ("window (GMT+8)", 29),
    ("took", 7),
    ("list", 5),
    ("fullinfo", 8),
    ("found", 6),
    ("new", 5),
    ("chg", 5),
    ("same", 6),
    ("dead", 4),
    ("lost", 4),
    ("outcome", 9),
)


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


def open_reason(report: GapReport) -> str:
    """Why a report without an outcome is still open: its window can be proven only once the lag horizon
    (now - max(safety lag, overlap)) has passed its end; what it found was brought in meanwhile."""
    return f"open: provable after {local(report.provable_at)}, when the lag horizon passes its end"


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


def table(reports: Sequence[GapReport]) -> str:
    """One line per report, newest first, with a reason line under the ones that did not recover."""
    header = " ".join(_cell(name, width) for name, width in COLUMNS)
    lines = [header, "-" * len(header)]
    for r in reports:
        values = (
            str(r.id),
            r.shop,
            r.cause,
            window_text(r),
            duration(r.duration_seconds),
            str(r.list_calls),
            str(r.fullinfo_calls),
            str(r.trades_found),
            str(r.trades_new),
            str(r.trades_changed),
            str(r.trades_unchanged),
            str(r.dead_letters),
            str(r.push_loss),
            r.outcome or "open",
        )
        lines.append(" ".join(_cell(v, w) for v, (_, w) in zip(values, COLUMNS, strict=True)))
        if r.reason:
            lines.append(f"      ↳ {r.reason[:150]}")
        elif r.provable_at is not None:
            lines.append(f"      ↳ {open_reason(r)}")
    if not reports:
        lines.append("(no gap reports yet)")
    return "\n".join(lines)


def to_json(
    reports: Sequence[GapReport], connections: Sequence[StreamConnection], generated_at: datetime
) -> str:
    return json.dumps(
        {
            "generated_at": generated_at.isoformat(),
            "reports": [r.to_json() for r in reports],
            "stream_connections": [
                {
                    "replica": c.replica,
                    "connected_at": c.connected_at.isoformat(),
                    "disconnected_at": c.disconnected_at.isoformat() if c.disconnected_at else None,
                    "reason": c.reason,
                }
                for c in connections
            ],
        },
        ensure_ascii=False,
        indent=2,
    )


# ---- HTML -------------------------------------------------------------------------------------------------


@dataclass
class ShopTimeline:
    shop: str
    coverage: list[Coverage] = field(default_factory=list)
    reports: list[GapReport] = field(default_factory=list)


OUTCOME_COLOURS = {"recovered": "#2e7d32", "partial": "#f9a825", "failed": "#c62828", None: "#1565c0"}
PROOF_COLOURS = {
    ProvenBy.STREAM: "#81c784",
    ProvenBy.BACKFILL: "#64b5f6",
    ProvenBy.SWEEP: "#ba68c8",
    ProvenBy.INITIAL_LOAD: "#b0bec5",
}
_CSS = """
body{font:14px/1.45 -apple-system,"Segoe UI","PingFang SC","Microsoft YaHei","Noto Sans CJK SC",
  "WenQuanYi Micro Hei",sans-serif;margin:0;
  background:#f5f6f8;color:#1f2933}
header{background:#1f2933;color:#fff;padding:18px 28px}
header h1{margin:0;font-size:20px;font-weight:600}
header p{margin:4px 0 0;color:#b8c2cc;font-size:13px}
main{padding:20px 28px;max-width:1280px}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin-bottom:18px}
.card{background:#fff;border-radius:8px;padding:12px 16px;min-width:120px;
  box-shadow:0 1px 2px rgba(0,0,0,.08)}
.card b{display:block;font-size:22px}
.card span{color:#616e7c;font-size:12px}
section{background:#fff;border-radius:8px;padding:14px 18px;margin-bottom:18px;
  box-shadow:0 1px 2px rgba(0,0,0,.08)}
section h2{font-size:16px;margin:0 0 8px}
.legend{display:flex;gap:14px;flex-wrap:wrap;font-size:12px;color:#52606d;margin:6px 0 10px}
.legend i{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:4px;vertical-align:-2px}
svg text{font-size:11px;fill:#52606d}
table{border-collapse:collapse;width:100%;font-size:12.5px}
th,td{padding:5px 8px;border-bottom:1px solid #e4e7eb;text-align:right;white-space:nowrap}
th{color:#52606d;font-weight:600;background:#f9fafb}
td.l,th.l{text-align:left}
td.reason{white-space:normal;color:#7b8794;text-align:left;max-width:340px}
.pill{border-radius:10px;padding:1px 8px;color:#fff;font-size:11.5px}
.none{color:#7b8794}
"""


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def time_range(
    reports: Sequence[GapReport], connections: Sequence[StreamConnection], now: datetime
) -> Interval:
    """From the earliest gap of interest (an initial load's months are clipped) to now."""
    starts = [r.window_start for r in reports if r.cause != Cause.INITIAL_LOAD.value]
    starts += [c.connected_at for c in connections]
    if not starts:
        starts = [r.window_start for r in reports] or [now - timedelta(hours=1)]
    start = min(starts)
    span = max(now - start, timedelta(minutes=1))
    start = max(start - span * 0.03, now - timedelta(days=7))
    return Interval(start, now + span * 0.02)


def _ticks(span: Interval, count: int = 6) -> list[datetime]:
    step = span.length / count
    return [span.start + step * i for i in range(count + 1)]


class _Axis:
    def __init__(self, span: Interval, left: float, width: float) -> None:
        self.span, self.left, self.width = span, left, width

    def x(self, moment: datetime) -> float:
        fraction = (moment - self.span.start) / self.span.length
        return self.left + max(0.0, min(1.0, fraction)) * self.width

    def bar(self, start: datetime, end: datetime | None, now: datetime) -> tuple[float, float] | None:
        end = end or now
        if end <= self.span.start or start >= self.span.end:
            return None
        x0, x1 = self.x(start), self.x(end)
        return x0, max(x1 - x0, 1.5)


def _timeline_svg(
    timeline: ShopTimeline, connections: Sequence[StreamConnection], span: Interval, now: datetime
) -> str:
    width, left = 1180, 92
    axis = _Axis(span, left, width - left - 12)
    lanes = ("stream", "proven", "gaps", "recovery")
    lane_h, top = 22, 8
    height = top + lane_h * len(lanes) + 26
    parts = [f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="timeline">']
    for i, name in enumerate(lanes):
        y = top + i * lane_h
        parts.append(f'<text x="0" y="{y + 15}">{name}</text>')
        parts.append(
            f'<rect x="{left}" y="{y + 3}" width="{axis.width}" height="{lane_h - 6}" fill="#f1f3f5" rx="3"/>'
        )

    def rect(
        lane: int, box: tuple[float, float] | None, colour: str, tip: str, *, hollow: bool = False
    ) -> None:
        if box is None:
            return
        y = top + lane * lane_h + 4
        style = f'fill="none" stroke="{colour}" stroke-width="2"' if hollow else f'fill="{colour}"'
        parts.append(
            f'<rect x="{box[0]:.1f}" y="{y}" width="{box[1]:.1f}" height="{lane_h - 8}" rx="2" {style}>'
            f"<title>{_esc(tip)}</title></rect>"
        )

    for c in connections:
        tip = f"stream up {local(c.connected_at)} → {local(c.disconnected_at)} ({c.reason or 'still up'})"
        rect(0, axis.bar(c.connected_at, c.disconnected_at, now), "#43a047", tip)
    for cov in timeline.coverage:
        tip = f"proven by {cov.proven_by.value}: {local(cov.interval.start)} → {local(cov.interval.end)}"
        rect(1, axis.bar(cov.interval.start, cov.interval.end, now), PROOF_COLOURS[cov.proven_by], tip)
    for r in timeline.reports:
        colour = OUTCOME_COLOURS.get(r.outcome, OUTCOME_COLOURS[None])
        tip = f"#{r.id} {r.cause}: {window_text(r)} · {r.trades_new} new, {r.trades_changed} changed"
        rect(2, axis.bar(r.window_start, r.window_end, now), colour, tip)
        if r.started_at is not None:
            took = f"#{r.id} recovery {local(r.started_at)} → {local(r.finished_at)} ({r.outcome or 'open'})"
            rect(3, axis.bar(r.started_at, r.finished_at, now), colour, took, hollow=r.finished_at is None)
    base = top + lane_h * len(lanes) + 14
    ticks = _ticks(span)
    for n, tick in enumerate(ticks):
        x = axis.x(tick)
        anchor = "start" if n == 0 else "end" if n == len(ticks) - 1 else "middle"  # labels stay inside
        parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{base - 10}" stroke="#d9dde2"/>')
        parts.append(
            f'<text x="{x:.1f}" y="{base}" text-anchor="{anchor}">{_esc(local(tick, seconds=False))}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _report_rows(reports: Iterable[GapReport]) -> str:
    rows = []
    for r in reports:
        colour = OUTCOME_COLOURS.get(r.outcome, OUTCOME_COLOURS[None])
        rows.append(
            "<tr>"
            f"<td>{r.id}</td><td class=l>{_esc(r.cause)}</td><td class=l>{_esc(window_text(r))}</td>"
            f"<td class=l>{_esc(local(r.detected_at))}</td><td>{_esc(duration(r.duration_seconds))}</td>"
            f"<td>{r.list_calls}</td><td>{r.fullinfo_calls}</td><td>{r.trades_found}</td>"
            f"<td>{r.trades_new}</td><td>{r.trades_changed}</td><td>{r.trades_unchanged}</td>"
            f"<td>{r.dead_letters}</td><td>{r.push_loss}</td>"
            f'<td class=l><span class=pill style="background:{colour}">'
            f"{_esc(r.outcome or 'open')}</span></td>"
            f"<td class=reason>{_esc(r.reason or (open_reason(r) if r.provable_at else ''))}</td>"
            "</tr>"
        )
    return "".join(rows)


def _legend() -> str:
    items = [("#43a047", "stream connected")]
    items += [(colour, f"proven by {kind.value.replace('_', ' ')}") for kind, colour in PROOF_COLOURS.items()]
    items += [(OUTCOME_COLOURS[k], k or "open") for k in ("recovered", "partial", "failed", None)]
    return "".join(f'<span><i style="background:{c}"></i>{_esc(t)}</span>' for c, t in items)


def page(
    timelines: Sequence[ShopTimeline],
    connections: Sequence[StreamConnection],
    generated_at: datetime,
) -> str:
    """The whole report as one HTML document (no scripts, no external resources)."""
    reports = [r for t in timelines for r in t.reports]
    span = time_range(reports, connections, generated_at)
    outcomes = {k: sum(1 for r in reports if r.outcome == k) for k in ("recovered", "partial", "failed")}
    cards = [
        (len(reports), "gaps"),
        (outcomes["recovered"], "recovered"),
        (outcomes["partial"] + sum(1 for r in reports if r.outcome is None), "open or partial"),
        (outcomes["failed"], "failed"),
        (sum(r.trades_new + r.trades_changed for r in reports), "trades brought in"),
        (sum(r.push_loss for r in reports), "pushes lost"),
        (sum(r.list_calls + r.fullinfo_calls for r in reports), "TOP calls spent"),
    ]
    head = (
        "<th>#</th><th class=l>cause</th><th class=l>window (GMT+8)</th><th class=l>detected</th>"
        "<th>took</th><th>list</th><th>fullinfo</th><th>found</th><th>new</th><th>changed</th>"
        "<th>same</th><th>dead</th><th>lost</th><th class=l>outcome</th><th class=l>why</th>"
    )
    sections = []
    for t in timelines:
        body = (
            f"<table><tr>{head}</tr>{_report_rows(t.reports)}</table>"
            if t.reports
            else "<p class=none>No gaps in this period.</p>"
        )
        sections.append(
            f"<section><h2>{_esc(t.shop)}</h2>"
            f"{_timeline_svg(t, connections, span, generated_at)}{body}</section>"
        )
    return (
        "<!doctype html><html lang=zh-CN><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>order-sync gap report</title><style>{_CSS}</style></head><body>"
        "<header><h1>order-sync · gap recovery report</h1>"
        f"<p>generated {_esc(local(generated_at))} GMT+8 · timeline {_esc(local(span.start))} → "
        f"{_esc(local(span.end))}</p></header><main>"
        '<div class="cards">'
        + "".join(f'<div class="card"><b>{v:,}</b><span>{_esc(label)}</span></div>' for v, label in cards)
        + f'</div><div class="legend">{_legend()}</div>'
        + "".join(sections)
        + "</main></body></html>"
    )
