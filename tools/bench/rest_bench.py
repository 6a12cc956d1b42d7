#!/usr/bin/env python3
"""Firn's Iceberg REST catalog vs PyIceberg's own SqlCatalog (SQLite + file:// warehouse).

One run, one machine, the same PyIceberg client code on both sides; prints a markdown table
(metric | Firn | SqlCatalog | Firn/SqlCatalog) and machine info.

Measured:
1. Commit latency: PyIceberg `table.append()` of one row, p50/p99 (and the catalog's own
   part, `commit_table`), the two catalogs interleaved append by append.
2. loadTable latency on a table with a long history (default 10,000 snapshots), p50/p99:
   PyIceberg `load_table` on both, plus raw HTTP GETs against Firn (`snapshots=all`,
   `snapshots=refs`, a 304 revalidation) to separate server from client parsing time. The
   history is built with fast gRPC commits of tiny pyarrow-written Parquet files (one row
   each); its current metadata.json is then registered in the SqlCatalog, so both catalogs
   serve the very same metadata.
3. Commit latency at that history (PyIceberg rewrites/receives the whole metadata per commit).

Firn is started here (`firn serve` on free loopback ports, data in a temp dir) and stopped
at the end. Needs tools/.venv (tools/setup-python.sh, which installs PyIceberg with
SQLAlchemy for SqlCatalog).

Usage:
    tools/.venv/bin/python tools/bench/rest_bench.py [--firn-bin PATH] [--quick]
        [--appends 200] [--warmup 10] [--snapshots 10000] [--loads 50] [--late-appends 5]
The firn binary: --firn-bin, else $FIRN_BIN, else target/release/firn, else target/debug/firn.
Use a release build for figures: a debug build is unoptimised (the script warns).
"""
import argparse
import datetime
import math
import os
import platform
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tools", "python"))

import grpc  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import requests  # noqa: E402
from pyiceberg.catalog.rest import RestCatalog  # noqa: E402
from pyiceberg.schema import Schema  # noqa: E402
from pyiceberg.types import LongType, NestedField, StringType  # noqa: E402

try:
    from pyiceberg.catalog.sql import SqlCatalog  # noqa: E402
except ImportError as e:  # tools/setup-python.sh installs it (pyiceberg[sql-sqlite])
    sys.exit(f"SqlCatalog needs SQLAlchemy ({e}): run tools/setup-python.sh")

from firn_grpc import local_path, stubs  # noqa: E402

NS = "bench"
SCHEMA = Schema(
    NestedField(1, "id", LongType(), required=False),
    NestedField(2, "name", StringType(), required=False),
)
ARROW_SCHEMA = SCHEMA.as_arrow()


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---- statistics and output -------------------------------------------------------------


def pct(samples, p):
    """Nearest-rank percentile of `samples` (seconds), in ms."""
    if not samples:
        return None
    s = sorted(samples)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)] * 1000


class Report:
    def __init__(self):
        self.rows = []
        self.notes = []

    def section(self, title):
        self.rows.append((f"**{title}**", None, None, True))

    def row(self, metric, firn, sql):
        self.rows.append((metric, firn, sql, False))

    def lat(self, metric, firn_samples, sql_samples, ps=(50, 99)):
        for p in ps:
            name = "max" if p == 100 else f"p{p}"
            self.row(f"{metric} {name}", pct(firn_samples, p) if firn_samples is not None else None,
                     pct(sql_samples, p) if sql_samples is not None else None)

    def note(self, text):
        self.notes.append(text)

    def markdown(self):
        def ms(v):
            if v is None:
                return "—"
            return f"{v:,.0f} ms" if v >= 100 else f"{v:.1f} ms" if v >= 10 else f"{v:.2f} ms"

        out = ["| metric | Firn | SqlCatalog | Firn/SqlCatalog |", "|---|---:|---:|---:|"]
        for metric, f, s, header in self.rows:
            if header:
                out.append(f"| {metric} | | | |")
                continue
            ratio = f"{f / s:.2f}x" if f is not None and s else "—"
            out.append(f"| {metric} | {ms(f)} | {ms(s)} | {ratio} |")
        return "\n".join(out)


def timed(fn, n, samples):
    for _ in range(n):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)


# ---- machine info ----------------------------------------------------------------------


def elf_section_names(path):
    """Section names of an ELF64 little-endian file ([] if it is not one)."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
                return []
            shoff, = struct.unpack_from("<Q", head, 0x28)
            shentsize, shnum, shstrndx = struct.unpack_from("<HHH", head, 0x3A)
            f.seek(shoff)
            table = f.read(shentsize * shnum)
            sections = [struct.unpack_from("<IIQQQQ", table, i * shentsize) for i in range(shnum)]
            _, _, _, _, str_off, str_size = sections[shstrndx]
            f.seek(str_off)
            strtab = f.read(str_size)
        return [strtab[s[0]:strtab.index(b"\0", s[0])].decode() for s in sections]
    except (OSError, struct.error, ValueError, IndexError):
        return []


def build_kind(path):
    """'release' or 'debug (unoptimised)', guessed from the path and the debug sections
    (this workspace's release profile has debug = false; dev keeps line tables)."""
    if "/target/debug/" in os.path.realpath(path) or ".debug_line" in elf_section_names(path):
        return "debug (unoptimised: Firn figures are NOT representative, use a release build)"
    return "release"


def loadavg():
    try:
        return [float(x) for x in open("/proc/loadavg").read().split()[:3]]
    except (OSError, ValueError):
        return None


def machine_info(firn_bin, tmp):
    lines = []
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = next(line.split()[1] for line in open("/proc/meminfo") if line.startswith("MemTotal"))
        mem = f"{int(mem) / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration):
        mem = "?"
    fs = "?"
    try:
        best = ""
        for line in open("/proc/mounts"):
            dev, mnt, typ = line.split()[:3]
            if tmp.startswith(mnt) and len(mnt) > len(best):
                best, fs = mnt, f"{typ} on {dev} (mounted at {mnt})"
    except OSError:
        pass
    version = subprocess.run([firn_bin, "--version"], capture_output=True, text=True).stdout.strip()
    import pyiceberg
    import sqlalchemy
    lines.append(f"- machine: {platform.node()}, {cpu}, {os.cpu_count()} CPUs, {mem} RAM, "
                 f"Linux {platform.release()}")
    lines.append(f"- temp dir: {tmp} ({fs})")
    lines.append(f"- firn: {firn_bin} ({version}, {build_kind(firn_bin)})")
    lines.append(f"- client: Python {platform.python_version()}, pyiceberg {pyiceberg.__version__}, "
                 f"pyarrow {pa.__version__}, SQLAlchemy {sqlalchemy.__version__}, "
                 f"SQLite {sqlite3.sqlite_version}, grpcio {grpc.__version__}")
    return lines


# ---- the Firn server -------------------------------------------------------------------


def find_firn(arg):
    for cand in [arg, os.environ.get("FIRN_BIN"),
                 os.path.join(ROOT, "target/release/firn"), os.path.join(ROOT, "target/debug/firn")]:
        if cand:
            if os.path.isfile(cand) and os.access(cand, os.X_OK):
                return os.path.abspath(cand)
            if cand in (arg, os.environ.get("FIRN_BIN")):
                sys.exit(f"firn binary {cand} is not an executable file")
    sys.exit("no firn binary: pass --firn-bin or FIRN_BIN, or build target/release/firn")


def free_ports(n):
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class Firn:
    def __init__(self, binary, tmp):
        grpc_port, rest_port = free_ports(2)
        self.grpc = f"127.0.0.1:{grpc_port}"
        self.rest = f"http://127.0.0.1:{rest_port}"
        self.log_path = os.path.join(tmp, "firn.log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [binary, "serve", "--data-dir", os.path.join(tmp, "firn"),
             "--grpc-listen", self.grpc, "--rest-listen", f"127.0.0.1:{rest_port}"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            # No FIRN_* settings of the caller's shell (catalog URL, warehouse, token) leak in.
            env={k: v for k, v in os.environ.items() if not k.startswith("FIRN_") or k == "FIRN_LOG"})

    def wait_ready(self, timeout=60):
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"firn exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.rest}/v1/config", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"firn not ready after {timeout}s:\n{self.log_tail()}")
            time.sleep(0.05)
        channel = grpc.insecure_channel(self.grpc)
        grpc.channel_ready_future(channel).result(timeout=max(1, deadline - time.monotonic()))
        return channel

    def log_tail(self, n=4000):
        self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read()[-n:].decode(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# ---- helpers ---------------------------------------------------------------------------


def timing_commit_table(catalog, samples):
    """Wraps catalog.commit_table (what Table.append calls last) to time the catalog part."""
    inner = catalog.commit_table

    def commit_table(*a, **k):
        t = time.perf_counter()
        try:
            return inner(*a, **k)
        finally:
            samples.append(time.perf_counter() - t)

    catalog.commit_table = commit_table


def timing_http_post(catalog, samples):
    """Wraps the RestCatalog's HTTP session POST (the commit round trip, body read)."""
    inner = catalog._session.post

    def post(*a, **k):
        t = time.perf_counter()
        r = inner(*a, **k)
        _ = r.content
        samples.append(time.perf_counter() - t)
        return r

    catalog._session.post = post


def one_row(i):
    return pa.Table.from_pylist([{"id": i, "name": f"row-{i}"}], schema=ARROW_SCHEMA)


def append_bench(cats, n, warmup, label, report, first_id=0):
    """Interleaved single-row appends on cats = {"firn": table, "sql": table}."""
    total = {k: [] for k in cats}
    catalog_part = {k: [] for k in cats}
    post = []
    for k, t in cats.items():
        timing_commit_table(t.catalog, catalog_part[k])
        if k == "firn":
            timing_http_post(t.catalog, post)
    rows = [one_row(first_id + i) for i in range(warmup + n)]
    for i, row in enumerate(rows):
        for k, t in cats.items():
            t0 = time.perf_counter()
            t.append(row)
            total[k].append(time.perf_counter() - t0)
        if (i + 1) % max(1, (warmup + n) // 5) == 0:
            log(f"  {label}: {i + 1}/{warmup + n} appends each")
    drop = lambda s: s[warmup:]  # noqa: E731
    ps = (50, 99) if n >= 20 else (50, 100)
    report.lat("PyIceberg `table.append`", drop(total["firn"]), drop(total["sql"]), ps)
    report.lat("… of which `catalog.commit_table`", drop(catalog_part["firn"]),
               drop(catalog_part["sql"]), ps)
    report.lat("… of which Firn's HTTP POST (server + loopback)", drop(post), None, (50,))


def build_history(pb, stub, ident, n, inflight_max=64):
    """n gRPC append commits of one-row pyarrow-written Parquet files (as
    grpc_client_check.py does: path + size, Firn reads the footer); many in flight so
    Firn batches them. Returns the seconds taken."""
    table = stub.LoadTable(pb.LoadTableRequest(ident=ident))
    data_dir = local_path(table.location).rstrip("/") + "/data"
    os.makedirs(data_dir, exist_ok=True)
    inflight = []
    t0 = time.perf_counter()
    for i in range(n):
        path = os.path.join(data_dir, f"h-{i:06d}-{uuid.uuid4().hex[:8]}.parquet")
        pq.write_table(pa.table({"id": pa.array([i], pa.int64()),
                                 "name": pa.array([f"h{i}"])}), path)
        req = pb.CommitRequest(ident=ident, commit_id=str(uuid.uuid4()), append=pb.AppendOp(
            add=[pb.DataFile(path="file://" + path, file_size_bytes=os.path.getsize(path))]))
        inflight.append(stub.Commit.future(req))
        if len(inflight) >= inflight_max:
            inflight.pop(0).result()
        if (i + 1) % max(1, n // 5) == 0:
            log(f"  history: {i + 1}/{n} gRPC commits ({(i + 1) / (time.perf_counter() - t0):.0f}/s)")
    for f in inflight:
        f.result()
    return time.perf_counter() - t0


def sql_metadata_location(db_path, catalog_name, table):
    with sqlite3.connect(db_path) as c:
        return c.execute(
            "SELECT metadata_location FROM iceberg_tables WHERE catalog_name = ? AND "
            "table_namespace = ? AND table_name = ?", (catalog_name, NS, table)).fetchone()[0]


# ---- the benchmark ---------------------------------------------------------------------


def run(args, firn_bin, tmp, report):
    firn = Firn(firn_bin, tmp)
    try:
        t = time.perf_counter()
        channel = firn.wait_ready()
        log(f"firn ready in {time.perf_counter() - t:.1f}s: REST {firn.rest}, gRPC {firn.grpc}")
        bench(args, firn, channel, tmp, report)
        if firn.proc.poll() is not None:
            raise RuntimeError(f"firn died during the run:\n{firn.log_tail()}")
    finally:
        firn.stop()


def bench(args, firn, channel, tmp, report):
    pb, rpc = stubs()
    stub = rpc.CatalogServiceStub(channel)
    sql_dir = os.path.join(tmp, "sql")
    os.makedirs(os.path.join(sql_dir, "warehouse"))
    sql_db = os.path.join(sql_dir, "cat.db")
    rc = RestCatalog("firn", uri=firn.rest)
    sc = SqlCatalog("sql", uri=f"sqlite:///{sql_db}", warehouse=f"file://{sql_dir}/warehouse")
    for c in (rc, sc):
        c.create_namespace(NS)

    # 1. Commit latency on a fresh table.
    log(f"1. commit latency: {args.warmup} warm-up + {args.appends} single-row appends per catalog")
    tables = {"firn": rc.create_table(f"{NS}.appends", schema=SCHEMA),
              "sql": sc.create_table(f"{NS}.appends", schema=SCHEMA)}
    report.section(f"1. Commit, new table: 1-row appends, {args.appends} per catalog")
    append_bench(tables, args.appends, args.warmup, "new table", report)
    for k, t in tables.items():
        rows = t.scan().to_arrow().num_rows
        assert rows == args.appends + args.warmup, (k, rows)
    report.note(f"section 1: the table grows to {args.appends + args.warmup} snapshots during "
                f"the run; PyIceberg's own work per append grows with the snapshot count (its "
                f"Transaction.table_metadata deep-copies the whole metadata on every access), "
                f"on both sides alike")

    # 2. loadTable with a long history, identical metadata on both sides.
    log(f"2. history: {args.snapshots} gRPC commits of one-row Parquet files")
    ident = pb.TableIdent(namespace=NS, name="history")
    stub.CreateTable(pb.CreateTableRequest(ident=ident, fields=[
        pb.Field(name="id", type="long"), pb.Field(name="name", type="string")]))
    took = build_history(pb, stub, ident, args.snapshots)
    report.note(f"history built with {args.snapshots} gRPC commits in {took:.1f}s "
                f"({args.snapshots / took:.0f} commits/s, 64 in flight)")
    t0 = time.perf_counter()
    loaded = stub.LoadTable(pb.LoadTableRequest(ident=ident))
    report.note(f"first gRPC LoadTable after them (Firn writes the metadata.json of the "
                f"version on demand): {(time.perf_counter() - t0) * 1000:.0f} ms")
    assert loaded.version == args.snapshots, loaded.version
    metadata_location = loaded.metadata_location
    size = os.path.getsize(local_path(metadata_location))
    t0 = time.perf_counter()
    sc.register_table((NS, "history"), metadata_location)
    report.note(f"metadata.json with {args.snapshots} snapshots: {size / 1e6:.2f} MB; "
                f"SqlCatalog.register_table of it: {(time.perf_counter() - t0) * 1000:.0f} ms")
    ft, st = rc.load_table((NS, "history")), sc.load_table((NS, "history"))
    assert ft.metadata_location == st.metadata_location == metadata_location
    assert len(ft.metadata.snapshots) == len(st.metadata.snapshots) == args.snapshots
    if ft.metadata != st.metadata:
        report.note("OBSERVATION: Firn's REST metadata differs from its own metadata.json")

    log(f"   {args.loads} loads per catalog (interleaved) + raw HTTP")
    rc_refs = RestCatalog("firn-refs", uri=firn.rest, **{"snapshot-loading-mode": "refs"})
    loads = {"firn": [], "sql": [], "firn_refs": []}
    session = requests.Session()
    url = f"{firn.rest}/v1/namespaces/{NS}/tables/history"
    raw = {"all": [], "refs": [], "304": [], "sql": []}
    etag = session.get(url).headers.get("ETag")
    warm = 2
    for i in range(warm + args.loads):
        sink = loads if i >= warm else {k: [] for k in loads}
        timed(lambda: rc.load_table((NS, "history")), 1, sink["firn"])
        timed(lambda: sc.load_table((NS, "history")), 1, sink["sql"])
        timed(lambda: rc_refs.load_table((NS, "history")), 1, sink["firn_refs"])
    for i in range(warm + args.loads):
        sink = raw if i >= warm else {k: [] for k in raw}
        timed(lambda: session.get(url).content, 1, sink["all"])
        timed(lambda: session.get(url, params={"snapshots": "refs"}).content, 1, sink["refs"])

        def fetch_sql():
            loc = sql_metadata_location(sql_db, "sql", "history")
            with open(local_path(loc), "rb") as f:
                return f.read()
        timed(fetch_sql, 1, sink["sql"])
        if etag:
            def revalidate():
                r = session.get(url, headers={"If-None-Match": etag})
                assert r.status_code == 304, r.status_code
            timed(revalidate, 1, sink["304"])
    report.section(f"2. loadTable, {args.snapshots:,} snapshots, {args.loads} loads per catalog")
    report.lat("PyIceberg `load_table`", loads["firn"], loads["sql"])
    report.lat("PyIceberg `load_table`, Firn with `snapshot-loading-mode=refs` ¹",
               loads["firn_refs"], loads["sql"])
    report.lat("raw GET `snapshots=all`, body read, not parsed ²", raw["all"], raw["sql"])
    report.lat("raw GET `snapshots=refs` ²", raw["refs"], raw["sql"])
    if etag:
        report.lat("raw GET with `If-None-Match` → 304", raw["304"], None, ps=(50,))
    body_all = session.get(url).content
    body_refs = session.get(url, params={"snapshots": "refs"}).content
    with open(local_path(metadata_location), "rb") as f:
        file_bytes = f.read()
    from pyiceberg.catalog.rest import TableResponse  # noqa: E402
    from pyiceberg.table.metadata import TableMetadataUtil  # noqa: E402
    parse = {"firn": [], "sql": []}
    n_parse = max(3, min(10, args.loads))
    timed(lambda: TableResponse.model_validate_json(body_all), n_parse, parse["firn"])
    timed(lambda: TableMetadataUtil.parse_raw(file_bytes), n_parse, parse["sql"])
    report.lat("client CPU: PyIceberg parses the metadata ³", parse["firn"], parse["sql"], ps=(50,))
    refs_json = TableResponse.model_validate_json(body_refs).metadata
    report.note(f"GET body sizes: snapshots=all {len(body_all) / 1e6:.2f} MB, snapshots=refs "
                f"{len(body_refs) / 1e6:.2f} MB ({len(refs_json.snapshots)} snapshot(s), "
                f"{len(refs_json.snapshot_log)} snapshot-log entries); metadata file "
                f"{len(file_bytes) / 1e6:.2f} MB")

    # 3. Commit latency at that history (each catalog appends to its own copy of the table
    #    from here on: they share the location, file names are unique).
    if args.late_appends > 0:
        log(f"3. commit latency at {args.snapshots} snapshots: {args.late_warmup} warm-up + "
            f"{args.late_appends} appends per catalog")
        late = {"firn": RestCatalog("firn", uri=firn.rest).load_table((NS, "history")),
                "sql": SqlCatalog("sql", uri=f"sqlite:///{sql_db}",
                                  warehouse=f"file://{sql_dir}/warehouse").load_table((NS, "history"))}
        report.section(f"3. Commit at {args.snapshots:,} snapshots: 1-row appends, "
                       f"{args.late_appends} per catalog")
        append_bench(late, args.late_appends, args.late_warmup,
                     f"{args.snapshots} snapshots", report, first_id=10**9)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--firn-bin", help="firn binary (default $FIRN_BIN, target/release/firn, "
                                       "target/debug/firn)")
    ap.add_argument("--appends", type=int, help="measured appends per catalog (default 200)")
    ap.add_argument("--warmup", type=int, help="warm-up appends per catalog (default 10)")
    ap.add_argument("--snapshots", type=int, help="history length for loadTable (default 10000)")
    ap.add_argument("--loads", type=int, help="measured loads per catalog (default 50)")
    ap.add_argument("--late-appends", type=int,
                    help="measured appends at that history, 0 to skip (default 5: PyIceberg's "
                         "own append takes seconds at 10,000 snapshots)")
    ap.add_argument("--late-warmup", type=int, help="warm-up appends at that history (default 1)")
    ap.add_argument("--quick", action="store_true", help="small numbers, a smoke run (< 1 min)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (data, firn.log)")
    args = ap.parse_args()
    defaults = (dict(appends=20, warmup=3, snapshots=300, loads=10, late_appends=5, late_warmup=1)
                if args.quick else
                dict(appends=200, warmup=10, snapshots=10000, loads=50, late_appends=5, late_warmup=1))
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.snapshots < 1 or args.appends < 1 or args.loads < 1:
        ap.error("--appends, --snapshots and --loads must be at least 1")

    firn_bin = find_firn(args.firn_bin)
    tmp = tempfile.mkdtemp(prefix="firn-rest-bench-")
    report = Report()
    info = machine_info(firn_bin, tmp)
    if "debug" in build_kind(firn_bin):
        log(f"WARNING: {firn_bin} looks like a debug build; Firn figures will be pessimistic")
    load_before = loadavg()
    if load_before and load_before[0] > 0.5 * (os.cpu_count() or 1):
        log(f"WARNING: load average {load_before[0]:.2f} before the run: other work on this "
            f"machine will distort the figures")
    started = time.perf_counter()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        run(args, firn_bin, tmp, report)
    finally:
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    took = time.perf_counter() - started

    print(f"## Firn REST catalog vs PyIceberg SqlCatalog (SQLite) — "
          f"{datetime.datetime.now().isoformat(timespec='seconds')}\n")
    print(report.markdown())
    print()
    for line in info:
        print(line)
    print(f"- run: appends={args.appends} (+{args.warmup} warm-up), snapshots={args.snapshots}, "
          f"loads={args.loads} (+2 warm-up), late appends={args.late_appends} "
          f"(+{args.late_warmup} warm-up){' [--quick]' if args.quick else ''}; "
          f"Firn: SQLite catalog + local warehouse in the temp dir; SqlCatalog: sqlite:///…/cat.db "
          f"+ file:// warehouse")
    print("\n¹ SqlCatalog has no such mode: its column repeats its full `load_table`.\n"
          "² SqlCatalog column: the same fetch without parsing: SQL lookup of the metadata "
          "location + read of the metadata file.\n"
          "³ Firn: `TableResponse.model_validate_json` of the GET body; SqlCatalog: "
          "`TableMetadataUtil.parse_raw` of the file.\n"
          "Percentiles are nearest-rank over the measured samples (warm-ups excluded): p99 of "
          "fewer than 100 samples is the maximum.\n")
    for n in report.notes:
        print(f"- {n}")
    load_after = loadavg()
    if load_before and load_after:
        print(f"- load average (1/5/15 min) before the run: {' '.join(f'{x:.2f}' for x in load_before)}"
              f", after: {' '.join(f'{x:.2f}' for x in load_after)} (this benchmark keeps about "
              f"1 CPU busy; more means other work shared the machine)")
    print(f"- total run time: {took:.0f}s")


if __name__ == "__main__":
    main()
