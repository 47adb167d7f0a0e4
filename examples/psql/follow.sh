#!/usr/bin/env bash
# Follows the order-sync change feed with nothing but psql and bash, exactly once (the README's "ERP
# contract"): LISTEN, then the catch-up query from a cursor kept in the ERP's own table.
#
#   DATABASE_URL=postgresql://erp@db/orders examples/psql/follow.sh [NAME]
#
# Environment: DATABASE_URL (required), DATABASE_SCHEMA (order_sync: the service's schema, where the feed
# is), NOTIFY_CHANNEL (trade_changed), BATCH_SIZE (500), POLL_SECONDS (1).
#
# * One psql session is the doorbell: it runs LISTEN and is kept open as a coprocess. psql reports a
#   notification only after it runs a command, so the script sends it a `SELECT 1` every POLL_SECONDS
#   and looks for "Asynchronous notification" in what comes back (a notification waits at most that
#   long). LISTEN is issued BEFORE the first catch-up, so a change committed in between still rings.
# * Each catch-up batch is one psql call and one transaction: lock this consumer's row in `erp_cursor`,
#   copy `position > cursor` into a temporary table, apply it (here: insert into `erp_trade_events`, the
#   ERP's inbox; put the ERP's own statements there), move the cursor, COMMIT. Nothing is applied twice,
#   across crashes and disconnects. The batch is printed as JSON lines (tid as an exact JSON number).
# * When the doorbell session dies (server restart, network), it is reopened with a doubling pause.
set -euo pipefail
: "${DATABASE_URL:?set DATABASE_URL to the database order-sync writes}"
name=${1:-erp-psql}
# The feed is read schema-qualified; the ERP's own tables go where its search_path puts them.
schema=${DATABASE_SCHEMA:-order_sync}
channel=${NOTIFY_CHANNEL:-trade_changed}
batch_size=${BATCH_SIZE:-500}
poll=${POLL_SECONDS:-1}
psql_batch=(psql "$DATABASE_URL" -X -q -At -v ON_ERROR_STOP=1 -v name="$name" -v batch_size="$batch_size"
            -v schema="$schema")

"${psql_batch[@]}" <<'SQL'
CREATE TABLE IF NOT EXISTS erp_cursor (
    consumer    text PRIMARY KEY,
    position    bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS erp_trade_events (
    consumer    text NOT NULL,
    position    bigint NOT NULL,
    tid         bigint NOT NULL,
    status      text,
    modified    timestamptz NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO erp_cursor (consumer, position) VALUES (:'name', 0) ON CONFLICT (consumer) DO NOTHING;
SQL

# One batch: prints its changes as JSON lines, then a last line with the number of changes.
catch_up_batch() {
    "${psql_batch[@]}" <<'SQL'
BEGIN;
SELECT position AS cursor FROM erp_cursor WHERE consumer = :'name' FOR UPDATE \gset
CREATE TEMPORARY TABLE batch ON COMMIT DROP AS
    SELECT position, tid, seller_nick, status, modified, source, kind, committed_at
    FROM :"schema".trade_changes
    WHERE position > :cursor
    ORDER BY position
    LIMIT :batch_size;
-- The ERP's own writes go here, reading `batch`: they commit together with the cursor.
INSERT INTO erp_trade_events (consumer, position, tid, status, modified)
    SELECT :'name', position, tid, status, modified FROM batch;
UPDATE erp_cursor SET position = b.last, updated_at = now()
    FROM (SELECT max(position) AS last FROM batch) b
    WHERE consumer = :'name' AND b.last IS NOT NULL;
SELECT json_build_object('position', position, 'tid', tid, 'seller_nick', seller_nick, 'status', status,
                         'modified', modified, 'source', source, 'kind', kind)
    FROM batch ORDER BY position;
SELECT count(*) FROM batch;
COMMIT;
SQL
}

# Catch up until a batch comes back short. Lines are printed only once the batch has committed.
catch_up() {
    local out count
    while true; do
        out=$(catch_up_batch) || return 1
        count=${out##*$'\n'}
        if [[ "$count" != "$out" ]]; then printf '%s\n' "${out%$'\n'*}"; fi
        (( count < batch_size )) && return 0
    done
}

stopping=0
trap 'stopping=1' INT TERM
trap '' PIPE  # a write to a dead doorbell session fails instead of ending the script
pause=1
line=
backoff() {
    echo "follow.sh: $1; retrying in ${pause} s" >&2
    sleep "$pause" & wait $! || true
    pause=$(( pause < 30 ? pause * 2 : 30 ))
}
close_doorbell() {
    if [[ -n "$doorbell_pid" ]]; then
        kill "$doorbell_pid" 2>/dev/null || true
        wait "$doorbell_pid" 2>/dev/null || true
    fi
}
doorbell_pid=
while (( ! stopping )); do
    # The doorbell session; psql prints "tick" after each SELECT 1 so a read knows where a reply ends.
    coproc DOORBELL { psql "$DATABASE_URL" -X -q -At -v ON_ERROR_STOP=1 2>&1; }
    doorbell_pid=${DOORBELL_PID:-}
    printf 'LISTEN "%s";\n\\echo tick\n' "$channel" 2>/dev/null >&"${DOORBELL[1]:-}" || true
    if ! IFS= read -r -t 30 line 2>/dev/null <&"${DOORBELL[0]:-}" || [[ "$line" != tick ]]; then
        close_doorbell
        backoff "no doorbell session (${line:-no answer})"
        continue
    fi
    echo "follow.sh: listening on $channel as $name" >&2
    ring=1  # catch up once after every (re)connect
    while (( ! stopping )); do
        if (( ring )); then
            catch_up || { backoff "catch-up failed"; break; }
            ring=0; pause=1
        fi
        sleep "$poll" & wait $! || true
        (( stopping )) && break
        printf 'SELECT 1;\n\\echo tick\n' 2>/dev/null >&"${DOORBELL[1]:-}" || break
        alive=0
        while IFS= read -r -t 30 line 2>/dev/null <&"${DOORBELL[0]:-}"; do
            case $line in
                tick) alive=1; break ;;
                *"Asynchronous notification"*) ring=1 ;;
            esac
        done
        (( alive )) || break
    done
    close_doorbell
done
