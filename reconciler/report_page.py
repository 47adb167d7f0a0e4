"""The gap reports as one self-contained HTML page: a verdict banner, summary cards, and per shop a
timeline (stream up/down, proven stretches, gaps and their recoveries) above its reports' rows. Pure:
it draws the `ReportData` that `reconciler.report_view` defines and judges.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime, timedelta

from common.intervals import Interval
from reconciler.report_view import (
    LABELS,
    ReportData,
    Status,
    Verdict,
    duration,
    local,
    relative,
    window_text,
)
from store.coverage import ProvenBy
from store.gap_reports import Cause, GapReport, StreamConnection
from taobao.timefmt import GMT8

GREEN, SLATE, ORANGE, RED = "#2e7d32", "#78909c", "#e65100", "#b71c1c"
PROOF_COLOURS = {
    ProvenBy.STREAM: "#81c784",
    ProvenBy.BACKFILL: "#64b5f6",
    ProvenBy.SWEEP: "#ba68c8",
    ProvenBy.INITIAL_LOAD: "#b0bec5",
}
# CJK fonts first: shop nicks are mostly Chinese, and a stack without one renders them as boxes.
FONT_STACK = (
    '"Noto Sans CJK SC","Noto Sans SC","Source Han Sans SC","WenQuanYi Zen Hei","WenQuanYi Micro Hei",'
    '"PingFang SC","Hiragino Sans GB","Microsoft YaHei",-apple-system,"Segoe UI",Roboto,sans-serif'
)
_CSS = f"""
body{{font:14px/1.45 {FONT_STACK};margin:0;background:#f5f6f8;color:#1f2933}}
header{{background:#1f2933;color:#fff;padding:18px 28px}}
header h1{{margin:0;font-size:20px;font-weight:600}}header p{{margin:4px 0 0;color:#b8c2cc;font-size:13px}}
header a{{color:#b8c2cc}}main{{padding:20px 28px;max-width:1280px}}
.verdict{{border-radius:8px;padding:12px 16px;margin-bottom:16px;font-size:15px;border-left:6px solid}}
.verdict.ok{{background:#e8f5e9;border-color:{GREEN}}}.verdict.bad{{background:#ffebee;border-color:{RED}}}
.verdict ul{{margin:6px 0 0;padding-left:20px;font-size:13.5px}}.verdict a{{color:inherit}}
.cards{{display:flex;gap:12px;flex-wrap:wrap;margin-bottom:18px}}
.card{{background:#fff;border-radius:8px;padding:12px 16px;min-width:120px;
  box-shadow:0 1px 2px rgba(0,0,0,.08);border-top:4px solid #e4e7eb}}
.card b{{display:block;font-size:22px}}.card span{{color:#616e7c;font-size:12px}}
section{{background:#fff;border-radius:8px;padding:14px 18px;margin-bottom:18px;
  box-shadow:0 1px 2px rgba(0,0,0,.08)}}
section h2{{font-size:17px;margin:0 0 8px}}
section h2 small{{font-size:12.5px;font-weight:400;color:#616e7c;margin-left:10px}}
.legend{{display:flex;gap:14px;flex-wrap:wrap;font-size:12px;color:#52606d;margin:6px 0 10px}}
.legend i{{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:4px;
  vertical-align:-2px}}
svg text{{font-size:11px;fill:#52606d}}table{{border-collapse:collapse;width:100%;font-size:12.5px}}
th,td{{padding:5px 8px;border-bottom:1px solid #e4e7eb;text-align:right;white-space:nowrap}}
th{{color:#52606d;font-weight:600;background:#f9fafb}}td.l,th.l{{text-align:left}}
td.why{{white-space:normal;color:#52606d;text-align:left;min-width:230px;max-width:400px}}
tr.may_be_missing td{{background:#fff8f5}}tr.may_be_missing td.why{{color:#8a1c00}}
.pill{{border-radius:10px;padding:1px 8px;color:#fff;font-size:11.5px}}.none{{color:#7b8794}}"""


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def colour(seen: Verdict) -> str:
    if seen.status is Status.RECOVERED:
        return GREEN
    if seen.status is Status.PENDING:
        return SLATE
    return RED if seen.needs_action else ORANGE


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


_STEPS = [timedelta(seconds=s) for s in (1, 2, 5, 10, 15, 30)]
_STEPS += [timedelta(minutes=m) for m in (1, 2, 5, 10, 15, 30)]
_STEPS += [timedelta(hours=h) for h in (1, 2, 3, 6, 12)] + [timedelta(days=d) for d in (1, 2, 7)]


def ticks(span: Interval, most: int = 8) -> list[tuple[datetime, str]]:
    """Axis ticks at round GMT+8 times, at most `most`, each labelled as finely as its step needs
    (seconds below a minute), with the date where it changes: no two labels alike."""
    step = next((s for s in _STEPS if span.length / s <= most - 1), _STEPS[-1])
    # Each step divides a day or is whole days: multiples of it from a GMT+8 midnight are round times.
    epoch = datetime(1970, 1, 1, tzinfo=GMT8)
    first = epoch + -((epoch - span.start) // step) * step  # the first multiple at or after the start
    shape = "%H:%M:%S" if step < timedelta(minutes=1) else "%H:%M" if step < timedelta(days=1) else "%m-%d"
    out: list[tuple[datetime, str]] = []
    moment, last_day = first, None
    while moment <= span.end:
        shown = moment.astimezone(GMT8)
        label = shown.strftime(shape)
        # The date where it changes; on every label once a time of day can recur (spans over a day).
        if shape != "%m-%d" and (shown.date() != last_day or span.length >= timedelta(days=1)):
            label = shown.strftime("%m-%d ") + label
        last_day = shown.date()
        out.append((moment, label))
        moment += step
    return out


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


LANES = ("stream", "proven", "gaps", "recovery")
WIDTH, LEFT, LANE_H, TOP = 1180, 92, 22, 8


def _timeline_svg(data: ReportData, shop: str, reports: Sequence[GapReport], span: Interval) -> str:
    now = data.generated_at
    axis = _Axis(span, LEFT, WIDTH - LEFT - 12)
    height = TOP + LANE_H * len(LANES) + 26
    parts = [f'<svg viewBox="0 0 {WIDTH} {height}" width="100%" role="img" aria-label="timeline">']
    for i, name in enumerate(LANES):
        y = TOP + i * LANE_H
        parts.append(f'<text x="0" y="{y + 15}">{name}</text>')
        parts.append(
            f'<rect x="{LEFT}" y="{y + 3}" width="{axis.width}" height="{LANE_H - 6}" fill="#f1f3f5" rx="3"/>'
        )

    def rect(
        lane: int, box: tuple[float, float] | None, fill: str, tip: str, *, hollow: bool = False
    ) -> None:
        if box is None:
            return
        y = TOP + lane * LANE_H + 4
        style = f'fill="none" stroke="{fill}" stroke-width="2"' if hollow else f'fill="{fill}"'
        parts.append(
            f'<rect x="{box[0]:.1f}" y="{y}" width="{box[1]:.1f}" height="{LANE_H - 8}" rx="2" {style}>'
            f"<title>{_esc(tip)}</title></rect>"
        )

    for c in data.connections:
        tip = f"stream up {local(c.connected_at)} → {local(c.disconnected_at)} ({c.reason or 'still up'})"
        rect(0, axis.bar(c.connected_at, c.disconnected_at, now), "#43a047", tip)
    for cov in data.coverage.get(shop, ()):
        tip = f"proven by {cov.proven_by.value}: {local(cov.interval.start)} → {local(cov.interval.end)}"
        rect(1, axis.bar(cov.interval.start, cov.interval.end, now), PROOF_COLOURS[cov.proven_by], tip)
    for r in reports:
        seen = data.verdict(r)
        tip = f"#{r.id} {r.cause}: {window_text(r)} · {LABELS[seen.status]}: {seen.why}"
        rect(2, axis.bar(r.window_start, r.window_end, now), colour(seen), tip)
        if r.started_at is not None:
            took = f"#{r.id} recovery {local(r.started_at)} → {local(r.finished_at)} ({r.outcome or 'open'})"
            rect(
                3,
                axis.bar(r.started_at, r.finished_at, now),
                colour(seen),
                took,
                hollow=r.finished_at is None,
            )
    base = TOP + LANE_H * len(LANES) + 14
    for moment, label in ticks(span):
        x = axis.x(moment)
        # Labels near either end are anchored inwards so they stay inside the picture.
        anchor = "start" if x - LEFT < 45 else "end" if LEFT + axis.width - x < 45 else "middle"
        parts.append(f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{base - 10}" stroke="#d9dde2"/>')
        parts.append(f'<text class="tick" x="{x:.1f}" y="{base}" text-anchor="{anchor}">{_esc(label)}</text>')
    x_now = axis.x(now)
    parts.append(
        f'<line x1="{x_now:.1f}" y1="{TOP}" x2="{x_now:.1f}" y2="{base - 10}" stroke="#1f2933" '
        'stroke-dasharray="3,3"><title>now</title></line></svg>'
    )
    return "".join(parts)


def _report_rows(data: ReportData, reports: Sequence[GapReport]) -> str:
    rows = []
    for r in reports:
        seen = data.verdict(r)
        rows.append(
            f'<tr id="r{r.id}" class="{seen.status.value}">'
            f"<td>{r.id}</td><td class=l>{_esc(r.cause)}</td><td class=l>{_esc(window_text(r))}</td>"
            f"<td class=l>{_esc(local(r.detected_at))}</td><td>{_esc(duration(r.duration_seconds))}</td>"
            f"<td>{r.list_calls}</td><td>{r.fullinfo_calls}</td><td>{r.fetches_skipped}</td>"
            f"<td>{r.trades_found}</td>"
            f"<td>{r.trades_new}</td><td>{r.trades_changed}</td><td>{r.trades_unchanged}</td>"
            f"<td>{r.dead_letters}</td><td>{r.push_loss}</td>"
            f'<td class=l><span class="pill status" style="background:{colour(seen)}">'
            f"{_esc(LABELS[seen.status])}</span></td>"
            f"<td class=why>{_esc(seen.why)}</td>"
            "</tr>"
        )
    return "".join(rows)


def _legend() -> str:
    items = [("#43a047", "stream connected")]
    items += [(c, f"proven by {kind.value.replace('_', ' ')}") for kind, c in PROOF_COLOURS.items()]
    items += [(GREEN, "gap recovered"), (SLATE, "gap: data in, proof pending")]
    items += [
        (ORANGE, "gap: data may be missing (retrying)"),
        (RED, "gap: data may be missing (needs action)"),
    ]
    return "".join(f'<span><i style="background:{c}"></i>{_esc(t)}</span>' for c, t in items)


def _summary(data: ReportData) -> str:
    """The first thing on the page: is any data missing, and where."""
    verdicts = [(r, data.verdict(r)) for r in data.reports]
    missing = [(r, v) for r, v in verdicts if v.status is Status.MISSING]
    if missing:
        items = "".join(
            f'<li><a href="#r{r.id}">{_esc(r.shop)} #{r.id} ({_esc(r.cause)})</a>: {_esc(v.why)}</li>'
            for r, v in missing
        )
        head = f"<b>Data may be missing in {len(missing)} gap(s).</b>"
        return f'<div class="verdict bad">{head}<ul>{items}</ul></div>'
    pending = [r.provable_at for r, v in verdicts if v.status is Status.PENDING and r.provable_at]
    last = f", the last provable {relative(max(pending), data.generated_at)}" if pending else ""
    tail = f"; {len(pending)} only wait for the lag horizon{last}" if pending else ""
    recovered = sum(1 for _, v in verdicts if v.status is Status.RECOVERED)
    return f'<div class="verdict ok"><b>No data missing.</b> {recovered} gap(s) recovered{tail}.</div>'


def _cards(data: ReportData) -> str:
    reports = data.reports
    counts = {s: sum(1 for r in reports if data.verdict(r).status is s) for s in Status}
    cards = [
        (counts[Status.MISSING], "data may be missing", RED if counts[Status.MISSING] else "#e4e7eb"),
        (counts[Status.PENDING], "data in, proof pending", SLATE),
        (counts[Status.RECOVERED], "recovered", GREEN),
        (sum(r.trades_new + r.trades_changed for r in reports), "trades brought in", "#e4e7eb"),
        (sum(r.push_loss for r in reports), "pushes lost", "#e4e7eb"),
        (sum(r.list_calls + r.fullinfo_calls for r in reports), "TOP calls spent", "#e4e7eb"),
    ]
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card" style="border-top-color:{c}"><b>{v:,}</b><span>{_esc(label)}</span></div>'
            for v, label, c in cards
        )
        + "</div>"
    )


HEAD = (
    "<th>#</th><th class=l>cause</th><th class=l>window (GMT+8)</th><th class=l>detected</th>"
    "<th>took</th><th>list</th><th>fullinfo</th><th>skipped</th><th>found</th><th>new</th><th>changed</th>"
    "<th>same</th><th>dead</th><th>lost</th><th class=l>status</th><th class=l>why</th>"
)


def page(data: ReportData, *, links: str = "") -> str:
    """The whole report as one HTML document (no scripts, no external resources); `links` is HTML the
    caller adds under the title (the daemon's filters)."""
    span = time_range(data.reports, data.connections, data.generated_at)
    sections = []
    for shop in data.shop_names():
        reports = [r for r in data.reports if r.shop == shop]
        body = (
            f"<table><tr>{HEAD}</tr>{_report_rows(data, reports)}</table>"
            if reports
            else "<p class=none>No gaps in this period.</p>"
        )
        unresolved = data.unresolved.get(shop, 0)
        note = f"<small>{unresolved} unresolved trade(s)</small>" if unresolved else ""
        sections.append(
            f"<section><h2 class=shop>{_esc(shop)}{note}</h2>"
            f"{_timeline_svg(data, shop, reports, span)}{body}</section>"
        )
    return (
        "<!doctype html><html lang=zh-CN><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>order-sync gap report</title><style>{_CSS}</style></head><body>"
        "<header><h1>order-sync · gap recovery report</h1>"
        f"<p>generated {_esc(local(data.generated_at))} GMT+8 · {len(data.reports)} newest report(s) · "
        f"timeline {_esc(local(span.start))} → {_esc(local(span.end))}</p>{links}</header><main>"
        + _summary(data)
        + _cards(data)
        + f'<div class="legend">{_legend()}</div>'
        + "".join(sections)
        + "</main></body></html>"
    )
