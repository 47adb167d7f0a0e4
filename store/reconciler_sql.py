"""The SQL behind the reconciler's storage interfaces (the coverage ledger, gap reports, stream
connections, initial loads, and the lookups a backfill makes in `trades`). All SQL lives in the store
package (docs/design.md#sql-in-one-place): `store.sql` holds the trades, the change feed and the
migrations; this module the reconciler's bookkeeping. Tables: store/migrations/001 and 010 (coverage,
gap_reports, gap_report_trades, stream_connections, sync_shops, initial_loads, initial_load_parts)."""

from __future__ import annotations

from typing import Final

# -- the coverage ledger -----------------------------------------------------------------------------

# Serialises ledger writes per shop across replicas (released at commit).
LOCK_SHOP: Final = "SELECT pg_advisory_xact_lock(hashtextextended('coverage:' || $1, 0))"

# Rows of the same kind that overlap or touch the new interval are folded into it.
TAKE_MERGEABLE: Final = """
DELETE FROM coverage
WHERE shop = $1 AND proven_by = $2 AND interval_start <= $4 AND interval_end >= $3
RETURNING interval_start, interval_end
"""

INSERT_COVERAGE: Final = """
INSERT INTO coverage (shop, interval_start, interval_end, proven_by) VALUES ($1, $2, $3, $4)
"""

SELECT_COVERAGE: Final = """
SELECT interval_start, interval_end, proven_by
FROM coverage
WHERE shop = $1 AND interval_end > $2 AND interval_start < $3
ORDER BY interval_start
"""

SELECT_COVERAGE_END: Final = """
SELECT max(interval_end) FROM coverage WHERE shop = $1 AND ($2::text IS NULL OR proven_by = $2)
"""

# -- shops ---------------------------------------------------------------------------------------------

SELECT_SYNC_SHOP: Final = "SELECT sync_from FROM sync_shops WHERE shop = $1"

INSERT_SYNC_SHOP: Final = """
INSERT INTO sync_shops (shop, sync_from) VALUES ($1, $2) ON CONFLICT (shop) DO NOTHING
"""

# -- gap reports ---------------------------------------------------------------------------------------

REPORT_COLUMNS: Final = """
id, shop, cause, window_start, window_end, detected_at, started_at, finished_at, list_calls,
fullinfo_calls, trades_found, trades_new, trades_changed, trades_unchanged, dead_letters, push_loss,
outcome, reason, replica, progress_until, fresh_until, windows_read, windows_failed, rejections,
not_found, overlap_seconds, list_lag_seconds, updated_at, detected_by, replicas, fetches_skipped
"""

INSERT_REPORT: Final = f"""
INSERT INTO gap_reports (shop, cause, window_start, window_end, detected_at, replica, progress_until,
                         detected_by)
VALUES ($1, $2, $3, $4, $5, $6, $7, $6)
RETURNING {REPORT_COLUMNS}
"""

SELECT_REPORT: Final = f"SELECT {REPORT_COLUMNS} FROM gap_reports WHERE id = $1"

SELECT_OPEN_REPORTS: Final = f"""
SELECT {REPORT_COLUMNS} FROM gap_reports
WHERE shop = $1 AND (outcome IS NULL OR outcome = 'partial')
ORDER BY id
"""

# Windows of reports not recovered (open, or failed for good): a ledger scan leaves these alone.
SELECT_UNRECOVERED_WINDOWS: Final = """
SELECT window_start, window_end FROM gap_reports
WHERE shop = $1 AND (outcome IS NULL OR outcome <> 'recovered')
"""

SELECT_RECENT_REPORTS: Final = f"""
SELECT {REPORT_COLUMNS} FROM gap_reports
WHERE ($2::text IS NULL OR shop = $2)
ORDER BY id DESC
LIMIT $1
"""

EXTEND_REPORT: Final = """
UPDATE gap_reports SET window_end = greatest(window_end, $2), updated_at = now() WHERE id = $1
"""

# One pass over a report's windows: counters add up, progress only moves forward; `replica` is who
# made it, appended to `replicas` when the work moved to another replica.
_WORKED_BY: Final = """
    replica = $REPLICA,
    replicas = CASE WHEN replicas[cardinality(replicas)] IS NOT DISTINCT FROM $REPLICA THEN replicas
                    ELSE replicas || $REPLICA END"""

ADD_TO_REPORT: Final = """
UPDATE gap_reports SET
    started_at = coalesce(started_at, $2),
    list_calls = list_calls + $3,
    fullinfo_calls = fullinfo_calls + $4,
    trades_found = trades_found + $5,
    trades_new = trades_new + $6,
    trades_changed = trades_changed + $7,
    trades_unchanged = trades_unchanged + $8,
    dead_letters = dead_letters + $9,
    push_loss = push_loss + $10,
    windows_read = windows_read + $11,
    windows_failed = windows_failed + $12,
    rejections = rejections + $13,
    not_found = not_found + $14,
    progress_until = CASE WHEN $15::timestamptz IS NULL THEN progress_until
                          ELSE greatest(coalesce(progress_until, $15), $15) END,
    fresh_until = CASE WHEN $16::timestamptz IS NULL THEN fresh_until
                       ELSE greatest(coalesce(fresh_until, $16), $16) END,
    overlap_seconds = coalesce($17, overlap_seconds),
    list_lag_seconds = greatest(list_lag_seconds, $18),
    fetches_skipped = fetches_skipped + $20,{worked_by},
    updated_at = now()
WHERE id = $1
""".format(worked_by=_WORKED_BY.replace("$REPLICA", "$19::text"))

FINISH_REPORT: Final = """
UPDATE gap_reports
SET outcome = $2, reason = $3,
    finished_at = CASE WHEN $2::text = 'partial' THEN NULL ELSE $4::timestamptz END,{worked_by},
    updated_at = now()
WHERE id = $1
""".format(worked_by=_WORKED_BY.replace("$REPLICA", "$5::text"))

# A trade recorded again (a later pass of the same report) keeps its first kind.
INSERT_REPORT_TRADES: Final = """
INSERT INTO gap_report_trades (report_id, tid, modified, kind, push_loss)
SELECT $1, t.tid, t.modified, t.kind, t.push_loss
FROM unnest($2::bigint[], $3::timestamptz[], $4::text[], $5::boolean[]) AS t(tid, modified, kind, push_loss)
ON CONFLICT (report_id, tid) DO UPDATE SET modified = greatest(gap_report_trades.modified, EXCLUDED.modified)
"""

SELECT_KNOWN_REPORT_TRADES: Final = """
SELECT tid FROM gap_report_trades WHERE report_id = $1 AND tid = ANY($2::bigint[])
"""

SELECT_REPORT_TRADES: Final = """
SELECT tid, modified, kind, push_loss FROM gap_report_trades WHERE report_id = $1 ORDER BY tid
"""

# -- stream connections --------------------------------------------------------------------------------

INSERT_CONNECTION: Final = """
INSERT INTO stream_connections (replica, connected_at) VALUES ($1, $2) RETURNING id
"""

CLOSE_CONNECTION: Final = """
UPDATE stream_connections SET disconnected_at = $2, reason = $3 WHERE id = $1
"""

SELECT_CONNECTIONS: Final = """
SELECT replica, connected_at, disconnected_at, reason FROM stream_connections
WHERE coalesce(disconnected_at, 'infinity') > $1
ORDER BY connected_at
"""

# -- what the database already holds -------------------------------------------------------------------

SELECT_EXISTING_TIDS: Final = "SELECT tid FROM trades WHERE tid = ANY($1::bigint[])"

# The stored version of trades nothing is owed on: one with an unresolved row is always fetched.
SELECT_SETTLED_VERSIONS: Final = """
SELECT t.tid, t.modified, t.fetched_at FROM trades t
WHERE t.tid = ANY($1::bigint[])
  AND NOT EXISTS (SELECT 1 FROM unresolved_trades u WHERE u.tid = t.tid)
"""

# A later read found the stored state (the upsert left it alone): only its read time moves, forward.
# The upsert replaces an equal `modified` read no earlier, so a row at the read's `modified` with an
# older read time holds the content read.
CONFIRM_READS: Final = """
UPDATE trades t SET fetched_at = i.fetched_at
FROM unnest($1::bigint[], $2::timestamptz[], $3::timestamptz[]) AS i(tid, modified, fetched_at)
WHERE t.tid = i.tid AND t.modified = i.modified AND t.fetched_at < i.fetched_at
"""

# Trades stored with a `modified` inside a window: any the list did not return hints at list lag.
SELECT_STORED_IN_WINDOW: Final = """
SELECT tid, modified FROM trades
WHERE seller_nick = $1 AND modified >= $2 AND modified <= $3 AND created >= $4
  AND ($5::text[] IS NULL OR type = ANY($5::text[]))
ORDER BY modified DESC
LIMIT $6
"""

# -- initial loads ---------------------------------------------------------------------------------------

SELECT_INITIAL_LOAD: Final = """
SELECT shop, since, until, method, state, trades, report_id FROM initial_loads WHERE shop = $1
"""

INSERT_INITIAL_LOAD: Final = """
INSERT INTO initial_loads (shop, since, until, method, state, report_id)
VALUES ($1, $2, $3, $4, 'running', $5)
"""

SET_INITIAL_LOAD_METHOD: Final = "UPDATE initial_loads SET method = $2 WHERE shop = $1"

FINISH_INITIAL_LOAD: Final = """
UPDATE initial_loads SET state = 'done', finished_at = now(),
    trades = (SELECT coalesce(sum(trades), 0) FROM initial_load_parts WHERE shop = $1)
WHERE shop = $1
"""

SELECT_PARTS: Final = """
SELECT part_start, part_end, method, task_id, state, trades FROM initial_load_parts
WHERE shop = $1 ORDER BY part_start
"""

INSERT_PART: Final = """
INSERT INTO initial_load_parts (shop, part_start, part_end, method, state) VALUES ($1, $2, $3, $4, 'pending')
"""

DELETE_UNFINISHED_PARTS: Final = "DELETE FROM initial_load_parts WHERE shop = $1 AND state <> 'done'"

START_PART: Final = """
UPDATE initial_load_parts SET state = 'started', task_id = $3, updated_at = now()
WHERE shop = $1 AND part_start = $2
"""

FINISH_PART: Final = """
UPDATE initial_load_parts SET state = 'done', trades = $3, updated_at = now()
WHERE shop = $1 AND part_start = $2
"""

# -- unresolved trades (store/migrations/040; docs/design.md#unresolved-trades-block-proof) -----------

# A failure recorded: a new row, or the row failing again (store.unresolved.merged does the same in
# memory): its first source and failure stay, its stretch grows to hold both, the newest version known
# wins (greatest ignores NULL), the rest is the latest failure's.
RECORD_UNRESOLVED: Final = """
INSERT INTO unresolved_trades AS u (
    shop, tid, source, kind, reason, attempts, first_failure, last_failure, next_attempt,
    belongs_from, belongs_until, modified, stored, payload
)
VALUES ($1, $2, $3, $4, $5, 1, $6, $6, $6, $7, $8, $9, $10, $11)
ON CONFLICT (shop, tid) DO UPDATE SET
    kind = EXCLUDED.kind,
    reason = EXCLUDED.reason,
    attempts = u.attempts + 1,
    last_failure = EXCLUDED.last_failure,
    belongs_from = least(u.belongs_from, EXCLUDED.belongs_from),
    belongs_until = greatest(u.belongs_until, EXCLUDED.belongs_until),
    modified = greatest(u.modified, EXCLUDED.modified),
    stored = EXCLUDED.stored,
    payload = coalesce(EXCLUDED.payload, u.payload)
RETURNING attempts, belongs_from, belongs_until
"""

SCHEDULE_UNRESOLVED: Final = "UPDATE unresolved_trades SET next_attempt = $3 WHERE shop = $1 AND tid = $2"

# Every proven stretch (of any kind) of the shop that reaches into [$2, $3), taken out to be put back
# without that part.
CUT_COVERAGE: Final = """
DELETE FROM coverage
WHERE shop = $1 AND interval_start < $3 AND interval_end > $2
RETURNING interval_start, interval_end, proven_by
"""

# The stretches of the kinds in $4 that reach into [$2, $3), taken out to be written back without it.
WITHDRAW_COVERAGE: Final = """
DELETE FROM coverage
WHERE shop = $1 AND interval_start < $3 AND interval_end > $2 AND proven_by = ANY($4::text[])
RETURNING interval_start, interval_end, proven_by
"""

# The stretches the shop's unresolved trades belong to that reach into [$2, $3).
SELECT_HOLDS: Final = """
SELECT belongs_from, belongs_until FROM unresolved_trades
WHERE shop = $1 AND belongs_until > $2 AND belongs_from < $3
"""

UNRESOLVED_COLUMNS: Final = """
shop, tid, source, kind, reason, attempts, first_failure, last_failure, next_attempt, belongs_from,
belongs_until, modified, stored
"""

SELECT_UNRESOLVED: Final = f"""
SELECT {UNRESOLVED_COLUMNS} FROM unresolved_trades
WHERE $1::text IS NULL OR shop = $1
ORDER BY first_failure, tid
"""

SELECT_UNRESOLVED_DUE: Final = f"""
SELECT {UNRESOLVED_COLUMNS} FROM unresolved_trades
WHERE shop = ANY($1::text[]) AND next_attempt <= $2
ORDER BY next_attempt, tid
LIMIT $3
"""

SELECT_UNRESOLVED_WITHIN: Final = f"""
SELECT {UNRESOLVED_COLUMNS} FROM unresolved_trades
WHERE shop = $1 AND belongs_until > $2 AND belongs_from < $3
ORDER BY belongs_from, tid
"""

COUNT_UNRESOLVED: Final = "SELECT shop, count(*) AS n FROM unresolved_trades GROUP BY shop"

RETRY_UNRESOLVED_NOW: Final = """
UPDATE unresolved_trades SET next_attempt = $1 WHERE $2::text IS NULL OR shop = $2
"""
