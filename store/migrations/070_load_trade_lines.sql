-- 070: the initial load's bulk path (docs/performance.md#initial-load). The lines of a TOPATS result
-- are copied as text into a temporary table (`pg_temp.trade_lines`, made by the caller per chunk, ON
-- COMMIT DROP) and merged by one call of `load_trade_lines`: PostgreSQL parses the JSON and extracts the
-- columns. Only lines whose every extracted field has the one plain shape below (the shape Taobao
-- writes) are taken; every other line is handed back by number, for the per-trade path (store/upsert.py)
-- and its validation. A line PostgreSQL cannot read at all (not JSON, U+0000, a lone surrogate, a
-- date that does not exist) fails the call, and the caller sends the whole chunk the per-trade way.
-- The steps and their guards are those of apply_trade_batch (migration 046).

-- A time as Taobao writes it (GMT+8 wall clock), or absent.
CREATE FUNCTION load_time_fits(v jsonb) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT v IS NULL OR jsonb_typeof(v) = 'null'
        OR (jsonb_typeof(v) = 'string' AND v #>> '{}' ~ '^[12][0-9]{3}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}$')
$$;
CREATE FUNCTION load_time(v jsonb) RETURNS timestamptz LANGUAGE sql IMMUTABLE AS $$
    SELECT (v #>> '{}')::timestamp AT TIME ZONE INTERVAL '+08:00'
$$;
-- An amount as a string numeric(14,2) holds exactly, or absent.
CREATE FUNCTION load_money_fits(v jsonb) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT v IS NULL OR jsonb_typeof(v) = 'null'
        OR (jsonb_typeof(v) = 'string' AND v #>> '{}' ~ '^[0-9]{1,12}(\.[0-9]{1,2})?$')
$$;
-- An int64 id: a JSON integer or a string of digits.
CREATE FUNCTION load_id_fits(v jsonb) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_typeof(v) IN ('number', 'string') AND v #>> '{}' ~ '^[0-9]{1,19}$'
        AND (v #>> '{}')::numeric <= 9223372036854775807
$$;
CREATE FUNCTION load_text_fits(v jsonb) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT v IS NULL OR jsonb_typeof(v) IN ('null', 'string')
$$;
-- The sub-orders as a JSON array (`{"orders": {"order": [...]}}`, a bare array, or none), NULL when
-- they have another shape.
CREATE FUNCTION load_orders(raw jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN raw -> 'orders' IS NULL OR jsonb_typeof(raw -> 'orders') = 'null' THEN '[]'::jsonb
        WHEN jsonb_typeof(raw -> 'orders') = 'array' THEN raw -> 'orders'
        WHEN jsonb_typeof(raw -> 'orders') = 'object' THEN CASE
            WHEN NOT raw -> 'orders' ? 'order' THEN '[]'::jsonb
            WHEN jsonb_typeof(raw -> 'orders' -> 'order') = 'array' THEN raw -> 'orders' -> 'order'
            WHEN jsonb_typeof(raw -> 'orders' -> 'order') = 'object'
                THEN jsonb_build_array(raw -> 'orders' -> 'order')
        END
    END
$$;
CREATE FUNCTION load_order_fits(o jsonb) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_typeof(o) = 'object'
        AND load_id_fits(o -> 'oid')
        AND (o -> 'num_iid' IS NULL OR jsonb_typeof(o -> 'num_iid') = 'null' OR load_id_fits(o -> 'num_iid'))
        AND (o -> 'num' IS NULL OR jsonb_typeof(o -> 'num') = 'null'
             OR (jsonb_typeof(o -> 'num') = 'number' AND o ->> 'num' ~ '^-?[0-9]{1,9}$'))
        AND load_text_fits(o -> 'status') AND load_text_fits(o -> 'refund_status')
        AND load_text_fits(o -> 'title') AND load_text_fits(o -> 'sku_id')
        AND load_money_fits(o -> 'price') AND load_money_fits(o -> 'payment')
        AND load_money_fits(o -> 'total_fee') AND load_time_fits(o -> 'end_time')
$$;
-- Whether a trade object has the plain shape the bulk path stores as it is.
CREATE FUNCTION load_trade_fits(raw jsonb) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_typeof(raw) = 'object'
        AND load_id_fits(raw -> 'tid')
        AND raw -> 'modified' IS NOT NULL AND jsonb_typeof(raw -> 'modified') = 'string'
        AND load_time_fits(raw -> 'modified') AND load_time_fits(raw -> 'created')
        AND load_time_fits(raw -> 'pay_time') AND load_time_fits(raw -> 'consign_time')
        AND load_time_fits(raw -> 'end_time')
        AND load_money_fits(raw -> 'payment') AND load_money_fits(raw -> 'total_fee')
        AND load_money_fits(raw -> 'post_fee')
        AND load_text_fits(raw -> 'seller_nick') AND load_text_fits(raw -> 'buyer_nick')
        AND load_text_fits(raw -> 'buyer_open_uid') AND load_text_fits(raw -> 'status')
        AND load_text_fits(raw -> 'type')
        AND load_orders(raw) IS NOT NULL
        AND (SELECT bool_and(load_order_fits(o)) AND count(DISTINCT o ->> 'oid') = count(*)
             FROM jsonb_array_elements(load_orders(raw)) AS o) IS NOT FALSE
$$;

CREATE FUNCTION load_trade_lines(p_source text, p_channel text, p_text_limit integer)
RETURNS TABLE (taken integer, inserted integer, updated integer, unchanged integer, leftover integer[])
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
    c_tid bigint[];
    c_nick text[];
    c_status text[];
    c_modified timestamptz[];
    c_inserted boolean[];
    v_taken integer;
    v_distinct integer;
    v_leftover integer[];
    notified bigint;
BEGIN
    -- 1. parse every non-blank line (a line that is not JSON fails the call), unwrap the trade object
    CREATE TEMP TABLE trade_lines_parsed ON COMMIT DROP AS
    SELECT l.n, CASE
            WHEN jsonb_typeof(d -> 'trade_fullinfo_get_response' -> 'trade') = 'object'
                THEN d -> 'trade_fullinfo_get_response' -> 'trade'
            WHEN jsonb_typeof(d -> 'trade') = 'object' THEN d -> 'trade'
            ELSE d
        END AS raw
    FROM pg_temp.trade_lines l, LATERAL (SELECT l.line::jsonb AS d) j
    WHERE l.line !~ '^\s*$';
    SELECT array_agg(p.n ORDER BY p.n) INTO v_leftover
    FROM trade_lines_parsed p WHERE NOT load_trade_fits(p.raw);
    -- 2. the newest line per tid among the plain ones (ON CONFLICT cannot touch a row twice): the
    -- greater `modified`, then the later line, as store.validation.prepare_batch keeps
    CREATE TEMP TABLE trade_lines_newest ON COMMIT DROP AS
    SELECT DISTINCT ON (tid) *
    FROM (
        SELECT p.n, (p.raw ->> 'tid')::bigint AS tid, load_time(p.raw -> 'modified') AS modified, p.raw
        FROM trade_lines_parsed p
        WHERE p.n <> ALL (coalesce(v_leftover, '{}'))
    ) s
    ORDER BY tid, modified DESC, n DESC;
    SELECT count(*) INTO v_taken FROM trade_lines_parsed p WHERE p.n <> ALL (coalesce(v_leftover, '{}'));
    SELECT count(*) INTO v_distinct FROM trade_lines_newest;
    -- 3. the guarded upsert. `content_hash` is the sha256 of the trade's JSON text as stored; on an
    -- equal `modified` a line (no read time) replaces only a stored state without a read time whose
    -- content differs (compared as jsonb, so a state stored by the per-trade path with the same content
    -- but its canonical-text hash stays as it is).
    WITH up AS (
        INSERT INTO trades AS t (
            tid, seller_nick, buyer_nick, buyer_open_uid, status, type, created, modified, pay_time,
            consign_time, end_time, payment, total_fee, post_fee, raw, content_hash, fetched_at, source
        )
        SELECT
            s.tid, s.raw ->> 'seller_nick', s.raw ->> 'buyer_nick', s.raw ->> 'buyer_open_uid',
            s.raw ->> 'status', s.raw ->> 'type', load_time(s.raw -> 'created'), s.modified,
            load_time(s.raw -> 'pay_time'), load_time(s.raw -> 'consign_time'),
            load_time(s.raw -> 'end_time'), (s.raw ->> 'payment')::numeric,
            (s.raw ->> 'total_fee')::numeric, (s.raw ->> 'post_fee')::numeric, s.raw,
            sha256(convert_to(s.raw::text, 'UTF8')), NULL, p_source
        FROM trade_lines_newest s
        ORDER BY s.tid
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
           OR (t.modified = EXCLUDED.modified AND t.fetched_at IS NULL
               AND t.content_hash <> EXCLUDED.content_hash AND t.raw <> EXCLUDED.raw)
        RETURNING t.tid, t.seller_nick, t.status, t.modified, (t.xmax = 0) AS inserted
    )
    SELECT array_agg(up.tid ORDER BY up.tid), array_agg(up.seller_nick ORDER BY up.tid),
           array_agg(up.status ORDER BY up.tid), array_agg(up.modified ORDER BY up.tid),
           array_agg(up.inserted ORDER BY up.tid)
    INTO c_tid, c_nick, c_status, c_modified, c_inserted
    FROM up;
    -- 4. the sub-orders of the changed trades
    IF c_tid IS NOT NULL THEN
        DELETE FROM trade_orders o
        USING unnest(c_tid, c_inserted) AS c(tid, inserted)
        WHERE o.tid = c.tid AND NOT c.inserted;
        INSERT INTO trade_orders (
            tid, oid, status, refund_status, title, num, num_iid, sku_id, price, payment, total_fee, end_time
        )
        SELECT s.tid, (o ->> 'oid')::bigint, o ->> 'status', o ->> 'refund_status', o ->> 'title',
               (o ->> 'num')::integer, (o ->> 'num_iid')::bigint, o ->> 'sku_id', (o ->> 'price')::numeric,
               (o ->> 'payment')::numeric, (o ->> 'total_fee')::numeric, load_time(o -> 'end_time')
        FROM trade_lines_newest s, jsonb_array_elements(load_orders(s.raw)) AS o
        WHERE s.tid = ANY (c_tid);
        -- 5. the unresolved rows the stored versions pay (a line has no read time: only those that
        -- name the version they wait for)
        DELETE FROM unresolved_trades u
        USING trades t
        WHERE u.tid = ANY (c_tid) AND t.tid = u.tid
          AND u.modified IS NOT NULL AND t.modified >= u.modified;
        -- 6. last: feed positions (the counter row stays locked until COMMIT), feed rows, NOTIFYs
        WITH counter AS (
            UPDATE feed_counter SET last = last + cardinality(c_tid) WHERE id = 1 RETURNING last
        ), appended AS (
            INSERT INTO trade_changes (position, tid, seller_nick, status, modified, source, kind)
            SELECT counter.last - cardinality(c_tid) + c.n, c.tid, c.seller_nick, c.status, c.modified,
                   p_source, CASE WHEN c.inserted THEN 'created' ELSE 'updated' END
            FROM counter,
                 unnest(c_tid, c_nick, c_status, c_modified, c_inserted)
                     WITH ORDINALITY AS c(tid, seller_nick, status, modified, inserted, n)
            RETURNING position, tid, seller_nick, status, modified, source
        )
        SELECT count(*) INTO notified FROM (
            SELECT pg_notify(p_channel, json_build_object(
                'position', a.position,
                'tid', a.tid,
                'seller_nick', left(a.seller_nick, p_text_limit),
                'status', left(a.status, p_text_limit),
                'modified', a.modified,
                'source', left(a.source, p_text_limit)
            )::text)
            FROM appended a
            ORDER BY a.position
        ) sent;
    END IF;
    RETURN QUERY SELECT
        v_taken,
        coalesce((SELECT count(*)::integer FROM unnest(c_inserted) AS i WHERE i), 0),
        coalesce((SELECT count(*)::integer FROM unnest(c_inserted) AS i WHERE NOT i), 0),
        v_distinct - coalesce(cardinality(c_tid), 0),
        coalesce(v_leftover, '{}');
END
$fn$;
