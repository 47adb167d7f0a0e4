-- 020: several replicas of the daemon on one database (replicas/replica_set.py, leadership.py, quota.py).

-- One row per replica, written every SYNC_HEARTBEAT_SECONDS on its coordination connection (the one
-- that holds its shop leadership locks). A replica is live while its row is fresh and that connection
-- (`backend_pid`) still exists; the app's TOP quota is shared among the live ones.
CREATE TABLE replicas (
    replica           text PRIMARY KEY,
    backend_pid       integer NOT NULL,
    started_at        timestamptz NOT NULL DEFAULT now(),
    last_seen         timestamptz NOT NULL DEFAULT now(),
    stopped_at        timestamptz,
    -- Its TMC connection is up: the group's stream is being consumed.
    stream_connected  boolean NOT NULL DEFAULT false,
    -- The oldest TMC message time it holds uncommitted: no replica proves the stream past it.
    stream_hold       timestamptz,
    -- After a graceful stop, how long its handed-back messages keep holding the others' proof.
    hold_until        timestamptz,
    -- Shops it leads (for operators; the advisory locks are what decides).
    leads             text[] NOT NULL DEFAULT '{}',
    -- Its share of SYNC_API_RATE, calls per second.
    api_rate          double precision
);

-- A code-7 ban one replica was answered holds every replica of the app until `ban_until`.
CREATE TABLE api_bans (
    app_key     text PRIMARY KEY,
    ban_until   timestamptz NOT NULL,
    banned_by   text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Who opened a gap report, and every replica that worked on it in turn (a shop's leadership can move
-- while its report is open); `replica` is the one that worked on it last (for a closed report: the one
-- that closed it).
ALTER TABLE gap_reports
    ADD COLUMN detected_by  text,
    ADD COLUMN replicas     text[] NOT NULL DEFAULT '{}';
UPDATE gap_reports
SET detected_by = replica,
    replicas = CASE WHEN replica IS NULL OR started_at IS NULL THEN '{}'::text[] ELSE ARRAY[replica] END;
