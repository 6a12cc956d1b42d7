"""DuckDB (iceberg extension) against Firn's Iceberg REST catalog.

Usage: duckdb_check.py REST_URI NS TABLE [--ns NAMESPACE]

Loads the iceberg extension (and avro, parquet, httpfs) from the duckdb-ext-* pip packages,
offline: never INSTALL, no automatic install. ATTACHes Firn's REST catalog without auth,
lists the tables, reads NS.TABLE (written by Firn) at its current and its first snapshot
(AT VERSION and AT TIMESTAMP), then writes through DuckDB: a schema NAMESPACE (default
`duck`) and a table `events` created, two INSERTs, a DELETE and an UPDATE, read back and
time-travelled; a scratch table created and dropped. NAMESPACE.events stays.

DuckDB 1.4.4 cannot INSERT into partitioned tables, so its writes go to its own
unpartitioned table. Prints one JSON line per check ({"check": NAME, ...}) and DUCKDB-OK;
any failed assertion exits non-zero.
"""
import argparse
import importlib.metadata
import json
import os
import time

import duckdb

EXTENSIONS = ["parquet", "avro", "httpfs", "iceberg"]


def extension_directory():
    """The extension directory the duckdb-ext-* wheels install into site-packages.

    Each wheel ships `duckdb_ext/extensions/v<duckdb version>/<platform>/<name>.duckdb_extension`,
    the layout DuckDB expects below its `extension_directory`."""
    dist = importlib.metadata.distribution("duckdb-ext-iceberg")
    want = f"v{duckdb.__version__}/"
    files = [f for f in dist.files or [] if str(f).endswith("/iceberg.duckdb_extension") and want in str(f)]
    if len(files) != 1:
        raise SystemExit(f"duckdb-ext-iceberg {dist.version} has no iceberg extension for duckdb {duckdb.__version__}")
    path = os.path.abspath(str(dist.locate_file(files[0])))
    root = os.path.dirname(os.path.dirname(os.path.dirname(path)))  # .../duckdb_ext/extensions
    for name in EXTENSIONS:
        if name != "parquet":  # parquet is also built into the duckdb wheel
            ext = os.path.join(os.path.dirname(path), f"{name}.duckdb_extension")
            assert os.path.exists(ext), f"{ext} is missing: pip install duckdb-ext-{name}"
    return root


STARTED = time.time()


def emit(check, **facts):
    facts["elapsed_s"] = round(time.time() - STARTED, 1)
    print(json.dumps({"check": check, **facts}, default=str), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("uri")
    ap.add_argument("ns")
    ap.add_argument("table")
    ap.add_argument("--ns", dest="own_ns", default="duck", help="namespace DuckDB creates and writes")
    a = ap.parse_args()

    con = duckdb.connect(config={
        "extension_directory": extension_directory(),
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "allow_community_extensions": False,
    })
    for name in EXTENSIONS:
        con.execute(f"LOAD {name}")
    con.execute("SET TimeZone = 'UTC'")  # snapshot times and AT (TIMESTAMP => ...) in UTC
    loaded = dict(con.execute(
        "SELECT extension_name, extension_version FROM duckdb_extensions() WHERE loaded AND extension_name IN ('iceberg', 'avro', 'httpfs', 'parquet')"
    ).fetchall())
    assert set(loaded) == set(EXTENSIONS), loaded
    emit("extensions", duckdb=duckdb.__version__, loaded=loaded)

    con.execute(f"ATTACH '' AS firn (TYPE iceberg, ENDPOINT '{a.uri}', AUTHORIZATION_TYPE 'none')")

    def q(sql, *params):
        return con.execute(sql, params).fetchall() if params else con.execute(sql).fetchall()

    tables = sorted(f"{r[1]}.{r[2]}" for r in q("SHOW ALL TABLES") if r[0] == "firn")
    assert f"{a.ns}.{a.table}" in tables, tables
    emit("list", tables=tables)

    # ---- the table Firn wrote ------------------------------------------------------------
    t = f"firn.{a.ns}.{a.table}"
    cur = con.execute(f"SELECT * FROM {t}")
    columns = [d[0] for d in cur.description]
    rows = sorted((dict(zip(columns, r)) for r in cur.fetchall()), key=lambda r: r[columns[0]])
    snaps = q(f"SELECT sequence_number, snapshot_id, timestamp_ms FROM iceberg_snapshots({t}) ORDER BY sequence_number")
    first_id, first_ts = snaps[0][1], snaps[0][2]
    first_rows = q(f"SELECT count(*) FROM {t} AT (VERSION => {first_id})")[0][0]
    # As of the first snapshot's commit time: the same rows.
    at_ts = q(f"SELECT count(*) FROM {t} AT (TIMESTAMP => TIMESTAMP '{first_ts}')")[0][0]
    assert at_ts == first_rows, (first_rows, at_ts)
    emit("read", table=f"{a.ns}.{a.table}", rows=len(rows), columns=columns,
         ids=[r[columns[0]] for r in rows], data=rows, snapshots=[s[1] for s in snaps],
         first_rows=first_rows)

    # ---- writes through DuckDB -----------------------------------------------------------
    ns, own = a.own_ns, f"firn.{a.own_ns}.events"
    con.execute(f"CREATE SCHEMA IF NOT EXISTS firn.{ns}")
    con.execute(f"DROP TABLE IF EXISTS {own}")
    con.execute(f"CREATE TABLE {own} (id BIGINT, name VARCHAR)")
    con.execute(f"INSERT INTO {own} VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    con.execute(f"INSERT INTO {own} VALUES (4, 'd')")
    assert [r[0] for r in q(f"SELECT id FROM {own} ORDER BY id")] == [1, 2, 3, 4]
    con.execute(f"DELETE FROM {own} WHERE id = 2")
    con.execute(f"UPDATE {own} SET name = 'C' WHERE id = 3")
    got = q(f"SELECT id, name FROM {own} ORDER BY id")
    assert got == [(1, "a"), (3, "C"), (4, "d")], got
    own_snaps = q(f"SELECT snapshot_id FROM iceberg_snapshots({own}) ORDER BY sequence_number")
    own_snaps = [s[0] for s in own_snaps]
    assert len(own_snaps) >= 4, own_snaps  # two inserts, a delete, an update
    first = q(f"SELECT id FROM {own} AT (VERSION => {own_snaps[0]}) ORDER BY id")
    assert [r[0] for r in first] == [1, 2, 3], first
    # A second connection sees what the first committed (nothing cached client-side).
    other = duckdb.connect(config={"extension_directory": extension_directory(),
                                   "autoinstall_known_extensions": False,
                                   "autoload_known_extensions": False})
    for name in EXTENSIONS:
        other.execute(f"LOAD {name}")
    other.execute(f"ATTACH '' AS firn (TYPE iceberg, ENDPOINT '{a.uri}', AUTHORIZATION_TYPE 'none')")
    assert other.execute(f"SELECT id, name FROM {own} ORDER BY id").fetchall() == got
    other.close()
    emit("write", table=f"{ns}.events", rows=[list(r) for r in got], ids=[r[0] for r in got],
         snapshots=own_snaps, current_snapshot=own_snaps[-1])

    con.execute(f"CREATE TABLE firn.{ns}.scratch (id BIGINT)")
    con.execute(f"DROP TABLE firn.{ns}.scratch")
    left = sorted(r[2] for r in q("SHOW ALL TABLES") if r[0] == "firn" and r[1] == ns)
    assert left == ["events"], left
    emit("drop", table=f"{ns}.scratch")
    print("DUCKDB-OK", flush=True)


if __name__ == "__main__":
    main()
