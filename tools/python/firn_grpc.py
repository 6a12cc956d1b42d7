"""Shared helpers for Python clients of Firn's gRPC API.

- `stubs()` generates the Python stubs from proto/firn/catalog/v1/catalog.proto with
  grpcio-tools at run time (nothing generated is committed) and imports them.
- `write_parquet()` writes a pyarrow table as a Parquet file under a table's location and
  returns the `DataFile` to commit (path + size, no statistics: Firn reads the footer).

Used by grpc_client_check.py and tools/bench/rest_bench.py.
"""
import os
import sys
import tempfile
import uuid

import pyarrow.parquet as pq
from grpc_tools import protoc

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_stubs = None


def stubs():
    """(catalog_pb2, catalog_pb2_grpc), generated once per process into a temp dir."""
    global _stubs
    if _stubs is None:
        out = tempfile.mkdtemp(prefix="firn-stubs-")
        proto_dir = os.path.join(ROOT, "proto")
        rc = protoc.main([
            "protoc", f"-I{proto_dir}", f"--python_out={out}", f"--grpc_python_out={out}",
            os.path.join(proto_dir, "firn/catalog/v1/catalog.proto"),
        ])
        assert rc == 0, "protoc failed"
        sys.path.insert(0, out)
        from firn.catalog.v1 import catalog_pb2, catalog_pb2_grpc  # noqa: E402
        _stubs = (catalog_pb2, catalog_pb2_grpc)
    return _stubs


def local_path(uri):
    """The local path of a file:// URI (Firn's default warehouse is a local directory)."""
    assert uri.startswith("file://"), f"not a local file URI: {uri}"
    return uri[len("file://"):]


def write_parquet(pb, table_location, arrow_table, name=None):
    """Writes `arrow_table` to TABLE_LOCATION/data/NAME.parquet; returns its pb.DataFile."""
    data_dir = local_path(table_location).rstrip("/") + "/data"
    os.makedirs(data_dir, exist_ok=True)
    path = os.path.join(data_dir, f"{name or uuid.uuid4()}.parquet")
    pq.write_table(arrow_table, path)
    return pb.DataFile(path="file://" + path, file_size_bytes=os.path.getsize(path))
