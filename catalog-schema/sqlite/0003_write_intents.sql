-- Data file paths Firn handed to writers, recorded before the writer writes them. A path
-- that never became part of a commit is an orphan once it is older than the grace period;
-- `firn remove-orphans` finds those from here, without listing. Keep in step with
-- ../postgres/0003_write_intents.sql.
CREATE TABLE write_intents (
    table_id      INTEGER NOT NULL REFERENCES tables(table_id) ON DELETE CASCADE,
    path          TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (table_id, path)
);
CREATE INDEX write_intents_by_age ON write_intents (table_id, created_at_ms);
