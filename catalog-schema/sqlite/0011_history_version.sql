-- The last table version that did more than append to the table's history: removed
-- snapshots (expiry, a client's remove-snapshots) or added one with a sequence number
-- below the table's. A server that rendered a table's snapshot list and log at version V
-- extends that rendering with what later versions added, as long as none after V did
-- more; this column says whether one did. Keep in step with ../postgres/0011_history_version.sql.
ALTER TABLE tables ADD COLUMN history_rewritten_version BIGINT NOT NULL DEFAULT 0;
