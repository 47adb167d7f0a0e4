-- 045: listed trades a backfill did not fetch because the list's `modified` was no newer than the
-- stored one (docs/sync-rules.md#fields-tid-modified): the quota a pass saved.
ALTER TABLE gap_reports ADD COLUMN fetches_skipped integer NOT NULL DEFAULT 0;
