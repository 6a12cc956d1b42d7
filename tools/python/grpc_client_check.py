"""A non-Rust writer: stubs generated from proto/ with grpcio-tools, Parquet from pyarrow.

Creates a partitioned table, commits pyarrow-written files without statistics (Firn reads
their footers), and checks the snapshot and an error status. Exits non-zero on any mismatch.

Usage: python grpc_client_check.py ENDPOINT (host:port)
"""
import datetime
import sys
import uuid

import grpc
import pyarrow as pa

from firn_grpc import stubs, write_parquet


def main():
    endpoint = sys.argv[1]
    pb, rpc = stubs()
    stub = rpc.CatalogServiceStub(grpc.insecure_channel(endpoint))
    ns = "py_" + uuid.uuid4().hex[:8]
    stub.CreateNamespace(pb.CreateNamespaceRequest(name=ns))
    ident = pb.TableIdent(namespace=ns, name="events")
    table = stub.CreateTable(pb.CreateTableRequest(
        ident=ident,
        fields=[
            pb.Field(name="id", type="long", required=True),
            pb.Field(name="kind", type="string"),
            pb.Field(name="at", type="timestamp"),
        ],
        partition_by=[pb.PartitionField(source_column="at", transform="day")],
    ))
    # Where the files go and how to reach them, from the server (local disk or S3).
    access = stub.GetStorageAccess(pb.GetStorageAccessRequest(ident=ident))
    assert access.location == table.location, (access, table.location)

    files = []
    total = 0
    for day in range(3):
        n = 10 + day
        base = datetime.datetime(2026, 11, 20 + day, 8, 0, 0)
        t = pa.table({
            "id": pa.array(range(total, total + n), pa.int64()),
            "kind": pa.array([f"k{i % 3}" for i in range(n)]),
            "at": pa.array([base + datetime.timedelta(minutes=i) for i in range(n)], pa.timestamp("us")),
        })
        files.append(write_parquet(pb, table.location, t, access=access))
        total += n

    resp = stub.Commit(pb.CommitRequest(
        ident=ident, commit_id=str(uuid.uuid4()), append=pb.AppendOp(add=files)))
    snaps = stub.ListSnapshots(pb.ListSnapshotsRequest(ident=ident)).snapshots
    assert len(snaps) == 1 and snaps[0].snapshot_id == resp.snapshot_id, snaps
    summary = dict(snaps[0].summary)
    assert summary["added-records"] == str(total), summary
    assert summary["added-data-files"] == "3", summary

    # A file that is not there: INVALID_ARGUMENT, and the table is unchanged.
    try:
        stub.Commit(pb.CommitRequest(
            ident=ident, commit_id=str(uuid.uuid4()),
            append=pb.AppendOp(add=[pb.DataFile(path=f"{table.location}/data/missing.parquet", file_size_bytes=1)])))
        raise AssertionError("a commit of a missing file succeeded")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
        assert "does not exist" in e.details(), e.details()
    loaded = stub.LoadTable(pb.LoadTableRequest(ident=ident))
    assert loaded.current_snapshot_id == resp.snapshot_id
    print(f"PYTHON-OK {total} rows in snapshot {resp.snapshot_id}")


if __name__ == "__main__":
    main()
