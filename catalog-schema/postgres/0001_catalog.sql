-- Firn catalog database, PostgreSQL flavour. Keep in step with ../sqlite/0001_catalog.sql.

CREATE TABLE namespaces (
    name          TEXT    NOT NULL PRIMARY KEY,
    properties    TEXT    NOT NULL,          -- JSON object
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE tables (
    table_id             BIGSERIAL PRIMARY KEY,
    namespace            TEXT    NOT NULL REFERENCES namespaces(name),
    name                 TEXT    NOT NULL,
    table_uuid           TEXT    NOT NULL UNIQUE,
    location             TEXT    NOT NULL,
    -- The compare-and-swap counter: +1 per commit.
    version              BIGINT NOT NULL,
    -- Iceberg TableMetadata JSON without snapshots, refs and logs (they live in rows below).
    base_metadata        TEXT    NOT NULL,
    current_snapshot_id  BIGINT,
    last_sequence_number BIGINT NOT NULL,
    last_updated_ms      BIGINT NOT NULL,
    -- The newest materialised metadata file and the version it describes.
    metadata_location    TEXT    NOT NULL,
    metadata_version     BIGINT NOT NULL,
    created_at_ms        BIGINT NOT NULL,
    UNIQUE (namespace, name)
);

CREATE TABLE snapshots (
    table_id           BIGINT NOT NULL REFERENCES tables(table_id) ON DELETE CASCADE,
    snapshot_id        BIGINT NOT NULL,
    parent_snapshot_id BIGINT,
    sequence_number    BIGINT NOT NULL,
    timestamp_ms       BIGINT NOT NULL,
    operation          TEXT    NOT NULL,
    summary            TEXT    NOT NULL,     -- JSON object, Iceberg snapshot summary
    schema_id          BIGINT NOT NULL,
    manifest_list      TEXT    NOT NULL,
    commit_id          TEXT    NOT NULL,
    PRIMARY KEY (table_id, snapshot_id)
);
CREATE INDEX snapshots_by_seq ON snapshots (table_id, sequence_number);

CREATE TABLE snapshot_log (
    table_id     BIGINT NOT NULL REFERENCES tables(table_id) ON DELETE CASCADE,
    seq          BIGINT NOT NULL,
    snapshot_id  BIGINT NOT NULL,
    timestamp_ms BIGINT NOT NULL,
    PRIMARY KEY (table_id, seq)
);

CREATE TABLE refs (
    table_id    BIGINT NOT NULL REFERENCES tables(table_id) ON DELETE CASCADE,
    name        TEXT    NOT NULL,
    snapshot_id BIGINT NOT NULL,
    ref_type    TEXT    NOT NULL,            -- 'branch' | 'tag'
    PRIMARY KEY (table_id, name)
);

CREATE TABLE commits (
    table_id        BIGINT NOT NULL REFERENCES tables(table_id) ON DELETE CASCADE,
    commit_id       TEXT    NOT NULL,
    snapshot_id     BIGINT NOT NULL,
    sequence_number BIGINT NOT NULL,
    version         BIGINT NOT NULL,
    parent_snapshot_id BIGINT,
    operation       TEXT    NOT NULL,
    client          TEXT    NOT NULL,
    committed_at_ms BIGINT NOT NULL,
    PRIMARY KEY (table_id, commit_id)
);

-- Every data file path ever committed to a table: a path is added at most once.
CREATE TABLE table_files (
    table_id    BIGINT NOT NULL REFERENCES tables(table_id) ON DELETE CASCADE,
    path        TEXT    NOT NULL,
    snapshot_id BIGINT NOT NULL,
    PRIMARY KEY (table_id, path)
);

-- Metadata objects written with a commit whose bytes are kept here until the object
-- store holds them durably (local disk: after fsync). Replayed at start-up.
CREATE TABLE pending_objects (
    path  TEXT NOT NULL PRIMARY KEY,
    bytes BYTEA NOT NULL
);
