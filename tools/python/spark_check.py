"""Spark 3.5 with the Iceberg Spark runtime against Firn's Iceberg REST catalog.

Usage: spark_check.py REST_URI [--firn-table NS.TABLE] [--ns NAMESPACE]

With --firn-table, first reads a table Firn itself wrote (rows, snapshots, first snapshot).
Then, in the Spark catalog `firn` (type rest), creates NAMESPACE (default `spark`) and
`events` partitioned by days(ts), merge-on-read, format-version 2, and exercises: INSERTs,
SELECT, VERSION AS OF and TIMESTAMP AS OF, the metadata tables (.snapshots .history .files
.refs .delete_files), ALTER TABLE ... CREATE TAG / CREATE BRANCH / DROP BRANCH and a write
to a branch, CALL system.rollback_to_snapshot, ALTER TABLE ADD COLUMN, a merge-on-read
DELETE (position delete files), UPDATE and MERGE INTO, and CALL system.expire_snapshots
(Spark sends `remove-snapshots` updates and deletes the files itself).

Prints one JSON line per check ({"check": NAME, ...facts}) and finally SPARK-OK; a failed
assertion or Spark error exits non-zero. NAMESPACE.events stays for Firn to read: its rows
are in the "final" line.
"""
import argparse
import time

import pyspark

import firn_spark
from firn_spark import emit, session, step


# ---- the checks ----------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("uri", help="Firn's Iceberg REST URI, e.g. http://127.0.0.1:8181")
    ap.add_argument("--firn-table", help="NS.TABLE written by Firn: read it and print its rows")
    ap.add_argument("--ns", default="spark", help="namespace Spark creates and writes")
    a = ap.parse_args()
    assert pyspark.__version__.startswith("3.5."), pyspark.__version__
    firn_spark.main(lambda workdir: run(a, workdir))


def run(a, workdir):
    step("spark_session")
    spark = session(workdir, {"firn": {"uri": a.uri}}, "firn")
    try:
        checks(spark, a)
    finally:
        spark.stop()


def checks(spark, a):
    def sql(q):
        return spark.sql(q).collect()

    def ids(q):
        return sorted(r[0] for r in sql(q))

    def snapshot_ids(t):
        return [r[0] for r in sql(f"SELECT snapshot_id FROM {t}.snapshots ORDER BY committed_at")]

    # ---- a table Firn wrote ------------------------------------------------------------
    step("firn_table")
    if a.firn_table:
        t = f"firn.{a.firn_table}"
        df = spark.table(t)
        key = df.columns[0]
        rows = [r.asDict() for r in df.orderBy(key).collect()]
        snaps = snapshot_ids(t)
        first_rows = sql(f"SELECT count(*) FROM {t} VERSION AS OF {snaps[0]}")[0][0]
        emit("firn_table", table=a.firn_table, rows=len(rows), columns=df.columns,
             ids=[r[key] for r in rows], data=rows, snapshots=snaps, first_rows=first_rows)

    # ---- namespace and table -----------------------------------------------------------
    step("create")
    ns = a.ns
    t = f"firn.{ns}.events"
    sql(f"CREATE NAMESPACE IF NOT EXISTS firn.{ns}")
    assert ns in [r[0] for r in sql("SHOW NAMESPACES IN firn")]
    sql(f"DROP TABLE IF EXISTS {t} PURGE")  # a re-run against the same server starts afresh
    props = {"write.delete.mode": "merge-on-read", "write.update.mode": "merge-on-read",
             "write.merge.mode": "merge-on-read", "format-version": "2"}
    sql(f"""CREATE TABLE {t} (id BIGINT NOT NULL, name STRING, ts TIMESTAMP)
            USING iceberg PARTITIONED BY (days(ts))
            TBLPROPERTIES ({", ".join(f"'{k}'='{v}'" for k, v in props.items())})""")
    assert [r[1] for r in sql(f"SHOW TABLES IN firn.{ns}")] == ["events"]
    tblprops = {r[0]: r[1] for r in sql(f"SHOW TBLPROPERTIES {t}")}
    assert tblprops.get("format-version") == "2", tblprops
    assert tblprops.get("write.delete.mode") == "merge-on-read", tblprops
    emit("create", table=f"{ns}.events", format_version=tblprops["format-version"])

    # ---- inserts, one snapshot each ----------------------------------------------------
    step("insert")
    batches = [
        [(1, "a", "2024-01-01 10:00:00"), (2, "b", "2024-01-01 11:00:00"), (3, "c", "2024-01-02 10:00:00")],
        [(4, "d", "2024-01-02 12:00:00"), (5, "e", "2024-01-03 09:00:00")],
        [(6, "f", "2024-01-03 10:00:00")],
    ]
    snaps = []
    for batch in batches:
        values = ", ".join(f"({i}, '{n}', TIMESTAMP '{ts}')" for i, n, ts in batch)
        sql(f"INSERT INTO {t} VALUES {values}")
        snaps.append(snapshot_ids(t)[-1])
        time.sleep(0.01)  # distinct commit times for TIMESTAMP AS OF
    assert len(set(snaps)) == 3, snaps
    got = ids(f"SELECT id FROM {t}")
    assert got == [1, 2, 3, 4, 5, 6], got
    emit("insert", rows=len(got), ids=got, snapshots=snaps)

    # ---- time travel -------------------------------------------------------------------
    step("time_travel")
    s1, s2, s3 = snaps
    v1 = ids(f"SELECT id FROM {t} VERSION AS OF {s1}")
    assert v1 == [1, 2, 3], v1
    committed = dict((r[0], r[1]) for r in sql(f"SELECT snapshot_id, committed_at FROM {t}.snapshots"))
    at2 = committed[s2].strftime("%Y-%m-%d %H:%M:%S.%f")
    v2 = ids(f"SELECT id FROM {t} TIMESTAMP AS OF '{at2}'")
    assert v2 == [1, 2, 3, 4, 5], (at2, v2)
    emit("time_travel", version_as_of=s1, ids_v1=v1, timestamp_as_of=at2, ids_ts=v2)

    # ---- metadata tables ---------------------------------------------------------------
    step("metadata_tables")
    rows = sql(f"SELECT snapshot_id, parent_id, operation FROM {t}.snapshots ORDER BY committed_at")
    assert [tuple(r) for r in rows] == [(s1, None, "append"), (s2, s1, "append"), (s3, s2, "append")], rows
    history = sql(f"SELECT snapshot_id, is_current_ancestor FROM {t}.history ORDER BY made_current_at")
    assert [tuple(r) for r in history] == [(s1, True), (s2, True), (s3, True)], history
    files = sql(f"SELECT record_count, partition.ts_day FROM {t}.files")
    assert sum(r[0] for r in files) == 6, files
    days = sorted({str(r[1]) for r in files})
    assert days == ["2024-01-01", "2024-01-02", "2024-01-03"], days
    refs = {r[0]: (r[1], r[2]) for r in sql(f"SELECT name, type, snapshot_id FROM {t}.refs")}
    assert refs == {"main": ("BRANCH", s3)}, refs
    emit("metadata_tables", snapshots=len(rows), history=len(history), files=len(files),
         partitions=days, refs={k: list(v) for k, v in refs.items()})

    # ---- tags and branches -------------------------------------------------------------
    step("refs")
    sql(f"ALTER TABLE {t} CREATE TAG first AS OF VERSION {s1}")
    sql(f"ALTER TABLE {t} CREATE BRANCH dev AS OF VERSION {s2} RETAIN 7 DAYS")
    refs = {r[0]: (r[1], r[2]) for r in sql(f"SELECT name, type, snapshot_id FROM {t}.refs")}
    assert refs == {"main": ("BRANCH", s3), "first": ("TAG", s1), "dev": ("BRANCH", s2)}, refs
    tag_ids = ids(f"SELECT id FROM {t} VERSION AS OF 'first'")
    assert tag_ids == [1, 2, 3], tag_ids
    # A write to the branch leaves main alone.
    sql(f"INSERT INTO {t}.branch_dev VALUES (100, 'dev', TIMESTAMP '2024-01-05 00:00:00')")
    dev_ids = ids(f"SELECT id FROM {t}.branch_dev")
    assert dev_ids == [1, 2, 3, 4, 5, 100], dev_ids
    assert ids(f"SELECT id FROM {t}") == [1, 2, 3, 4, 5, 6]
    sql(f"ALTER TABLE {t} DROP BRANCH dev")
    refs = {r[0]: r[1] for r in sql(f"SELECT name, type FROM {t}.refs")}
    assert refs == {"main": "BRANCH", "first": "TAG"}, refs
    emit("refs", tag="first", tag_ids=tag_ids, branch_ids=dev_ids, refs_after=sorted(refs))

    # ---- rollback ----------------------------------------------------------------------
    step("rollback")
    r = sql(f"CALL firn.system.rollback_to_snapshot('{ns}.events', {s2})")
    assert (r[0][0], r[0][1]) == (s3, s2), r
    after = ids(f"SELECT id FROM {t}")
    assert after == [1, 2, 3, 4, 5], after
    main = sql(f"SELECT snapshot_id FROM {t}.refs WHERE name = 'main'")[0][0]
    assert main == s2, main
    emit("rollback", to=s2, ids=after)

    # ---- schema evolution --------------------------------------------------------------
    step("add_column")
    sql(f"ALTER TABLE {t} ADD COLUMN score DOUBLE")
    sql(f"INSERT INTO {t} VALUES (7, 'g', TIMESTAMP '2024-01-04 08:00:00', 0.5)")
    rows = sql(f"SELECT id, score FROM {t} ORDER BY id")
    assert [tuple(r) for r in rows] == [(1, None), (2, None), (3, None), (4, None), (5, None), (7, 0.5)], rows
    cols = spark.table(t).columns
    assert cols == ["id", "name", "ts", "score"], cols
    old_cols = spark.sql(f"SELECT * FROM {t} VERSION AS OF {s1}").columns  # its own schema
    assert old_cols == ["id", "name", "ts"], old_cols
    emit("add_column", columns=cols, ids=[r[0] for r in rows])

    # ---- merge-on-read delete ----------------------------------------------------------
    step("delete")
    sql(f"DELETE FROM {t} WHERE id IN (2, 4)")
    after = ids(f"SELECT id FROM {t}")
    assert after == [1, 3, 5, 7], after
    last = sql(f"SELECT snapshot_id, operation, summary FROM {t}.snapshots ORDER BY committed_at DESC LIMIT 1")[0]
    deletes = sql(f"SELECT content, record_count FROM {t}.delete_files")
    # Position deletes (content 1), no rewritten data file; a row delta of deletes only is
    # a "delete" snapshot.
    assert last[1] == "delete" and deletes and all(d[0] == 1 for d in deletes), (last, deletes)
    assert sum(d[1] for d in deletes) == 2, deletes
    assert last[2].get("deleted-data-files") is None, last[2]
    emit("delete", mode="merge-on-read", operation=last[1], ids=after, position_delete_files=len(deletes),
         added_position_deletes=int(last[2]["added-position-deletes"]), snapshot=last[0])

    # ---- update and merge (merge-on-read too) ------------------------------------------
    step("update_merge")
    sql(f"UPDATE {t} SET name = 'C' WHERE id = 3")
    sql(f"""MERGE INTO {t} d USING (SELECT 5L AS id, 'E' AS name UNION ALL SELECT 8L, 'h') s
            ON d.id = s.id
            WHEN MATCHED THEN UPDATE SET d.name = s.name
            WHEN NOT MATCHED THEN INSERT (id, name, ts, score)
                 VALUES (s.id, s.name, TIMESTAMP '2024-01-04 09:00:00', 1.0)""")
    rows = [tuple(r) for r in sql(f"SELECT id, name FROM {t} ORDER BY id")]
    assert rows == [(1, "a"), (3, "C"), (5, "E"), (7, "g"), (8, "h")], rows
    emit("update_merge", rows=rows)

    # ---- expire snapshots --------------------------------------------------------------
    step("expire_snapshots")
    before = snapshot_ids(t)
    now = sql("SELECT current_timestamp()")[0][0].strftime("%Y-%m-%d %H:%M:%S.%f")
    r = sql(f"CALL firn.system.expire_snapshots(table => '{ns}.events', "
            f"older_than => TIMESTAMP '{now}', retain_last => 1)")
    kept = snapshot_ids(t)
    # The tag keeps s1; retain_last keeps the current one; the others go.
    assert kept == [s1, before[-1]], (before, kept)
    assert ids(f"SELECT id FROM {t} VERSION AS OF 'first'") == [1, 2, 3]
    assert ids(f"SELECT id FROM {t}") == [1, 3, 5, 7, 8]
    emit("expire_snapshots", before=len(before), kept=kept, result=r[0].asDict())

    step("final")
    final = ids(f"SELECT id FROM {t}")
    current = sql(f"SELECT snapshot_id FROM {t}.refs WHERE name = 'main'")[0][0]
    emit("final", table=f"{ns}.events", rows=len(final), ids=final, current_snapshot=current,
         snapshots=len(snapshot_ids(t)))


if __name__ == "__main__":
    main()
