-- Named warehouses besides the server's configured one: a name, a storage root URL and its
-- storage options (JSON object; it may hold keys, so list them redacted). A namespace is
-- bound to one warehouse when it is created; '' is the server's configured (default)
-- warehouse, so catalogs from before keep every namespace where it was.
-- Keep in step with ../postgres/0010_warehouses.sql.
-- Recorded under the 'warehouses' lock, which serialises the check that no two roots nest.
CREATE TABLE warehouses (
    name          TEXT   NOT NULL PRIMARY KEY,
    url           TEXT   NOT NULL UNIQUE,
    options       TEXT   NOT NULL,
    created_at_ms BIGINT NOT NULL
);

ALTER TABLE namespaces ADD COLUMN warehouse TEXT NOT NULL DEFAULT '';
INSERT INTO catalog_locks (name, n) VALUES ('warehouses', 0);
