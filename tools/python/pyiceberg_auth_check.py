"""PyIceberg against a Firn server that requires authentication.

Usage: pyiceberg_auth_check.py REST_URI WRITER_CREDENTIAL READER_CREDENTIAL NAMESPACE TABLE [CA_CERT]

Each CREDENTIAL is CLIENT_ID:CLIENT_SECRET (a principal and one of its tokens), which
PyIceberg exchanges at /v1/oauth/tokens (OAuth2 client credentials). The writer appends 3
rows; the reader loads the table, then tries to append and must get ForbiddenError; a wrong
secret must be refused. Prints one JSON line, then PYICEBERG-AUTH-OK.
"""
import json
import os
import sys

import pyarrow as pa
from pyiceberg.catalog.rest import RestCatalog
from pyiceberg.exceptions import ForbiddenError, OAuthError, UnauthorizedError

uri, writer_cred, reader_cred, ns, table = sys.argv[1:6]
extra = {}
if len(sys.argv) > 6:
    # The catalog's requests use ssl.cabundle; PyIceberg's OAuth2 token fetch uses a session
    # of its own that only the standard REQUESTS_CA_BUNDLE reaches.
    extra = {"ssl": {"cabundle": sys.argv[6]}}
    os.environ["REQUESTS_CA_BUNDLE"] = sys.argv[6]


def catalog(credential):
    return RestCatalog("firn", uri=uri, credential=credential, **extra)


rows = pa.table({
    "id": pa.array([100, 101, 102], pa.int64()),
    "name": pa.array(["a", "b", "c"], pa.string()),
    "ts": pa.array([None, None, None], pa.timestamp("us")),
})

writer = catalog(writer_cred)
t = writer.load_table((ns, table))
before = len(t.scan().to_arrow())
t.append(rows.cast(t.schema().as_arrow()))
after = len(writer.load_table((ns, table)).scan().to_arrow())

reader = catalog(reader_cred)
rt = reader.load_table((ns, table))
seen = len(rt.scan().to_arrow())
try:
    rt.append(rows.cast(rt.schema().as_arrow()))
    denied = "no"
except ForbiddenError as e:
    denied = "forbidden: " + str(e)

try:
    catalog(writer_cred.split(":")[0] + ":firn_wrong")
    bad_secret = "accepted"
except (OAuthError, UnauthorizedError) as e:
    bad_secret = "refused: " + type(e).__name__

print(json.dumps({
    "check": "auth",
    "before": before,
    "after": after,
    "reader_saw": seen,
    "reader_append": denied,
    "bad_secret": bad_secret,
}))
print("PYICEBERG-AUTH-OK")
