-- Server-side maintenance scheduling: one replica at a time runs a scheduled job (the
-- holder of its lease). Keep in step with ../sqlite/0004_scheduler.sql.
CREATE TABLE scheduler_leases (
    job           TEXT    NOT NULL PRIMARY KEY,
    holder        TEXT    NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
