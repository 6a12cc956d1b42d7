-- One row whose update serialises the creation of tables (create, register): the new
-- table's location is checked against every other table's in the same transaction, so two
-- tables can never come to overlap. Keep in step with ../sqlite/0006_location_lock.sql.
CREATE TABLE catalog_locks (
    name TEXT   NOT NULL PRIMARY KEY,
    n    BIGINT NOT NULL
);
INSERT INTO catalog_locks (name, n) VALUES ('locations', 0);
