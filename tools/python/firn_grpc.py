"""Shared helpers for Python clients of Firn's gRPC API.

- `stubs()` generates the Python stubs from proto/firn/catalog/v1/catalog.proto with
  grpcio-tools at run time (nothing generated is committed) and imports them.
- `write_parquet()` writes a pyarrow table as a Parquet file under a table's location and
  returns the `DataFile` to commit (path + size, no statistics: Firn reads the footer); on
  S3 through the storage access the server hands out (`GetStorageAccess`), so the Firn
  endpoint is the only setting a writer needs.

Used by grpc_client_check.py and tools/bench/rest_bench.py.
"""
import os
import sys
import tempfile
import uuid

import pyarrow.fs as pafs
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


def filesystem(access):
    """A pyarrow filesystem for a table's storage access (a `StorageAccess` from
    `GetStorageAccess`, or None for a local warehouse) and a function from URIs to its paths."""
    if access is None or not access.location.startswith("s3://"):
        return pafs.LocalFileSystem(), local_path
    o = dict(access.options)
    scheme, _, host = o.get("aws_endpoint", "").partition("://")
    fs = pafs.S3FileSystem(
        access_key=o.get("aws_access_key_id"),
        secret_key=o.get("aws_secret_access_key"),
        session_token=o.get("aws_session_token"),
        region=o.get("aws_region", "us-east-1"),
        endpoint_override=host or None,
        scheme=scheme or "https",
        force_virtual_addressing=o.get("aws_virtual_hosted_style_request") == "true",
    )
    return fs, lambda uri: uri[len("s3://"):]


def write_parquet(pb, table_location, arrow_table, name=None, access=None):
    """Writes `arrow_table` to TABLE_LOCATION/data/NAME.parquet; returns its pb.DataFile."""
    fs, to_path = filesystem(access)
    uri = f"{table_location.rstrip('/')}/data/{name or uuid.uuid4()}.parquet"
    path = to_path(uri)
    if isinstance(fs, pafs.LocalFileSystem):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(arrow_table, path, filesystem=fs)
    return pb.DataFile(path=uri, file_size_bytes=fs.get_file_info(path).size)
