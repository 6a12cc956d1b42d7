"""PyIceberg on an S3 table through Firn's remote signing: the client holds no S3 keys.

Usage: pyiceberg_signing_check.py REST_URI WRITER_CREDENTIAL READER_CREDENTIAL NAMESPACE TABLE

Each CREDENTIAL is CLIENT_ID:CLIENT_SECRET. Both catalogs ask for remote signing only
(X-Iceberg-Access-Delegation: remote-signing), so every S3 request PyIceberg makes is
signed by Firn. The writer reads and appends 3 rows; the reader reads, and its append must
fail (Firn signs no write for it). Prints one JSON line, then PYICEBERG-SIGNING-OK.
"""
import json
import os
import sys

# One worker thread: PyIceberg 0.12's FsspecFileIO installs its signer per thread on a
# botocore event emitter the threads share (unregister, then register), so a request another
# thread sends in between goes out unsigned and fails 403 (apache/iceberg-python#3896).
os.environ["PYICEBERG_MAX_WORKERS"] = "1"
import pyarrow as pa
from pyiceberg.catalog.rest import RestCatalog

uri, writer_cred, reader_cred, ns, table = sys.argv[1:6]
# Nothing on this client may sign by itself.
for k in list(os.environ):
    if k.startswith("AWS_"):
        del os.environ[k]


def catalog(credential):
    return RestCatalog(
        "firn",
        uri=uri,
        credential=credential,
        **{"header.X-Iceberg-Access-Delegation": "remote-signing"},
    )


rows = pa.table({
    "id": pa.array([100, 101, 102], pa.int64()),
    "name": pa.array(["a", "b", "c"], pa.string()),
    "ts": pa.array([None, None, None], pa.timestamp("us")),
})

writer = catalog(writer_cred)
t = writer.load_table((ns, table))
keys_on_client = sorted(
    k for k in t.io.properties if k.startswith("s3.") and ("key" in k or "token" in k)
)
before = len(t.scan().to_arrow())
t.append(rows.cast(t.schema().as_arrow()))
after = len(writer.load_table((ns, table)).scan().to_arrow())

reader = catalog(reader_cred)
rt = reader.load_table((ns, table))
seen = len(rt.scan().to_arrow())
try:
    rt.append(rows.cast(rt.schema().as_arrow()))
    denied = "no"
except Exception as e:  # the signer's 403 surfaces through s3fs as it likes
    denied = "refused: " + type(e).__name__ + ": " + str(e)[:300]

print(json.dumps({
    "check": "signing",
    "io": type(t.io).__name__,
    "signer": t.io.properties.get("s3.signer.endpoint"),
    "keys_on_client": keys_on_client,
    "before": before,
    "after": after,
    "reader_saw": seen,
    "reader_append": denied,
}))
print("PYICEBERG-SIGNING-OK")
