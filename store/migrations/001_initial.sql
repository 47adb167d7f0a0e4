-- 001: the order copy, its commit-ordered change feed, and the service's own bookkeeping.
-- Every migration runs in one transaction (store/migrate.py): no CREATE INDEX CONCURRENTLY here.
-- All times are timestamptz (docs/design.md#time-at-the-boundary); money is numeric(14,2) yuan.

-- The current state of each trade. `modified` never goes backwards (docs/design.md#modified-never-goes-backwards); `content_hash`
-- (sha256 of the canonical JSON of `raw`) decides an update when two versions share one `modified`
-- second.
CREATE TABLE trades (
    tid             bigint PRIMARY KEY,
    seller_nick     text,
    buyer_nick      text,
    buyer_open_uid  text,
    status          text,
    type            text,
    created         timestamptz,
    modified        timestamptz NOT NULL,
    pay_time        timestamptz,
    consign_time    timestamptz,
    end_time        timestamptz,
    payment         numeric(14, 2),
    total_fee       numeric(14, 2),
    post_fee        numeric(14, 2),
    raw             jsonb NOT NULL,
    content_hash    bytea NOT NULL,
    source          text NOT NULL,
    first_seen      timestamptz NOT NULL DEFAULT now(),
    synced_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX trades_seller_modified ON trades (seller_nick, modified);

-- Sub-orders, replaced together with their trade in the same transaction.
CREATE TABLE trade_orders (
    tid            bigint NOT NULL REFERENCES trades (tid) ON DELETE CASCADE,
    oid            bigint NOT NULL,
    status         text,
    refund_status  text,
    title          text,
    num            integer,
    num_iid        bigint,
    sku_id         text,
    price          numeric(14, 2),
    payment        numeric(14, 2),
    total_fee      numeric(14, 2),
    end_time       timestamptz,
    PRIMARY KEY (tid, oid)
);
CREATE INDEX trade_orders_oid ON trade_orders (oid);

-- The change feed (docs/design.md#commit-ordered-feed). Positions are dense and handed out in commit order, so a reader that
-- remembers the last position it saw never skips a committed row.
--
-- Why not a sequence: nextval() hands out numbers when a transaction *asks*, not when it commits.
-- Writer A takes position 10, writer B takes 11 and commits first; a reader that runs now sees 11,
-- stores cursor 11, and when A commits, position 10 is behind the cursor for ever. Rolled-back
-- transactions also leave holes, so a reader cannot tell "not committed yet" from "never will be".
--
-- Instead each writing transaction, as its last statement, runs
--     UPDATE feed_counter SET last = last + n RETURNING last
-- and inserts its n feed rows with the positions it got. The row lock on the single counter row is
-- held until COMMIT, so the next writer's UPDATE waits for this commit (or rollback), then reads the
-- committed value. PostgreSQL makes a transaction visible before it releases its locks, so whenever a
-- snapshot sees positions p+1.. it already sees every position up to p: what a reader sees is always a
-- gap-free prefix. The price: commits that append to the feed are serialised (the lock is held across
-- the commit's WAL flush); batching several trades per transaction keeps that cheap.
CREATE TABLE feed_counter (
    id    smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    last  bigint NOT NULL
);
INSERT INTO feed_counter (id, last) VALUES (1, 0);

CREATE TABLE trade_changes (
    position      bigint PRIMARY KEY,
    tid           bigint NOT NULL,
    seller_nick   text,
    status        text,
    modified      timestamptz NOT NULL,
    source        text NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('created', 'updated')),
    committed_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX trade_changes_tid ON trade_changes (tid);

-- The shops the service syncs, and whether their sync is paused (e.g. an expired session key).
CREATE TABLE shops (
    nick           text PRIMARY KEY,
    user_id        bigint,
    paused         boolean NOT NULL DEFAULT false,
    paused_reason  text,
    paused_at      timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- Quarantined input (docs/design.md#bad-input-never-crashes): the raw bytes as received and why they were refused.
CREATE TABLE dead_letters (
    id          bigserial PRIMARY KEY,
    source      text NOT NULL,
    reason      text NOT NULL,
    payload     bytea NOT NULL,
    tid         bigint,
    shop        text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letters_created_at ON dead_letters (created_at);

-- The reconciler's ledger (docs/design.md#coverage-ledger), first version: intervals of `modified` time proven complete
-- for a shop, and what proved them (stream healthy, backfill drained, ...).
CREATE TABLE coverage (
    id              bigserial PRIMARY KEY,
    shop            text NOT NULL,
    interval_start  timestamptz NOT NULL,
    interval_end    timestamptz NOT NULL,
    proven_by       text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (interval_start < interval_end)
);
CREATE INDEX coverage_shop_start ON coverage (shop, interval_start);

-- One row per gap the reconciler detected and tried to recover.
CREATE TABLE gap_reports (
    id                bigserial PRIMARY KEY,
    shop              text NOT NULL,
    cause             text NOT NULL,
    window_start      timestamptz NOT NULL,
    window_end        timestamptz NOT NULL,
    detected_at       timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    finished_at       timestamptz,
    list_calls        integer NOT NULL DEFAULT 0,
    fullinfo_calls    integer NOT NULL DEFAULT 0,
    trades_found      integer NOT NULL DEFAULT 0,
    trades_new        integer NOT NULL DEFAULT 0,
    trades_changed    integer NOT NULL DEFAULT 0,
    trades_unchanged  integer NOT NULL DEFAULT 0,
    dead_letters      integer NOT NULL DEFAULT 0,
    push_loss         integer NOT NULL DEFAULT 0,
    outcome           text,
    reason            text,
    replica           text,
    CHECK (window_start <= window_end)
);
CREATE INDEX gap_reports_detected_at ON gap_reports (detected_at);
CREATE INDEX gap_reports_shop_detected_at ON gap_reports (shop, detected_at);
