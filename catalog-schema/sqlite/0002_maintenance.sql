-- Table maintenance (expiry, orphan cleanup). Keep in step with ../postgres/0002_maintenance.sql.

-- Every metadata file Firn materialised for a table, so expiry can delete old ones without
-- listing the table's directory.
CREATE TABLE metadata_files (
    table_id      INTEGER NOT NULL REFERENCES tables(table_id) ON DELETE CASCADE,
    path          TEXT    NOT NULL,
    version       INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (table_id, path)
);

-- Objects no retained snapshot references, recorded in the same transaction that expired
-- their snapshots and deleted afterwards. A run killed midway leaves rows the next run
-- finishes; a row is removed only once its object is gone.
CREATE TABLE pending_deletes (
    table_id       INTEGER NOT NULL REFERENCES tables(table_id) ON DELETE CASCADE,
    path           TEXT    NOT NULL,
    -- 'data' | 'delete' | 'manifest' | 'manifest-list' | 'metadata'
    kind           TEXT    NOT NULL,
    -- Size in bytes where the catalog knows it, else -1.
    size_bytes     INTEGER NOT NULL,
    recorded_at_ms INTEGER NOT NULL,
    PRIMARY KEY (table_id, path)
);

-- One maintenance run per table at a time, across processes and replicas.
CREATE TABLE maintenance_leases (
    table_id      INTEGER NOT NULL PRIMARY KEY REFERENCES tables(table_id) ON DELETE CASCADE,
    holder        TEXT    NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
