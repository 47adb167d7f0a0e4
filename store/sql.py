"""The SQL of trades, the change feed, dead letters and migrations. All SQL lives in the store package
(docs/design.md#sql-in-one-place): the reconciler's bookkeeping is in `store.reconciler_sql`, replica
coordination in `store.replica_sql`. Table names match store/constants.py and store/migrations/."""

from __future__ import annotations

from typing import Final

# -- migrations --------------------------------------------------------------------------------------

MIGRATION_LOCK: Final = "SELECT pg_advisory_lock($1)"
MIGRATION_UNLOCK: Final = "SELECT pg_advisory_unlock($1)"
SCHEMA_EXISTS: Final = "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)"

CREATE_SCHEMA_MIGRATIONS: Final = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""

SELECT_MIGRATIONS: Final = "SELECT version, checksum FROM schema_migrations ORDER BY version"

INSERT_MIGRATION: Final = "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)"

# -- guarded upsert, sub-orders, unresolved rows, change feed + doorbell: one round trip
# (docs/design.md#modified-never-goes-backwards, docs/design.md#commit-ordered-feed,
# docs/design.md#one-round-trip-commit) -------------------------------------------------------------

# The server-side function of migration 046 runs steps 1-5 of store/upsert.py in one statement:
# * the upsert takes one row per tid (the caller keeps the newest of duplicates: ON CONFLICT cannot touch
#   a row twice), sorted by tid so concurrent batches lock rows in the same order and cannot deadlock;
#   an older `modified` never wins; an equal one wins only with different content read no earlier than
#   the stored one (`fetched_at`; a state without a read time never displaces one with it), so two
#   readers racing within one second of `modified` cannot leave the older read stored; RETURNING yields
#   exactly the rows that were inserted or changed (`xmax = 0` marks a fresh insert);
# * sub-orders follow their trade: only changed trades get their orders replaced, under the row lock;
# * the unresolved rows the stored versions pay are deleted (store.unresolved.resolves): at least the
#   newest version known of the trade, or, when none is known, a version read after the last failure;
# * last, the feed: n positions from the single counter row, whose lock is then held until COMMIT, so
#   positions are handed out in commit order; one NOTIFY per feed row, delivered only at commit, in
#   commit order, never after a rollback. The payload is a doorbell, never the data: no `raw`, text
#   fields cut to 200 characters, far below PostgreSQL's 8000-byte limit.
# Arguments: the 17 trade columns, the source, the 12 order columns, the replaced originals' dead
# letters (reason, payload, tid, shop), the tids stored whole and their read times, channel, text limit.
APPLY_TRADE_BATCH: Final = (
    "SELECT tid, seller_nick, status, modified, inserted FROM apply_trade_batch("
    + ", ".join(f"${n}" for n in range(1, 39))
    + ")"
)

# -- dead letters (docs/design.md#bad-input-never-crashes)
# --------------------------------------------------------------------

INSERT_DEAD_LETTER: Final = """
INSERT INTO dead_letters (source, reason, payload, tid, shop) VALUES ($1, $2, $3, $4, $5)
"""

# -- the ERP's catch-up read -----------------------------------------------------------------------

# Positions are dense and committed in order, so "everything after my cursor" is exact: re-run it
# until it returns fewer than `limit` rows. Uses the primary key; cost does not grow with the feed.
READ_CHANGES: Final = """
SELECT position, tid, seller_nick, status, modified, source, kind, committed_at
FROM trade_changes
WHERE position > $1
ORDER BY position
LIMIT $2
"""

LAST_POSITION: Final = "SELECT last FROM feed_counter WHERE id = 1"
