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

# -- guarded upsert (docs/design.md#modified-never-goes-backwards)
# ------------------------------------------------------------------

# One row per tid (the caller keeps the newest of duplicates: ON CONFLICT cannot touch a row twice),
# sorted by tid so concurrent batches lock rows in the same order and cannot deadlock.
# ON CONFLICT ... WHERE: an older `modified` never wins; an equal one wins only with different content
# read no earlier than the stored one (`fetched_at`; a state without a read time never displaces one
# with it), so two readers racing within one second of `modified` cannot leave the older read stored.
# RETURNING yields exactly the rows that were inserted or changed; `xmax = 0` marks a fresh insert.
UPSERT_TRADES: Final = """
INSERT INTO trades AS t (
    tid, seller_nick, buyer_nick, buyer_open_uid, status, type, created, modified, pay_time,
    consign_time, end_time, payment, total_fee, post_fee, raw, content_hash, fetched_at, source
)
SELECT
    i.tid, i.seller_nick, i.buyer_nick, i.buyer_open_uid, i.status, i.type, i.created, i.modified,
    i.pay_time, i.consign_time, i.end_time, i.payment, i.total_fee, i.post_fee, i.raw::jsonb,
    i.content_hash, i.fetched_at, $18
FROM unnest(
    $1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[],
    $8::timestamptz[], $9::timestamptz[], $10::timestamptz[], $11::timestamptz[], $12::numeric[],
    $13::numeric[], $14::numeric[], $15::text[], $16::bytea[], $17::timestamptz[]
) AS i(
    tid, seller_nick, buyer_nick, buyer_open_uid, status, type, created, modified, pay_time,
    consign_time, end_time, payment, total_fee, post_fee, raw, content_hash, fetched_at
)
ORDER BY i.tid
ON CONFLICT (tid) DO UPDATE SET
    seller_nick = EXCLUDED.seller_nick,
    buyer_nick = EXCLUDED.buyer_nick,
    buyer_open_uid = EXCLUDED.buyer_open_uid,
    status = EXCLUDED.status,
    type = EXCLUDED.type,
    created = EXCLUDED.created,
    modified = EXCLUDED.modified,
    pay_time = EXCLUDED.pay_time,
    consign_time = EXCLUDED.consign_time,
    end_time = EXCLUDED.end_time,
    payment = EXCLUDED.payment,
    total_fee = EXCLUDED.total_fee,
    post_fee = EXCLUDED.post_fee,
    raw = EXCLUDED.raw,
    content_hash = EXCLUDED.content_hash,
    fetched_at = EXCLUDED.fetched_at,
    source = EXCLUDED.source,
    synced_at = now()
WHERE t.modified < EXCLUDED.modified
   OR (t.modified = EXCLUDED.modified AND t.content_hash <> EXCLUDED.content_hash
       AND (t.fetched_at IS NULL OR EXCLUDED.fetched_at >= t.fetched_at))
RETURNING t.tid, t.seller_nick, t.status, t.modified, (t.xmax = 0) AS inserted
"""

# Sub-orders follow their trade: only trades the upsert changed get their orders replaced, in the same
# transaction, while the upsert still holds the trade's row lock.
DELETE_ORDERS: Final = "DELETE FROM trade_orders WHERE tid = ANY($1::bigint[])"

INSERT_ORDERS: Final = """
INSERT INTO trade_orders (
    tid, oid, status, refund_status, title, num, num_iid, sku_id, price, payment, total_fee, end_time
)
SELECT * FROM unnest(
    $1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::integer[], $7::bigint[],
    $8::text[], $9::numeric[], $10::numeric[], $11::numeric[], $12::timestamptz[]
)
"""

# -- change feed + doorbell (docs/design.md#commit-ordered-feed)
# ----------------------------------------------------------

# The LAST statement of a writing transaction (see the feed_counter comment in 001_initial.sql): take
# n positions from the single counter row, whose lock is then held until COMMIT, so positions are
# handed out in commit order; append the feed rows; queue one NOTIFY per row. PostgreSQL delivers the
# notifications only when the transaction commits, in commit order, and never after a rollback.
# The payload is a doorbell, never the data: no `raw`, text fields cut to 200 characters, so it
# stays far below PostgreSQL's 8000-byte limit.
APPEND_FEED: Final = """
WITH counter AS (
    UPDATE feed_counter SET last = last + cardinality($1::bigint[]) WHERE id = 1 RETURNING last
), appended AS (
    INSERT INTO trade_changes (position, tid, seller_nick, status, modified, source, kind)
    SELECT counter.last - cardinality($1::bigint[]) + c.n, c.tid, c.seller_nick, c.status, c.modified,
           $6, c.kind
    FROM counter,
         unnest($1::bigint[], $2::text[], $3::text[], $4::timestamptz[], $5::text[])
             WITH ORDINALITY AS c(tid, seller_nick, status, modified, kind, n)
    RETURNING position, tid, seller_nick, status, modified, source
)
SELECT pg_notify($7, json_build_object(
    'position', position,
    'tid', tid,
    'seller_nick', left(seller_nick, $8),
    'status', left(status, $8),
    'modified', modified,
    'source', left(source, $8)
)::text)
FROM appended
ORDER BY position
"""

# -- dead letters (docs/design.md#bad-input-never-crashes)
# --------------------------------------------------------------------

INSERT_DEAD_LETTER: Final = """
INSERT INTO dead_letters (source, reason, payload, tid, shop) VALUES ($1, $2, $3, $4, $5)
"""

INSERT_DEAD_LETTERS: Final = """
INSERT INTO dead_letters (source, reason, payload, tid, shop)
SELECT $1, r.reason, r.payload, r.tid, r.shop
FROM unnest($2::text[], $3::bytea[], $4::bigint[], $5::text[]) AS r(reason, payload, tid, shop)
"""

# -- unresolved trades (docs/design.md#unresolved-trades-block-proof)
# ---------------------------------------------------------------------

# In the upsert's transaction, for the trades it just wrote whole: the rows their stored version pays
# (store.unresolved.resolves): at least the newest version known of the trade, or, when none is known,
# a version read after the last failure. `t` is the row as the upsert left it (maybe newer still).
RESOLVE_STORED: Final = """
DELETE FROM unresolved_trades u
USING trades t, unnest($1::bigint[], $2::timestamptz[]) AS s(tid, read_at)
WHERE u.tid = s.tid AND t.tid = s.tid
  AND CASE WHEN u.modified IS NOT NULL THEN t.modified >= u.modified
           ELSE s.read_at IS NOT NULL AND s.read_at >= u.last_failure END
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
