-- 040: trades the service could not fetch or store (docs/design.md#unresolved-trades-block-proof). A
-- dead letter is history; a row here is a debt: it keeps the stretch of `modified` time it belongs to
-- out of the coverage ledger, keeps the gap reports over that stretch open, and is retried (a redrive)
-- on a jittered, capped backoff until a fetch stores the trade, which deletes the row.
CREATE TABLE unresolved_trades (
    shop           text NOT NULL,
    tid            bigint NOT NULL,
    -- Where it first failed: stream, backfill, sweep, initial_load, redrive.
    source         text NOT NULL,
    -- The `reason` label of dead_letters_total (TradeNotFound, refused_by_database, ...), and the
    -- last failure's words.
    kind           text NOT NULL,
    reason         text NOT NULL,
    attempts       integer NOT NULL DEFAULT 1 CHECK (attempts >= 1),
    first_failure  timestamptz NOT NULL,
    last_failure   timestamptz NOT NULL,
    next_attempt   timestamptz NOT NULL,
    -- The stretch of `modified` time it belongs to (the TMC message's second, the list window that
    -- named it, or the fetched version's second): no proof covers it while the row exists.
    belongs_from   timestamptz NOT NULL,
    belongs_until  timestamptz NOT NULL,
    -- The newest version known of it, when one was seen: only a store at this `modified` or later pays
    -- the debt. NULL: any store read after `last_failure` does.
    modified       timestamptz,
    -- A version is stored, with fields PostgreSQL cannot hold left empty: the ERP sees the order, and
    -- the redrive reads it again until an answer stores whole.
    stored         boolean NOT NULL DEFAULT false,
    -- The last unusable answer or trade, as received, when there was one.
    payload        bytea,
    PRIMARY KEY (shop, tid),
    CHECK (belongs_from < belongs_until)
);
CREATE INDEX unresolved_trades_tid ON unresolved_trades (tid);
CREATE INDEX unresolved_trades_belongs ON unresolved_trades (shop, belongs_from);
CREATE INDEX unresolved_trades_next_attempt ON unresolved_trades (next_attempt);
