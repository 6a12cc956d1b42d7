-- Final error answers to requests that carried an Idempotency-Key (REST), replayed to a
-- retry with the same key for the advertised key lifetime. Successes need no row: their key
-- is the commit id in `commits`. Keep in step with ../sqlite/0008_idempotent_responses.sql.
CREATE TABLE idempotent_responses (
    idempotency_key TEXT   NOT NULL PRIMARY KEY,
    request_digest  TEXT   NOT NULL,
    status          INTEGER NOT NULL,
    body            TEXT   NOT NULL,
    created_at_ms   BIGINT NOT NULL
);
CREATE INDEX idempotent_responses_by_age ON idempotent_responses (created_at_ms);
