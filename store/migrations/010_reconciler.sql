-- 010: the reconciler's bookkeeping, on top of 001's first versions of `coverage` and `gap_reports`.

-- Where each shop's coverage ledger begins: the first day of its initial load, or the moment the
-- service started following a shop that was added without one. Gaps are looked for from here on.
CREATE TABLE sync_shops (
    shop        text PRIMARY KEY,
    sync_from   timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- The ledger keeps one merged row per (shop, proven_by) stretch; lookups go by the end.
CREATE INDEX coverage_shop_kind_end ON coverage (shop, proven_by, interval_end);

-- A gap report is also the reconciler's unit of work: `progress_until` is how far its window has been
-- proven (resumed from there after a restart), `fresh_until` how far a fresh (not yet provable) read
-- got. Open reports have no outcome yet or a retryable 'partial' one.
ALTER TABLE gap_reports
    ADD COLUMN progress_until    timestamptz,
    ADD COLUMN fresh_until       timestamptz,
    ADD COLUMN windows_read      integer NOT NULL DEFAULT 0,
    ADD COLUMN windows_failed    integer NOT NULL DEFAULT 0,
    ADD COLUMN rejections        integer NOT NULL DEFAULT 0,
    ADD COLUMN not_found         integer NOT NULL DEFAULT 0,
    ADD COLUMN overlap_seconds   double precision,
    ADD COLUMN list_lag_seconds  double precision,
    ADD COLUMN updated_at        timestamptz NOT NULL DEFAULT now(),
    ADD CONSTRAINT gap_reports_cause_known
        CHECK (cause IN ('restart', 'disconnect', 'silence', 'sweep', 'manual', 'initial_load')),
    ADD CONSTRAINT gap_reports_outcome_known
        CHECK (outcome IS NULL OR outcome IN ('recovered', 'partial', 'failed'));
CREATE INDEX gap_reports_open ON gap_reports (shop, id) WHERE outcome IS NULL OR outcome = 'partial';

-- Which trades a gap's backfill brought in or brought up to date: what on-call asks after an outage
-- ("which orders did we miss?"). `push_loss`: the change fell in a stretch the stream had proven.
CREATE TABLE gap_report_trades (
    report_id  bigint NOT NULL REFERENCES gap_reports (id) ON DELETE CASCADE,
    tid        bigint NOT NULL,
    modified   timestamptz,
    kind       text NOT NULL CHECK (kind IN ('new', 'changed')),
    push_loss  boolean NOT NULL DEFAULT false,
    PRIMARY KEY (report_id, tid)
);

-- TMC connections as the replicas saw them: the "stream up / down" lane of the report timeline.
CREATE TABLE stream_connections (
    id               bigserial PRIMARY KEY,
    replica          text NOT NULL,
    connected_at     timestamptz NOT NULL,
    disconnected_at  timestamptz,
    reason           text
);
CREATE INDEX stream_connections_connected_at ON stream_connections (connected_at);

-- Initial loads, resumable: one row per shop, one per part (a TOPATS task, or one day of sold.get).
-- Times are GMT+8 midnights: `since` is the first day loaded, `until` the day the load started
-- (created-time range [since, until); the increment reads from `until` on).
CREATE TABLE initial_loads (
    shop         text PRIMARY KEY,
    since        timestamptz NOT NULL,
    until        timestamptz NOT NULL,
    method       text NOT NULL CHECK (method IN ('topats', 'sold_get')),
    state        text NOT NULL CHECK (state IN ('running', 'done')),
    trades       bigint NOT NULL DEFAULT 0,
    report_id    bigint REFERENCES gap_reports (id),
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    CHECK (since < until)
);

CREATE TABLE initial_load_parts (
    shop        text NOT NULL REFERENCES initial_loads (shop) ON DELETE CASCADE,
    part_start  timestamptz NOT NULL,
    part_end    timestamptz NOT NULL,
    method      text NOT NULL CHECK (method IN ('topats', 'sold_get')),
    task_id     bigint,
    state       text NOT NULL CHECK (state IN ('pending', 'started', 'done')),
    trades      bigint NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (shop, part_start),
    CHECK (part_start < part_end)
);
