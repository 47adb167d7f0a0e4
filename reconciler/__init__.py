"""The reconciler: what turns "usually in sync" into "never misses an order" (docs/design.md#coverage-ledger).

Modules, in the order data flows:

* `plan`, `proof` — pure: how a stretch of `modified` time is cut into increment windows (whole
  seconds, at most 23:59:59, the first shifted back by the overlap, proof windows below the lag
  horizon, fresh ones above it) and pages (last to first); which windows of a report to read now, when
  a report is recovered, what a sweep may cover, the gaps a restart or a disconnect leaves. The
  interval arithmetic is `common.intervals` (the store's ledger shares it).
* `ledger` — the coverage ledger as the reconciler reads it: the store's ledger
  (`store.coverage`) with the replicas' fence on what needs leadership. Per shop, stretches proven
  complete and by what (stream, backfill, sweep, initial load); the complement, up to the lag horizon,
  is the set of gaps.
* `stream_watch` — what the TMC stream proves: from the connect to the oldest message not yet
  committed, less a settle margin (`SYNC_STREAM_SETTLE_SECONDS`); the time it was away is a gap.
* `listing`, `fetching`, `backfill` — one increment window read completely: a counting call, pages
  from the last to the first, the explicit type list, `fields=tid`; fullinfo per tid (below the
  stream's priority in the shared limiter) through the fetch → apply path the stream takes too
  (`store.fetch_apply`); `isv.trade-service-rejection` narrows the window and waits; ISV errors are
  never retried; a failed window is never reported as read.
* `lag` — list lag, measured from trades the lists leave out although fullinfo says they are in the
  window; the overlap widens to 1.5 × the largest recent sample.
* `detection` — gap detection: restart, disconnect, silence, ledger holes; the stream's proof recorded.
* `processing` — a gap report's windows read, recorded, finished, retried (`retries`: the schedule).
* `sweep` — the periodic low-priority re-read that measures push loss.
* `gate` — backfill before resume, and the wait for other replicas' leaders.
* `load_plan`, `history`, `initial_load`, `new_shops` — a new shop's history through TOPATS (or
  sold.get day by day), resumable: its plan (pure), reading one part, running the load, and when a
  shop gets one.
* `reconciler` — the orchestration: schedules the parts above (the side task's rounds, the TMC
  session's hooks, the CLI's operations); `config` its settings; `coordination` the other replicas.
* `metrics` — coverage and backfill series; `report_view` judges gap reports and writes them as text
  and JSON, `report_page` as an HTML page; `progress` one line.

What the reconciler keeps lives in the database behind the interfaces of `store.ports` (coverage
ledger, gap reports, initial loads, trades), implemented over PostgreSQL and in memory (`store.memory`).
The commands that drive it (`order-sync backfill`, `initial-load`, `report`) live in `daemon/`; the
replica coordination it may be given (`Coordination`) lives in `replicas/`.

Two ways to resume after an outage:

* **Backfill before resume** (default, `SYNC_STREAM_DURING_BACKFILL=false`): the session's gate reads
  the outage's windows before it reconnects, so when the stream resumes the database already holds
  what was missed. The cost is freshness: changes made during the backfill wait for it (at a 50
  calls/s quota, a 10 s outage with 1000 changes held the stream back about 11 s).
* **Stream during backfill** (`true`): the stream reconnects at once and the backfill runs beside it,
  its fullinfo calls queued behind the stream's. Correct because an older state never overwrites a
  newer one (docs/design.md#modified-never-goes-backwards). Choose it when outages can be long compared with
  the freshness the ERP needs (a backfill of hours of changes at a small quota takes minutes), or when the TMC
  server is known to keep messages while the service is away (production TMC does; the backfill is then a
  safety net rather than the only way back).

Proof is conservative everywhere: a stretch counts as proven only when the stream was connected and
every message in it committed, or an increment window below the lag horizon was read completely. A
list read above the horizon brings changes in early ("fresh") but proves nothing; the same stretch is
read again once the horizon has passed it. That re-read is what the overlap costs
(docs/sync-rules.md#overlap).

A gap report therefore stays open (`outcome` NULL) after its changes are in the database, until the
horizon has passed its end: with the default overlap of 600 s, for about ten minutes after the gap. That
is by design, not a report left behind; `order-sync report` shows such a report as open with the time it
becomes provable (`GapReport.provable_at`, also in `--json`), and any replica leading the shop then
proves it, after a restart or a handover too (open reports are the shop's, not the replica's).
"""
