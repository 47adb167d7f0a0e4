-- When a trade's stored state was read from TOP. `modified` has one-second resolution, so two reads
-- of one trade within a second can differ at an equal `modified`; the upsert keeps the later read.
ALTER TABLE trades ADD COLUMN fetched_at timestamptz;
