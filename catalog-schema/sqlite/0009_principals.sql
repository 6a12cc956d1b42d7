-- Who may do what: principals (people and service accounts), their tokens (only a SHA-256
-- of each is kept) and their grants. Keep in step with ../postgres/0009_principals.sql.
CREATE TABLE principals (
    principal_id  INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT   NOT NULL UNIQUE,
    kind          TEXT   NOT NULL,           -- 'user' | 'service'
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE tokens (
    token_hash    TEXT   NOT NULL PRIMARY KEY, -- hex SHA-256 of the whole token
    token_id      TEXT   NOT NULL UNIQUE,      -- what listings show and revoke takes
    principal_id  BIGINT NOT NULL REFERENCES principals(principal_id),
    kind          TEXT   NOT NULL,             -- 'token' (firn token create) | 'oauth' (exchanged)
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT,                      -- NULL: until revoked
    -- An exchanged token's original 'token': revoking that revokes every token exchanged
    -- from it (and from those), so a refresh chain cannot outlive its credential.
    root_token_id TEXT
);
CREATE INDEX tokens_by_root ON tokens (root_token_id);
CREATE INDEX tokens_by_principal ON tokens (principal_id);

-- A privilege on the catalog (namespace '' and table_id 0), a namespace (table_id 0) or a
-- table (by id, so a grant follows its table through a rename and goes with its drop).
CREATE TABLE grants (
    principal_id BIGINT NOT NULL REFERENCES principals(principal_id),
    privilege    TEXT   NOT NULL,              -- read | write | maintain | manage | admin
    namespace    TEXT   NOT NULL,
    table_id     BIGINT NOT NULL,
    PRIMARY KEY (principal_id, privilege, namespace, table_id)
);
CREATE INDEX grants_by_table ON grants (table_id);

-- The authenticated principal of each commit (NULL: authentication off).
ALTER TABLE commits ADD COLUMN principal TEXT;
