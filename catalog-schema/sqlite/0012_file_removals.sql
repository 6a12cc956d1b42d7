-- The live files each of Firn's own commits removed: expiry finds the files that only
-- expired snapshots had from these rows instead of reading manifests. A snapshot whose
-- removals are all here has removals_recorded = 1; for the others (other writers'
-- snapshots, older ones) expiry reads the manifests. Rows go with their snapshot.
-- Keep in step with ../postgres/0012_file_removals.sql.
CREATE TABLE file_removals (
    table_id    BIGINT NOT NULL REFERENCES tables(table_id) ON DELETE CASCADE,
    snapshot_id BIGINT NOT NULL,
    path        TEXT   NOT NULL,
    size_bytes  BIGINT NOT NULL,
    PRIMARY KEY (table_id, snapshot_id, path)
);
ALTER TABLE snapshots ADD COLUMN removals_recorded BIGINT NOT NULL DEFAULT 0;
