-- Per-ref retention, as Iceberg's SnapshotRef carries it (null: the table's default).
-- Keep in step with ../sqlite/0005_ref_retention.sql.
ALTER TABLE refs ADD COLUMN min_snapshots_to_keep BIGINT;
ALTER TABLE refs ADD COLUMN max_snapshot_age_ms BIGINT;
ALTER TABLE refs ADD COLUMN max_ref_age_ms BIGINT;
