"""The SQL of replica coordination (docs/design.md#sql-in-one-place): heartbeats (table `replicas`), shop
leadership (session-level advisory locks), shared bans (table `api_bans`, NOTIFY). Tables:
store/migrations/020_replicas.sql. The replicas run it on a dedicated connection of their own
(`replicas.replica_set`), never a pooled one: their advisory locks live as long as that connection."""

from __future__ import annotations

from typing import Final

# NOTIFY channel on which a replica announces a code-7 ban to the others (payload: the app key).
BAN_CHANNEL: Final = "order_sync_api_ban"

# -- heartbeats ----------------------------------------------------------------------------------------

# Register or refresh this replica's row. A row held by another connection under the same name is left
# alone (no row returned) while its lease runs: its last heartbeat less than $6 seconds old. Either two
# processes were given one SYNC_REPLICA_ID, or a restarted one meets its predecessor's lingering
# connection, whose lease then expires (docs/operations.md#replica-identity).
HEARTBEAT: Final = """
INSERT INTO replicas AS r (replica, backend_pid, stream_connected, stream_hold, leads, api_rate)
VALUES ($1, pg_backend_pid(), $2, $3, $4, $5)
ON CONFLICT (replica) DO UPDATE SET
    backend_pid = EXCLUDED.backend_pid,
    started_at = CASE WHEN r.backend_pid = EXCLUDED.backend_pid THEN r.started_at ELSE now() END,
    last_seen = now(),
    stopped_at = NULL,
    hold_until = NULL,
    stream_connected = EXCLUDED.stream_connected,
    stream_hold = EXCLUDED.stream_hold,
    leads = EXCLUDED.leads,
    api_rate = EXCLUDED.api_rate
WHERE r.backend_pid = EXCLUDED.backend_pid
   OR r.stopped_at IS NOT NULL
   OR r.backend_pid NOT IN (SELECT pid FROM pg_stat_activity)
   OR r.last_seen < now() - make_interval(secs => $6)
RETURNING replica
"""

# Before taking a name over whose lease expired: end the connection still holding it (a predecessor
# that died without closing it, or is frozen), so no advisory lock of the old name outlives it.
END_PREDECESSOR: Final = """
SELECT pg_terminate_backend(backend_pid) AS ended
FROM replicas
WHERE replica = $1 AND stopped_at IS NULL AND backend_pid <> pg_backend_pid()
  AND last_seen < now() - make_interval(secs => $2)
  AND backend_pid IN (SELECT pid FROM pg_stat_activity)
"""

# When the holder of this name last wrote its heartbeat.
LAST_SEEN: Final = "SELECT last_seen FROM replicas WHERE replica = $1"

# Every replica row as this round sees it. `live`: fresh heartbeat and its connection still there.
# `hold`: the stream hold that still counts: a live replica's, a dead one's for $2 seconds after its
# last heartbeat (TMC redelivers what it held after about a minute), a stopped one's until hold_until.
MEMBERS: Final = """
SELECT replica, backend_pid, stream_connected, leads, api_rate,
       (stopped_at IS NULL AND last_seen > now() - make_interval(secs => $1)
        AND backend_pid IN (SELECT pid FROM pg_stat_activity)) AS live,
       CASE WHEN (stopped_at IS NULL AND last_seen > now() - make_interval(secs => $2))
                 OR hold_until > now()
            THEN stream_hold END AS hold
FROM replicas
ORDER BY replica
"""

# A replica whose heartbeat stopped long ago but whose connection lives on (a frozen process) still
# holds its shops' locks: ending its connection frees them; it notices and rejoins when it wakes.
END_FROZEN: Final = """
SELECT replica, pg_terminate_backend(backend_pid) AS ended
FROM replicas
WHERE replica <> $1 AND stopped_at IS NULL AND last_seen < now() - make_interval(secs => $2)
  AND backend_pid IN (SELECT pid FROM pg_stat_activity)
"""

FORGET_OLD: Final = """
DELETE FROM replicas WHERE coalesce(stopped_at, last_seen) < now() - interval '1 day'
"""

# A graceful stop: out of the quota share and leadership at once; what it handed back unconfirmed
# keeps holding the others' stream proof for $3 seconds (TMC redelivers a Failed message in ~6 min).
STOPPED: Final = """
UPDATE replicas SET stopped_at = now(), stream_connected = false, leads = '{}', stream_hold = $2,
    hold_until = CASE WHEN $2::timestamptz IS NULL THEN NULL ELSE now() + make_interval(secs => $3) END
WHERE replica = $1 AND backend_pid = pg_backend_pid()
"""

# -- shop leadership -----------------------------------------------------------------------------------

# One session-level advisory lock per shop, on the coordination connection: released by PostgreSQL
# the moment that connection ends, however the replica died. The 'leader:' prefix keeps the keys apart
# from the ledger's per-shop transaction locks ('coverage:').
TRY_LEAD: Final = "SELECT pg_try_advisory_lock(hashtextextended('leader:' || $1, 0))"

STOP_LEADING: Final = "SELECT pg_advisory_unlock(hashtextextended('leader:' || $1, 0))"

# pg_locks shows a bigint advisory key as classid (high 32 bits) and objid (low 32 bits), objsubid 1.
_LOCK_OF_SHOP: Final = """
locktype = 'advisory' AND granted AND objsubid = 1
AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
AND classid = ((hashtextextended('leader:' || {shop}, 0) >> 32) & 4294967295)::oid
AND objid = (hashtextextended('leader:' || {shop}, 0) & 4294967295)::oid
"""

# Which connection (backend pid) leads each shop, NULL when none does.
LEADERS: Final = f"""
SELECT s.shop, l.pid
FROM unnest($1::text[]) AS s(shop)
LEFT JOIN pg_locks l ON {_LOCK_OF_SHOP.format(shop="s.shop")}
"""

# Fencing, inside the transaction that advances the ledger: does connection $2 still lead shop $1?
STILL_LEADS: Final = f"""
SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = $2 AND {_LOCK_OF_SHOP.format(shop="$1")})
"""

# -- the shared quota ----------------------------------------------------------------------------------

ANNOUNCE_BAN: Final = f"""
WITH ban AS (
    INSERT INTO api_bans AS b (app_key, ban_until, banned_by)
    VALUES ($1, now() + make_interval(secs => $2), $3)
    ON CONFLICT (app_key) DO UPDATE SET
        ban_until = greatest(b.ban_until, EXCLUDED.ban_until),
        banned_by = CASE WHEN EXCLUDED.ban_until > b.ban_until THEN EXCLUDED.banned_by ELSE b.banned_by END,
        updated_at = now()
    RETURNING app_key
)
SELECT pg_notify('{BAN_CHANNEL}', app_key) FROM ban
"""

# Seconds left of the app's current ban (none: no row).
BAN_LEFT: Final = """
SELECT extract(epoch FROM ban_until - now())::float8 AS seconds, banned_by
FROM api_bans WHERE app_key = $1 AND ban_until > now()
"""
