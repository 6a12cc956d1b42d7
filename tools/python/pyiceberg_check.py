"""PyIceberg against Firn's Iceberg REST catalog.

Usage: pyiceberg_check.py REST_URI NAMESPACE TABLE

NAMESPACE.TABLE was written by Firn's Rust writer; this script reads it and prints one
JSON line with what it saw, then exercises the catalog API (namespaces with properties
and paging, create/load/exists/list/rename/drop of tables) and prints PYICEBERG-OK.
"""
import json
import sys

from pyiceberg.catalog.rest import RestCatalog
from pyiceberg.exceptions import (
    NamespaceAlreadyExistsError,
    NamespaceNotEmptyError,
    NoSuchNamespaceError,
    NoSuchTableError,
)
from pyiceberg.schema import Schema
from pyiceberg.partitioning import PartitionSpec, PartitionField
from pyiceberg.transforms import DayTransform
from pyiceberg.types import LongType, NestedField, StringType, TimestampType

uri, ns, table = sys.argv[1], sys.argv[2], sys.argv[3]
cat = RestCatalog("firn", uri=uri)

# Read what the Rust writer committed, at the current and the first snapshot.
t = cat.load_table((ns, table))
snapshots = sorted(t.metadata.snapshots, key=lambda s: s.sequence_number)
current = t.scan().to_arrow()
first = t.scan(snapshot_id=snapshots[0].snapshot_id).to_arrow()
print(json.dumps({
    "rows": current.num_rows,
    "ids": sorted(current.column("id").to_pylist()),
    "first_rows": first.num_rows,
    "snapshots": len(snapshots),
}))

# The catalog API.
cat.create_namespace("py", {"owner": "ada"})
try:
    cat.create_namespace("py")
    raise SystemExit("creating a namespace twice must fail")
except NamespaceAlreadyExistsError:
    pass
assert ("py",) in cat.list_namespaces()
assert cat.load_namespace_properties("py")["owner"] == "ada"
summary = cat.update_namespace_properties("py", removals={"owner", "nope"}, updates={"team": "data"})
assert summary.removed == ["owner"] and summary.missing == ["nope"] and summary.updated == ["team"], summary
assert cat.namespace_exists("py") and not cat.namespace_exists("nowhere")

schema = Schema(
    NestedField(1, "id", LongType(), required=True),
    NestedField(2, "name", StringType(), required=False),
    NestedField(3, "ts", TimestampType(), required=False),
)
spec = PartitionSpec(PartitionField(source_id=3, field_id=1000, transform=DayTransform(), name="ts_day"))
created = cat.create_table("py.events", schema=schema, partition_spec=spec, properties={"k": "v"})
assert [f.name for f in created.schema().fields] == ["id", "name", "ts"]
assert created.spec().fields[0].name == "ts_day", created.spec()
assert created.properties.get("k") == "v"
assert cat.table_exists("py.events") and not cat.table_exists("py.nope")
assert cat.list_tables("py") == [("py", "events")]
assert created.scan().to_arrow().num_rows == 0
cat.rename_table("py.events", "py.renamed")
assert cat.list_tables("py") == [("py", "renamed")]
try:
    cat.load_table("py.events")
    raise SystemExit("the old name must be gone")
except NoSuchTableError:
    pass
try:
    cat.drop_namespace("py")
    raise SystemExit("dropping a namespace with tables must fail")
except NamespaceNotEmptyError:
    pass
cat.drop_table("py.renamed")
cat.create_namespace("gone")
cat.drop_namespace("gone")
try:
    cat.load_namespace_properties("gone")
    raise SystemExit("the namespace must be gone")
except NoSuchNamespaceError:
    pass

# Appends: PyIceberg writes the files and commits add-snapshot + set-snapshot-ref; the
# table stays for Firn to read.
import pyarrow as pa

appended = cat.create_table("py.appended", schema=Schema(
    NestedField(1, "id", LongType(), required=True),
    NestedField(2, "name", StringType(), required=False),
))
arrow_schema = appended.schema().as_arrow()
appended.append(pa.Table.from_pylist([{"id": i, "name": f"p{i}"} for i in range(3)], schema=arrow_schema))
appended = cat.load_table("py.appended")
first_snapshot = appended.current_snapshot().snapshot_id
appended.append(pa.Table.from_pylist([{"id": 10, "name": "q"}], schema=arrow_schema))
appended = cat.load_table("py.appended")
assert appended.scan().to_arrow().num_rows == 4
assert appended.scan(snapshot_id=first_snapshot).to_arrow().num_rows == 3

# A streaming writer's append keeps its own summary properties (exactly-once restore reads
# them back), although Firn rebases it; the manifest list it wrote is then unused.
props = cat.create_table("py.props", schema=appended.schema())
props.append(
    pa.Table.from_pylist([{"id": 1, "name": "a"}], schema=arrow_schema),
    snapshot_properties={"flink.max-committed-checkpoint-id": "7", "wap.id": "w-1"},
)
props = cat.load_table("py.props")
summary = props.current_snapshot().summary
print(json.dumps({"props_summary": {k: summary[k] for k in ["flink.max-committed-checkpoint-id", "wap.id"] if k in summary}}))

# Appends from several threads at once: Firn rebases each onto what landed meanwhile, so
# none fails and every row is there.
import threading

errors = []


def writer(w):
    try:
        t = RestCatalog("firn", uri=uri).load_table("py.appended")
        for k in range(3):
            base = 1000 + w * 100 + k * 10
            t.append(pa.Table.from_pylist([{"id": base + i, "name": "t"} for i in range(10)], schema=arrow_schema))
    except Exception as e:  # noqa: BLE001 - reported below
        errors.append(repr(e))


threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
for th in threads:
    th.start()
for th in threads:
    th.join()
assert not errors, errors
final = cat.load_table("py.appended")
assert final.scan().to_arrow().num_rows == 4 + 4 * 3 * 10
# snapshots=refs: only the snapshots refs point at (twice: the second body is cached).
for _ in range(2):
    refs_only = RestCatalog("firn-refs", uri=uri, **{"snapshot-loading-mode": "refs"}).load_table("py.appended")
    assert [s.snapshot_id for s in refs_only.metadata.snapshots] == [final.current_snapshot().snapshot_id]
    assert refs_only.scan().to_arrow().num_rows == 4 + 4 * 3 * 10
assert len(final.metadata.snapshots) == 2 + 12

# A commit retried with the same Idempotency-Key is applied once and answered as a success
# (a retry after a lost response must not look like a conflict, or the client would delete
# files a committed snapshot uses). Here: move main back to the first snapshot and forward.
import requests

current = final.current_snapshot().snapshot_id
url = f"{uri}/v1/namespaces/py/tables/appended"


def move_main(frm, to, key=None):
    body = {
        "requirements": [{"type": "assert-ref-snapshot-id", "ref": "main", "snapshot-id": frm}],
        "updates": [{"action": "set-snapshot-ref", "ref-name": "main", "type": "branch", "snapshot-id": to}],
    }
    return requests.post(url, json=body, headers={"Idempotency-Key": key} if key else {})


r = move_main(current, first_snapshot, "move-back-1")
assert r.status_code == 200, r.text
assert r.json()["metadata"]["current-snapshot-id"] == first_snapshot
r = move_main(current, first_snapshot, "move-back-1")
assert r.status_code == 200, ("a retry with the same key is a success", r.status_code, r.text)
r = move_main(current, first_snapshot)
assert r.status_code == 409 and r.json()["error"]["type"] == "CommitFailedException", r.text
r = move_main(first_snapshot, current, "move-forward-1")
assert r.status_code == 200, r.text

# A staged create (stage-create, then one commit with assert-create that also adds the
# first rows), as CREATE TABLE ... AS SELECT does.
from pyiceberg.exceptions import TableAlreadyExistsError

staged_schema = Schema(
    NestedField(1, "id", LongType(), required=True),
    NestedField(2, "name", StringType(), required=False),
)
txn = cat.create_table_transaction("py.staged", schema=staged_schema)
assert not cat.table_exists("py.staged"), "a staged table does not exist before its commit"
txn.append(pa.Table.from_pylist([{"id": 1, "name": "a"}, {"id": 2, "name": "b"}], schema=staged_schema.as_arrow()))
txn.commit_transaction()
assert cat.load_table("py.staged").scan().to_arrow().num_rows == 2
try:
    cat.create_table_transaction("py.staged", schema=staged_schema)
    raise SystemExit("staging an existing table must fail")
except TableAlreadyExistsError:
    pass
# Schema evolution: a column added through update_schema; the old snapshot keeps its
# schema, new rows carry the column, old rows read it as null.
from pyiceberg.types import DoubleType

evolve = cat.create_table("py.evolve", schema=staged_schema)
evolve.append(pa.Table.from_pylist([{"id": 1, "name": "old"}], schema=staged_schema.as_arrow()))
before_evolution = cat.load_table("py.evolve").current_snapshot().snapshot_id
with cat.load_table("py.evolve").update_schema() as update:
    update.add_column("score", DoubleType())
evolve = cat.load_table("py.evolve")
assert [f.name for f in evolve.schema().fields] == ["id", "name", "score"]
evolve.append(pa.Table.from_pylist([{"id": 2, "name": "new", "score": 1.5}], schema=evolve.schema().as_arrow()))
evolve = cat.load_table("py.evolve")
rows = {r["id"]: r["score"] for r in evolve.scan().to_arrow().to_pylist()}
assert rows == {1: None, 2: 1.5}, rows
assert evolve.scan(snapshot_id=before_evolution).to_arrow().column_names == ["id", "name"]

# Rollback through manage_snapshots, then forward again with set_current_snapshot; a tag.
latest = evolve.current_snapshot().snapshot_id
evolve.manage_snapshots().rollback_to_snapshot(before_evolution).commit()
assert cat.load_table("py.evolve").current_snapshot().snapshot_id == before_evolution
assert cat.load_table("py.evolve").scan().to_arrow().num_rows == 1
cat.load_table("py.evolve").manage_snapshots().set_current_snapshot(latest).create_tag(before_evolution, "v1").commit()
evolve = cat.load_table("py.evolve")
assert evolve.current_snapshot().snapshot_id == latest
assert evolve.metadata.refs["v1"].snapshot_id == before_evolution
# Refs with their own retention: kept by Firn and handed back.
evolve.manage_snapshots().create_tag(before_evolution, "short-lived", max_ref_age_ms=1).create_branch(
    before_evolution, "keep-all", min_snapshots_to_keep=10
).commit()
evolve = cat.load_table("py.evolve")
assert evolve.metadata.refs["short-lived"].max_ref_age_ms == 1, evolve.metadata.refs
assert evolve.metadata.refs["keep-all"].min_snapshots_to_keep == 10, evolve.metadata.refs

# Drop without purge keeps the files, so the table can be registered again from its
# metadata file; drop with purge deletes its files.
kept = cat.load_table("py.staged")
kept_location = kept.metadata_location
cat.drop_table("py.staged")
assert not cat.table_exists("py.staged")
registered = cat.register_table("py.again", kept_location)
assert registered.scan().to_arrow().num_rows == 2
assert sorted(r["id"] for r in cat.load_table("py.again").scan().to_arrow().to_pylist()) == [1, 2]
doomed = cat.create_table("py.doomed", schema=staged_schema)
doomed.append(pa.Table.from_pylist([{"id": 7, "name": "x"}], schema=staged_schema.as_arrow()))
doomed = cat.load_table("py.doomed")
doomed_files = [t.file.file_path for t in doomed.scan().plan_files()]
# The table's own FileIO (local disk, or S3 with the storage access Firn handed out).
exists = lambda p: doomed.io.new_input(p).exists()  # noqa: E731
assert doomed_files and all(exists(p) for p in doomed_files)
cat.purge_table("py.doomed")
assert not any(exists(p) for p in doomed_files), doomed_files

print(json.dumps({"appended_first_snapshot": first_snapshot, "evolve_latest": latest}))
print("PYICEBERG-OK")
