"""PyIceberg on a named Firn warehouse, chosen only by its name.

Usage: pyiceberg_warehouse_check.py REST_URI WAREHOUSE NAMESPACE TABLE

The catalog is configured with the REST URI and `warehouse=WAREHOUSE` and nothing else: no
S3 settings, no keys (the environment's are removed). It asks for vended credentials, so
whatever store the warehouse is on, Firn hands out what is needed. Creates the namespace and
a table, appends 3 rows, reads them back through a fresh catalog, and prints one JSON line
(the table's location, the rows read, the namespaces the catalog lists), then
PYICEBERG-WAREHOUSE-OK.
"""
import json
import os
import sys

import pyarrow as pa
from pyiceberg.catalog.rest import RestCatalog

uri, warehouse, ns, table = sys.argv[1:5]
for k in list(os.environ):
    if k.startswith("AWS_"):
        del os.environ[k]


def catalog():
    return RestCatalog(
        "firn",
        uri=uri,
        warehouse=warehouse,
        **{"header.X-Iceberg-Access-Delegation": "vended-credentials"},
    )


rows = pa.table({
    "id": pa.array([1, 2, 3], pa.int64()),
    "name": pa.array(["a", "b", "c"], pa.string()),
})
cat = catalog()
cat.create_namespace(ns)
t = cat.create_table((ns, table), schema=rows.schema)
t.append(rows)
again = catalog()
read = again.load_table((ns, table)).scan().to_arrow()
print(json.dumps({
    "location": t.location(),
    "rows": len(read),
    "namespaces": [list(n) for n in again.list_namespaces()],
}))
print("PYICEBERG-WAREHOUSE-OK")
