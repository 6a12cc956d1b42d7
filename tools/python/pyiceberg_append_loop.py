"""Appends N single-row batches to a table through Firn's Iceberg REST catalog with
PyIceberg, each a separate commit; ids START..START+N. Used to interleave REST writers
with gRPC writers on one table.

Usage: pyiceberg_append_loop.py REST_URI NS.TABLE START N
"""
import sys

import pyarrow as pa
from pyiceberg.catalog.rest import RestCatalog

uri, table, start, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
cat = RestCatalog("firn", uri=uri)
for i in range(start, start + n):
    t = cat.load_table(table)
    schema = t.schema().as_arrow()
    row = {f.name: None for f in schema}
    row["id"] = i
    t.append(pa.Table.from_pylist([row], schema=schema))
print(f"APPENDED {n}")
