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
-- STABLE, as the text to timestamp cast is: an IMMUTABLE label would keep the planner from inlining it.
CREATE FUNCTION load_time(v jsonb) RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT (v #>> '{}')::timestamp AT TIME ZONE INTERVAL '+08:00'
$$;
-- An amount as a string numeric(14,2) holds exactly, or absent.
CREATE FUNCTION load_money_fits(v jsonb) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT v IS NULL OR jsonb_typeof(v) = 'null'
        OR (jsonb_typeof(v) = 'string' AND v #>> '{}' ~ '^[0-9]{1,12}(\.[0-9]{1,2})?$')
$$;
-- An int64 id: a JSON integer or a string of digits (CASE: the cast only after the digits are known).
CREATE FUNCTION load_id_fits(v jsonb) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(v) IN ('number', 'string') AND v #>> '{}' ~ '^[0-9]{1,19}$'
        THEN (v #>> '{}')::numeric <= 9223372036854775807 ELSE false END
$$;
-- A JSON number keeps only its value in jsonb: `1e5` and `100000` look alike, and a float that lost an
-- id's digits would pass. A number is taken only when the line spells it as plain digits after its key
-- (`"key":digits` or `"key": digits`, then `,` or `}`); any other spelling goes the per-trade way.
CREATE FUNCTION load_spelled(line text, key text, v jsonb) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_typeof(v) IS DISTINCT FROM 'number'
        OR strpos(line, '"' || key || '":' || (v #>> '{}') || ',') > 0
        OR strpos(line, '"' || key || '":' || (v #>> '{}') || '}') > 0
        OR strpos(line, '"' || key || '": ' || (v #>> '{}') || ',') > 0
        OR strpos(line, '"' || key || '": ' || (v #>> '{}') || '}') > 0
$$;
CREATE FUNCTION load_count_fits(v jsonb) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT v IS NULL OR jsonb_typeof(v) = 'null'
        OR (jsonb_typeof(v) = 'number' AND v #>> '{}' ~ '^-?[0-9]{1,9}$')
$$;
CREATE FUNCTION load_text_fits(v jsonb) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT v IS NULL OR jsonb_typeof(v) IN ('null', 'string')
$$;
-- The sub-orders as a JSON array (`{"orders": {"order": [...]}}`, a bare array, or none), NULL when
-- they have another shape.
CREATE FUNCTION load_orders(raw jsonb) RETURNS jsonb LANGUAGE sql STABLE AS $$
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
CREATE FUNCTION load_trade_lines(p_source text, p_channel text, p_text_limit integer)
RETURNS TABLE (taken integer, inserted integer, updated integer, unchanged integer, leftover integer[])
LANGUAGE plpgsql
-- The statistics of a fresh temporary table are guesses: JIT would spend more compiling than running.
SET jit = off
SET work_mem = '64MB'
AS $fn$
#variable_conflict use_column
DECLARE
    c_tid bigint[];
    c_nick text[];
    c_status text[];
    c_modified timestamptz[];
    c_inserted boolean[];
    c_all bigint[];
    v_taken integer;
    v_leftover integer[];
    notified bigint;
BEGIN
    -- 1-3 in one statement, so each line's JSON is parsed once and never stored in between:
    -- parse every non-blank line (a line that is not JSON fails the call) and unwrap the trade; read
    -- its fields in one pass; keep the plain ones, the newest per tid (the greater `modified`, then the
    -- later line, as store.validation.prepare_batch keeps: ON CONFLICT cannot touch a row twice); the
    -- guarded upsert, sorted by tid; the sub-orders of the changed trades.
    WITH parsed AS MATERIALIZED (
        SELECT l.n, l.line, sha256(convert_to(l.line, 'UTF8')) AS line_hash, l.line::jsonb AS doc
        FROM pg_temp.trade_lines l WHERE l.line !~ '^\s*$'
    ), fields AS MATERIALIZED (
        SELECT u.n, u.line, u.line_hash, u.raw, f.*, load_orders(u.raw) AS orders_list
        FROM (
            SELECT p.n, p.line, p.line_hash, CASE
                    WHEN jsonb_typeof(p.doc -> 'trade_fullinfo_get_response' -> 'trade') = 'object'
                        THEN p.doc -> 'trade_fullinfo_get_response' -> 'trade'
                    WHEN jsonb_typeof(p.doc -> 'trade') = 'object' THEN p.doc -> 'trade'
                    ELSE p.doc
                END AS raw
            FROM parsed p
        ) u
        LEFT JOIN LATERAL jsonb_to_record(CASE WHEN jsonb_typeof(u.raw) = 'object' THEN u.raw END) AS f(
            tid jsonb, seller_nick jsonb, buyer_nick jsonb, buyer_open_uid jsonb, status jsonb,
            type jsonb, created jsonb, modified jsonb, pay_time jsonb, consign_time jsonb,
            end_time jsonb, payment jsonb, total_fee jsonb, post_fee jsonb
        ) ON true
    ), order_rows AS MATERIALIZED (
        -- Every sub-order of every line, read once (an element that is not an object fails the call).
        SELECT f.n, f.line, o.*
        FROM fields f, jsonb_to_recordset(f.orders_list) AS o(
            oid jsonb, status jsonb, refund_status jsonb, title jsonb, num jsonb, num_iid jsonb,
            sku_id jsonb, price jsonb, payment jsonb, total_fee jsonb, end_time jsonb
        )
    ), odd_orders AS (
        SELECT r.n FROM order_rows r
        GROUP BY r.n
        HAVING NOT bool_and(
                load_id_fits(r.oid) AND load_spelled(r.line, 'oid', r.oid)
                AND (r.num_iid IS NULL OR jsonb_typeof(r.num_iid) = 'null'
                     OR (load_id_fits(r.num_iid) AND load_spelled(r.line, 'num_iid', r.num_iid)))
                AND load_count_fits(r.num) AND load_spelled(r.line, 'num', r.num)
                AND load_text_fits(r.status) AND load_text_fits(r.refund_status)
                AND load_text_fits(r.title) AND load_text_fits(r.sku_id)
                AND load_money_fits(r.price) AND load_money_fits(r.payment)
                AND load_money_fits(r.total_fee) AND load_time_fits(r.end_time))
            OR count(DISTINCT r.oid #>> '{}') <> count(*)
    ), checked AS MATERIALIZED (
        SELECT f.n, f.line_hash, f.raw, f.tid, f.seller_nick, f.buyer_nick, f.buyer_open_uid, f.status,
            f.type, f.created, f.modified, f.pay_time, f.consign_time, f.end_time, f.payment,
            f.total_fee, f.post_fee, jsonb_typeof(f.raw) = 'object'
            AND load_id_fits(f.tid) AND load_spelled(f.line, 'tid', f.tid)
            AND jsonb_typeof(f.modified) = 'string' AND load_time_fits(f.modified)
            AND load_time_fits(f.created) AND load_time_fits(f.pay_time)
            AND load_time_fits(f.consign_time) AND load_time_fits(f.end_time)
            AND load_money_fits(f.payment) AND load_money_fits(f.total_fee) AND load_money_fits(f.post_fee)
            AND load_text_fits(f.seller_nick) AND load_text_fits(f.buyer_nick)
            AND load_text_fits(f.buyer_open_uid) AND load_text_fits(f.status) AND load_text_fits(f.type)
            AND f.orders_list IS NOT NULL
            AND f.n NOT IN (SELECT d.n FROM odd_orders d) AS fits
        FROM fields f
    ), newest AS MATERIALIZED (
        SELECT DISTINCT ON (s.tid) s.*
        FROM (
            SELECT c.n, (c.tid #>> '{}')::bigint AS tid, load_time(c.modified) AS modified, c.raw,
                   c.line_hash, c.seller_nick AS j_seller_nick, c.buyer_nick, c.buyer_open_uid,
                   c.status AS j_status, c.type, c.created, c.pay_time, c.consign_time, c.end_time,
                   c.payment, c.total_fee, c.post_fee
            FROM checked c WHERE c.fits
        ) s
        ORDER BY s.tid, s.modified DESC, s.n DESC
    ), up AS (
        INSERT INTO trades AS t (
            tid, seller_nick, buyer_nick, buyer_open_uid, status, type, created, modified, pay_time,
            consign_time, end_time, payment, total_fee, post_fee, raw, content_hash, fetched_at, source
        )
        SELECT
            s.tid, s.j_seller_nick #>> '{}', s.buyer_nick #>> '{}', s.buyer_open_uid #>> '{}',
            s.j_status #>> '{}', s.type #>> '{}', load_time(s.created), s.modified,
            load_time(s.pay_time), load_time(s.consign_time), load_time(s.end_time),
            (s.payment #>> '{}')::numeric, (s.total_fee #>> '{}')::numeric, (s.post_fee #>> '{}')::numeric,
            s.raw, s.line_hash, NULL, p_source
        FROM newest s
        ORDER BY s.tid
        -- `content_hash` is the sha256 of the line as received. On an equal `modified` a line
        -- (no read time) replaces only a stored state without a read time whose content differs
        -- (compared as jsonb too: a state the per-trade path stored with the same content keeps).
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
    ), new_orders AS MATERIALIZED (
        SELECT s.tid, (r.oid #>> '{}')::bigint AS oid, r.status, r.refund_status, r.title, r.num,
               r.num_iid, r.sku_id, r.price, r.payment, r.total_fee, r.end_time
        FROM newest s JOIN up ON up.tid = s.tid JOIN order_rows r ON r.n = s.n
    ), gone_orders AS (
        -- The stored sub-orders of an updated trade that its new state no longer has (the others are
        -- overwritten below: one statement must not touch a row twice).
        DELETE FROM trade_orders d
        USING up
        WHERE d.tid = up.tid AND NOT up.inserted
          AND NOT EXISTS (SELECT 1 FROM new_orders x WHERE x.tid = d.tid AND x.oid = d.oid)
    ), put_orders AS (
        INSERT INTO trade_orders AS d (
            tid, oid, status, refund_status, title, num, num_iid, sku_id, price, payment, total_fee, end_time
        )
        SELECT x.tid, x.oid, x.status #>> '{}', x.refund_status #>> '{}', x.title #>> '{}',
               (x.num #>> '{}')::integer, (x.num_iid #>> '{}')::bigint, x.sku_id #>> '{}',
               (x.price #>> '{}')::numeric, (x.payment #>> '{}')::numeric, (x.total_fee #>> '{}')::numeric,
               load_time(x.end_time)
        FROM new_orders x
        ORDER BY x.tid, x.oid
        ON CONFLICT (tid, oid) DO UPDATE SET
            status = EXCLUDED.status,
            refund_status = EXCLUDED.refund_status,
            title = EXCLUDED.title,
            num = EXCLUDED.num,
            num_iid = EXCLUDED.num_iid,
            sku_id = EXCLUDED.sku_id,
            price = EXCLUDED.price,
            payment = EXCLUDED.payment,
            total_fee = EXCLUDED.total_fee,
            end_time = EXCLUDED.end_time
    )
    SELECT (SELECT array_agg(up.tid ORDER BY up.tid) FROM up),
           (SELECT array_agg(up.seller_nick ORDER BY up.tid) FROM up),
           (SELECT array_agg(up.status ORDER BY up.tid) FROM up),
           (SELECT array_agg(up.modified ORDER BY up.tid) FROM up),
           (SELECT array_agg(up.inserted ORDER BY up.tid) FROM up),
           (SELECT array_agg(s.tid) FROM newest s),
           (SELECT count(*) FROM checked c WHERE c.fits),
           (SELECT array_agg(c.n ORDER BY c.n) FROM checked c WHERE NOT c.fits)
    INTO c_tid, c_nick, c_status, c_modified, c_inserted, c_all, v_taken, v_leftover;
    -- 4. the unresolved rows the stored versions pay (a line has no read time: only rows that name the
    -- version they wait for)
    IF c_all IS NOT NULL THEN
        DELETE FROM unresolved_trades u
        USING trades t
        WHERE u.tid = ANY (c_all) AND t.tid = u.tid
          AND u.modified IS NOT NULL AND t.modified >= u.modified;
    END IF;
    -- 5. last: feed positions (the counter row stays locked until COMMIT), feed rows, NOTIFYs
    IF c_tid IS NOT NULL THEN
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
        coalesce(v_taken, 0),
        coalesce((SELECT count(*)::integer FROM unnest(c_inserted) AS i WHERE i), 0),
        coalesce((SELECT count(*)::integer FROM unnest(c_inserted) AS i WHERE NOT i), 0),
        coalesce(cardinality(c_all), 0) - coalesce(cardinality(c_tid), 0),
        coalesce(v_leftover, '{}');
END
$fn$;
