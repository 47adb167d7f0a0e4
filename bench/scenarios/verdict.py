"""What a scenario run proves, computed from plain data (no I/O): the stand-in's truth and change log,
the database's rows, what the ERP consumer received and when, what the TMC server withheld, and the
reconciler's gap reports.

Definitions (the figures a scenario prints):

* lost: a trade the market changed during the run that the database does not hold.
* stale: the database holds an older `modified` than the truth's, or the same `modified` with another
  status (TOP times have one-second resolution, so two versions can share a second).
* extra: a trade in the database the market does not know.
* fields_differ: a trade stored at the truth's `modified` and status whose CHECKED_FIELDS differ from
  the truth's: the text a buyer types and the fields the odd-value faults break. Text compares by
  `comparable_text` (NUL and lone surrogates, which PostgreSQL cannot store, may be stored replaced
  or escaped), money by amount, anything else exactly; absent equals absent.
* unseen: a truth change never delivered to the ERP consumer. A change counts as delivered when the
  consumer received its trade at a later `modified`, or at the same second with the status the trade
  had at the end of that second (changes to one trade coalesce: a fetch returns the newest state).
* consumer_stale: the last version of a trade the consumer received differs from the truth.
* lag: from the instant the stand-in published a change on its TMC queue to the instant the consumer
  received the first feed row that delivers it (both wall-clock epoch seconds on one machine).
* withheld: TMC messages the stand-in accepted but never pushed. One "needs recovery" when no later
  pushed message announced a newer change of its trade and no stream fetch happened to return it (a
  fetch for an earlier push can already see the newer state): only reconciliation brings it in.
  Withheld messages that announced no market change (refund topics) need nothing.
  The gap reports match the stand-in when every such trade appears among the reports' trades.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

STREAM_SOURCE = "stream"  # trade_changes.source of rows the TMC stream brought in


@dataclass(frozen=True, slots=True)
class TruthChange:
    seq: int
    tid: int
    modified: datetime
    status: str


@dataclass(frozen=True, slots=True)
class TradeState:
    modified: datetime
    status: str | None


@dataclass(frozen=True, slots=True)
class Arrival:
    """One change-feed row as the ERP consumer received it; `at` is epoch seconds."""

    position: int
    tid: int
    modified: datetime
    status: str | None
    source: str
    at: float


@dataclass(frozen=True, slots=True)
class Withheld:
    message_id: int
    tid: int | None
    reason: str
    # The market change the message announced, when the stand-in says so; `is_change` False for
    # messages that announced none (refund topics). Without either, the seq follows from the id.
    seq: int | None = None
    is_change: bool = True


@dataclass(frozen=True, slots=True)
class ReportTrade:
    report_id: int
    tid: int
    push_loss: bool


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..1); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q * len(ordered))))
    return ordered[rank - 1]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


def compare_database(
    truth: Mapping[int, TradeState], changed_tids: Iterable[int], stored: Mapping[int, TradeState]
) -> dict[str, list[int]]:
    """lost / stale / extra tids of the database against the truth (see the module docstring)."""
    lost: list[int] = []
    stale: list[int] = []
    for tid in sorted(set(changed_tids)):
        want = truth.get(tid)
        have = stored.get(tid)
        if want is None:
            continue
        if have is None:
            lost.append(tid)
        elif have.modified < want.modified or (have.modified == want.modified and have.status != want.status):
            stale.append(tid)
    extra = sorted(tid for tid in stored if tid not in truth)
    return {"lost": lost, "stale": stale, "extra": extra}


# Compared besides `modified` and `status`: what buyers type, and where the odd-value faults put their
# broken values by default (a date field and two money fields).
CHECKED_FIELDS: tuple[str, ...] = ("buyer_message", "buyer_memo", "end_time", "post_fee", "total_fee")
TEXT_FIELDS = frozenset({"buyer_message", "buyer_memo"})
MONEY_FIELDS = frozenset({"post_fee", "total_fee"})
# A NUL or a surrogate code point, or the six-character JSON escape of either.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]|\\\\u0000|\\\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def comparable_text(value: str) -> str:
    """Text as the verdict compares it: every U+0000, every surrogate code point (a lone surrogate: a
    valid pair is one code point in Python) and the six-character escapes `\\u0000` / `\\udXXX` become
    U+FFFD. So a database that stores a NUL the buyer typed as U+FFFD, or as its JSON escape, matches
    the truth; one that drops the character or the whole text does not."""
    return _UNSTORABLE.sub("\ufffd", value)


def _same_value(name: str, want: Any, have: Any) -> bool:
    if want is None or have is None:
        return want is None and have is None
    if name in TEXT_FIELDS and isinstance(want, str) and isinstance(have, str):
        return comparable_text(want) == comparable_text(have)
    if name in MONEY_FIELDS:
        try:
            return Decimal(str(want)) == Decimal(str(have))
        except InvalidOperation:
            pass
    return bool(want == have)


def compare_fields(
    truth: Mapping[int, Mapping[str, Any]],
    stored: Mapping[int, Mapping[str, Any]],
    tids: Iterable[int],
    checked: Sequence[str] = CHECKED_FIELDS,
) -> list[int]:
    """Tids (of `tids`, trades stored at the truth's version) whose `checked` fields differ."""
    differ: list[int] = []
    for tid in sorted(set(tids)):
        want, have = truth.get(tid, {}), stored.get(tid, {})
        if not all(_same_value(name, want.get(name), have.get(name)) for name in checked):
            differ.append(tid)
    return differ


def dedupe_arrivals(arrivals: Iterable[Arrival]) -> list[Arrival]:
    """One arrival per feed position, the first (a consumer that reconnects may read a row twice)."""
    first: dict[int, Arrival] = {}
    for arrival in arrivals:
        if arrival.position not in first:
            first[arrival.position] = arrival
    return [first[p] for p in sorted(first)]


@dataclass(frozen=True, slots=True)
class Delivery:
    unseen: list[int]  # seqs
    lags: list[float]  # seconds, one per delivered change with a known publish time
    stream_lags: list[float]  # the same, delivered by a stream (push) row
    consumer_stale: list[int]  # tids whose last received version differs from the truth
    delivered_by: dict[int, str]  # seq → `source` of the feed row that first delivered it


def delivery(
    changes: Sequence[TruthChange],
    published: Mapping[int, float],
    arrivals: Sequence[Arrival],
    truth: Mapping[int, TradeState],
    lag_after_seq: int = 0,
) -> Delivery:
    """Match every truth change with the first consumer arrival that delivers it. Lags are kept for
    changes after `lag_after_seq` (the warm-up changes before the market opens are not measured)."""
    by_tid: dict[int, list[Arrival]] = defaultdict(list)
    for arrival in dedupe_arrivals(arrivals):
        by_tid[arrival.tid].append(arrival)
    # The status each trade had at the end of each second: what a same-second row must show.
    end_of_second: dict[tuple[int, datetime], str] = {}
    for change in changes:
        end_of_second[(change.tid, change.modified)] = change.status
    unseen: list[int] = []
    lags: list[float] = []
    stream_lags: list[float] = []
    delivered_by: dict[int, str] = {}
    for change in changes:
        want_status = end_of_second[(change.tid, change.modified)]
        hit = next(
            (
                a
                for a in by_tid.get(change.tid, ())
                if a.modified > change.modified or (a.modified == change.modified and a.status == want_status)
            ),
            None,
        )
        if hit is None:
            unseen.append(change.seq)
            continue
        delivered_by[change.seq] = hit.source
        sent = published.get(change.seq)
        if sent is not None and change.seq > lag_after_seq:
            lag = max(0.0, hit.at - sent)
            lags.append(lag)
            if hit.source == STREAM_SOURCE:
                stream_lags.append(lag)
    consumer_stale: list[int] = []
    for tid in {c.tid for c in changes}:
        seen = by_tid.get(tid)
        want = truth.get(tid)
        if want is None:
            continue
        last = seen[-1] if seen else None
        if last is None or last.modified != want.modified or last.status != want.status:
            consumer_stale.append(tid)
    return Delivery(unseen, lags, stream_lags, sorted(consumer_stale), delivered_by)


def lag_figures(result: Delivery) -> dict[str, Any]:
    return {
        "lag_p50_ms": _ms(percentile(result.lags, 0.50)),
        "lag_p99_ms": _ms(percentile(result.lags, 0.99)),
        "lag_max_ms": _ms(max(result.lags) if result.lags else None),
        "stream_lag_p50_ms": _ms(percentile(result.stream_lags, 0.50)),
        "stream_lag_p99_ms": _ms(percentile(result.stream_lags, 0.99)),
        "lag_samples": len(result.lags),
    }


def withheld_needing_recovery(
    withheld: Sequence[Withheld],
    changes: Sequence[TruthChange],
    first_message_id: int,
    delivered_by: Mapping[int, str],
) -> tuple[set[int], int]:
    """Trades with a withheld change that neither a later pushed message nor a stream fetch covered
    (a fetch for an earlier push can return the newer state), and how many withheld messages could not
    be matched to a market change.

    A message's change is its `seq` when the stand-in names it. Otherwise the stand-in published one
    TMC message per market change, in order, with ids counting up from `first_message_id`, so
    `seq = id - first_message_id + 1`."""
    by_seq = {c.seq: c for c in changes}
    withheld_seqs: set[int] = set()
    unmatched = 0
    for message in withheld:
        if not message.is_change:
            continue
        seq = message.seq if message.seq is not None else message.message_id - first_message_id + 1
        change = by_seq.get(seq)
        if change is None or (message.tid is not None and change.tid != message.tid):
            unmatched += 1
            continue
        withheld_seqs.add(seq)
    last_pushed: dict[int, int] = {}
    for change in changes:
        if change.seq not in withheld_seqs:
            last_pushed[change.tid] = max(last_pushed.get(change.tid, 0), change.seq)
    needing = {
        by_seq[seq].tid
        for seq in withheld_seqs
        if last_pushed.get(by_seq[seq].tid, 0) < seq and delivered_by.get(seq) != STREAM_SOURCE
    }
    return needing, unmatched


def report_figures(
    reports: Sequence[Mapping[str, Any]],
    report_trades: Sequence[ReportTrade],
    needing: set[int],
    api_rate: float,
) -> dict[str, Any]:
    """Gap-report totals and whether they account for every withheld change that needed recovery.

    `recovery_seconds` adds up each finished report's started → finished time; `quota_bound_seconds` is
    what its calls cost at the configured rate alone ((list + fullinfo calls) / SYNC_API_RATE)."""
    reported = {t.tid for t in report_trades}
    flagged = {t.tid for t in report_trades if t.push_loss}
    recovery = 0.0
    bound = 0.0
    for report in reports:
        started, finished = report.get("started_at"), report.get("finished_at")
        if isinstance(started, datetime) and isinstance(finished, datetime):
            recovery += (finished - started).total_seconds()
            bound += (int(report.get("list_calls") or 0) + int(report.get("fullinfo_calls") or 0)) / api_rate
    return {
        "gap_reports": len(reports),
        "gap_reports_by_cause": dict(Counter(str(r.get("cause")) for r in reports)),
        "gap_reports_by_outcome": dict(Counter(str(r.get("outcome")) for r in reports)),
        "gap_list_calls": sum(int(r.get("list_calls") or 0) for r in reports),
        "gap_fullinfo_calls": sum(int(r.get("fullinfo_calls") or 0) for r in reports),
        "gap_fetches_skipped": sum(int(r.get("fetches_skipped") or 0) for r in reports),
        "gap_trades_found": sum(int(r.get("trades_found") or 0) for r in reports),
        "gap_push_loss": sum(int(r.get("push_loss") or 0) for r in reports),
        "withheld_needing_recovery": len(needing),
        "withheld_in_reports": len(needing & reported),
        "withheld_flagged_push_loss": len(needing & flagged),
        "reports_match_withheld": needing <= reported,
        "recovery_seconds": round(recovery, 2),
        "quota_bound_seconds": round(bound, 2),
    }


def burst_shape(changes: Sequence[TruthChange], published: Mapping[int, float], window: float = 2.0) -> float:
    """Share of changes that follow another change of the same trade within `window` seconds: how
    bursty the load was (Double-11 bursts: most changes of a new trade land within two seconds)."""
    last: dict[int, float] = {}
    close = 0
    counted = 0
    for change in changes:
        at = published.get(change.seq)
        if at is None:
            continue
        counted += 1
        before = last.get(change.tid)
        if before is not None and at - before <= window:
            close += 1
        last[change.tid] = at
    return round(close / counted, 3) if counted else 0.0
