-- 071: apply_trade_batch (migration 046) with one more guard on an equal `modified`: the content must
-- differ as jsonb, not only its hash. A trade stored by the initial load's bulk path (migration 070)
-- carries the hash of the line as received, not of the canonical JSON; read again at the same
-- `modified` with the same content, it stays as it is (no feed row), as it did when both hashes came
-- from the canonical JSON. The jsonb comparison runs only when the hashes differ.
CREATE OR REPLACE FUNCTION apply_trade_batch(
    t_tid bigint[], t_seller_nick text[], t_buyer_nick text[], t_buyer_open_uid text[], t_status text[],
    t_type text[], t_created timestamptz[], t_modified timestamptz[], t_pay_time timestamptz[],
    t_consign_time timestamptz[], t_end_time timestamptz[], t_payment numeric[], t_total_fee numeric[],
    t_post_fee numeric[], t_raw text[], t_content_hash bytea[], t_fetched_at timestamptz[],
    p_source text,
    o_tid bigint[], o_oid bigint[], o_status text[], o_refund_status text[], o_title text[],
    o_num integer[], o_num_iid bigint[], o_sku_id text[], o_price numeric[], o_payment numeric[],
    o_total_fee numeric[], o_end_time timestamptz[],
    d_reason text[], d_payload bytea[], d_tid bigint[], d_shop text[],
    r_tid bigint[], r_read_at timestamptz[],
    p_channel text, p_text_limit integer
) RETURNS TABLE (tid bigint, seller_nick text, status text, modified timestamptz, inserted boolean)
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
    c_tid bigint[];
    c_nick text[];
    c_status text[];
    c_modified timestamptz[];
    c_inserted boolean[];
    notified bigint;
BEGIN
    -- 1. originals of trades whose text was replaced
    IF cardinality(d_reason) > 0 THEN
        INSERT INTO dead_letters (source, reason, payload, tid, shop)
        SELECT p_source, r.reason, r.payload, r.tid, r.shop
        FROM unnest(d_reason, d_payload, d_tid, d_shop) AS r(reason, payload, tid, shop);
    END IF;
    -- 2. the guarded upsert (store/sql.py APPLY_TRADE_BATCH says why each part is there)
    WITH up AS (
        INSERT INTO trades AS t (
            tid, seller_nick, buyer_nick, buyer_open_uid, status, type, created, modified, pay_time,
            consign_time, end_time, payment, total_fee, post_fee, raw, content_hash, fetched_at, source
        )
        SELECT
            i.tid, i.seller_nick, i.buyer_nick, i.buyer_open_uid, i.status, i.type, i.created, i.modified,
            i.pay_time, i.consign_time, i.end_time, i.payment, i.total_fee, i.post_fee, i.raw::jsonb,
            i.content_hash, i.fetched_at, p_source
        FROM unnest(
            t_tid, t_seller_nick, t_buyer_nick, t_buyer_open_uid, t_status, t_type, t_created,
            t_modified, t_pay_time, t_consign_time, t_end_time, t_payment, t_total_fee, t_post_fee,
            t_raw, t_content_hash, t_fetched_at
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
               AND (t.fetched_at IS NULL OR EXCLUDED.fetched_at >= t.fetched_at)
               AND t.raw <> EXCLUDED.raw)
        RETURNING t.tid, t.seller_nick, t.status, t.modified, (t.xmax = 0) AS inserted
    )
    SELECT array_agg(up.tid ORDER BY up.tid), array_agg(up.seller_nick ORDER BY up.tid),
           array_agg(up.status ORDER BY up.tid), array_agg(up.modified ORDER BY up.tid),
           array_agg(up.inserted ORDER BY up.tid)
    INTO c_tid, c_nick, c_status, c_modified, c_inserted
    FROM up;
    -- 3. the sub-orders of the changed trades
    IF c_tid IS NOT NULL THEN
        DELETE FROM trade_orders o
        USING unnest(c_tid, c_inserted) AS c(tid, inserted)
        WHERE o.tid = c.tid AND NOT c.inserted;
        INSERT INTO trade_orders (
            tid, oid, status, refund_status, title, num, num_iid, sku_id, price, payment, total_fee, end_time
        )
        SELECT o.* FROM unnest(
            o_tid, o_oid, o_status, o_refund_status, o_title, o_num, o_num_iid, o_sku_id, o_price,
            o_payment, o_total_fee, o_end_time
        ) AS o(tid, oid, status, refund_status, title, num, num_iid, sku_id, price, payment, total_fee,
               end_time)
        WHERE o.tid = ANY(c_tid);
    END IF;
    -- 4. the unresolved rows the stored versions pay
    IF cardinality(r_tid) > 0 THEN
        DELETE FROM unresolved_trades u
        USING trades t, unnest(r_tid, r_read_at) AS s(tid, read_at)
        WHERE u.tid = s.tid AND t.tid = s.tid
          AND CASE WHEN u.modified IS NOT NULL THEN t.modified >= u.modified
                   ELSE s.read_at IS NOT NULL AND s.read_at >= u.last_failure END;
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
    RETURN QUERY SELECT * FROM unnest(c_tid, c_nick, c_status, c_modified, c_inserted);
END
$fn$;
