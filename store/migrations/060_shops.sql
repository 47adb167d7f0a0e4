-- 060: the shop registry (docs/operations.md#shops), on 001's `shops` table, which nothing used yet:
-- the sellers the service follows, managed with `order-sync shops` while replicas run (TAOBAO_SHOPS
-- only seeds it). Session keys and refresh tokens are stored encrypted (Fernet, with SYNC_SECRET_KEY),
-- never in plain text: a role that may read this table learns nothing it could call Taobao with.
-- `paused` (with its reason and time) is set by the operator, or by the service when a session expired
-- with nothing to renew it.
DELETE FROM shops;
ALTER TABLE shops
    ADD COLUMN session_enc        bytea NOT NULL,
    ADD COLUMN refresh_token_enc  bytea,
    -- When the session stops working, as the token's expiry fields or the operator said; NULL: unknown.
    ADD COLUMN expires_at         timestamptz,
    -- The last taobao.tmc.user.permit that succeeded, and the last failure's words since then.
    ADD COLUMN permitted_at       timestamptz,
    ADD COLUMN permit_error       text,
    ADD CONSTRAINT shops_nick_not_blank CHECK (btrim(nick) <> '');
