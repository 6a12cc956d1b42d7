//! Commit benchmark (SQLite + local disk, fsync on): prints a table of figures. With
//! `FIRN_TEST_POSTGRES` naming a PostgreSQL server (`tools/start-postgres.sh` prints one) the
//! catalog is a fresh database there, and the baselines are PostgreSQL's own: one durable
//! single-row UPDATE with one client, and UPDATEs/s with 16 clients on 16 rows and on one
//! row (what pgbench measures), on the same server in the same run.
//!
//! Every commit goes through a real gRPC server on loopback and adds one Parquet file
//! written beforehand (untimed), with its statistics as the Rust `TableWriter` sends them,
//! so Firn checks it with one HEAD.
//!
//! Run: `cargo run --release -p firn-bench` (add `--quick` for a short run). The last rows
//! repeat the commits on S3 (the project's S3 server, moto, started by tools/start-s3.sh,
//! on loopback; `--skip-s3` leaves them out).
//!
//! The server's data directory goes under the workspace's `target/` (`--dir`), as a user's
//! goes under their working directory, not in the system temp dir.
//!
//! Each commit adds two metadata files (its manifest and manifest list). On local disk they
//! are written behind the commits, in batches, once a burst pauses (their bytes are durable
//! in the catalog before the commit is acknowledged). Each burst row says how long after
//! its last commit its files were all written (a table load waits for them), and the cost
//! of creating one file is printed as a baseline: on ext4 without a journal (this VM's disk)
//! creating a file near many inodes deleted in the last few minutes (another bench's or
//! test run's data) costs ~0.6 ms instead of ~0.03 ms, which bounds the sustained rate.

use std::time::{Duration, Instant};

use clap::Parser;
use firn_client::proto as pb;
use firn_client::{FirnClient, TableIdent};
use firn_tests::{TestServer, append_request, batch, create_table, write_parquet};

/// A file as a Rust writer sends it: with its statistics, so Firn need not read its footer.
fn data_file(path: &str, size: u64) -> pb::DataFile {
    pb::DataFile {
        path: path.to_string(),
        file_size_bytes: size,
        stats: Some(pb::FileStats {
            record_count: 2,
            ..Default::default()
        }),
    }
}

#[derive(Parser)]
struct Args {
    /// Fewer commits per measurement (a smoke run).
    #[arg(long)]
    quick: bool,
    /// Snapshots of history for the "late" latency measurement.
    #[arg(long, default_value_t = 5000)]
    history: usize,
    /// Commits per throughput measurement on one table (longer bursts show the rate the
    /// disk sustains once the write-behind buffer is full).
    #[arg(long, default_value_t = 2000)]
    burst: usize,
    /// Leave out the S3 rows (they start the project's S3 server, tools/start-s3.sh).
    #[arg(long)]
    skip_s3: bool,
    /// Where the server's data directory is created (and removed at the end).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/firn-bench"))]
    dir: std::path::PathBuf,
}

/// Pre-written files for `n` commits on a table.
fn files(location: &str, tag: &str, n: usize) -> Vec<(String, u64)> {
    (0..n)
        .map(|i| {
            write_parquet(
                location,
                &format!("{tag}-{i}.parquet"),
                &batch(i as i64..i as i64 + 2, 0),
            )
        })
        .collect()
}

async fn commit(client: &FirnClient, ident: &TableIdent, f: &(String, u64)) -> Duration {
    let t = Instant::now();
    client
        .commit_once(append_request(ident, vec![data_file(&f.0, f.1)]))
        .await
        .expect("commit failed");
    t.elapsed()
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// Sequential commits; returns sorted latencies.
async fn sequential(
    client: &FirnClient,
    ident: &TableIdent,
    files: &[(String, u64)],
) -> Vec<Duration> {
    let mut lat = Vec::with_capacity(files.len());
    for f in files {
        lat.push(commit(client, ident, f).await);
    }
    lat.sort();
    lat
}

/// What a burst of concurrent commits measured.
struct Burst {
    rate: f64,
    failed: usize,
    /// How long after the last commit the burst's metadata files were all in the store
    /// (written behind the commits; a load of each table waits for them).
    settle: Duration,
}

impl std::fmt::Display for Burst {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.0} commits/s, {} failed, files written {:.2} s later",
            self.rate,
            self.failed,
            self.settle.as_secs_f64()
        )
    }
}

/// `writers` concurrent writers, each committing its share.
async fn concurrent(
    server: &TestServer,
    tables: &[(TableIdent, String)],
    writers: usize,
    per_writer: usize,
    tag: &str,
) -> Burst {
    let mut work = Vec::new();
    for w in 0..writers {
        let (ident, location) = tables[w % tables.len()].clone();
        work.push((ident, files(&location, &format!("{tag}-w{w}"), per_writer)));
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (ident, files) in work {
        let client = server.client().await;
        tasks.push(tokio::spawn(async move {
            let mut failed = 0;
            for f in &files {
                if client
                    .commit_once(append_request(&ident, vec![data_file(&f.0, f.1)]))
                    .await
                    .is_err()
                {
                    failed += 1;
                }
            }
            failed
        }));
    }
    let mut failed = 0;
    for t in tasks {
        failed += t.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let settled = Instant::now();
    let client = server.client().await;
    for (ident, _) in tables {
        client
            .load_table(ident, false)
            .await
            .expect("load after burst");
    }
    Burst {
        rate: (writers * per_writer) as f64 / secs,
        failed,
        settle: settled.elapsed(),
    }
}

/// p50 of creating and writing a new 4 KiB file in `dir` (what a commit does twice).
fn create_baseline(dir: &std::path::Path, n: usize) -> Duration {
    let dir = dir.join("create-baseline");
    std::fs::create_dir_all(&dir).expect("baseline dir");
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        std::fs::write(dir.join(format!("f{i}")), [0u8; 4096]).expect("baseline file");
        lat.push(t.elapsed());
    }
    lat.sort();
    pct(&lat, 0.5)
}

/// p50 of reading a Parquet file's size and footer the way Firn checks every file a commit
/// adds: one suffix read through the warehouse (no HEAD), then parsing the footer.
async fn footer_baseline(warehouse: &firn_core::Warehouse, path: &str, n: usize) -> Duration {
    use datafusion::parquet::file::metadata::ParquetMetaDataReader;
    let object = warehouse.object(path).expect("a path in the warehouse");
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let (size, tail) = warehouse.tail(&object, 64 << 10).await.expect("bench file");
        let mut reader = ParquetMetaDataReader::new();
        reader
            .try_parse_sized(&tail, size)
            .expect("a Parquet footer");
        std::hint::black_box(
            reader
                .finish()
                .expect("a footer")
                .file_metadata()
                .num_rows(),
        );
        lat.push(t.elapsed());
    }
    lat.sort();
    pct(&lat, 0.5)
}

/// p50 of a one-row insert transaction on a fresh SQLite database with Firn's settings.
async fn sqlite_baseline(dir: &std::path::Path, n: usize) -> Duration {
    let url = format!("sqlite://{}", dir.join("baseline.db").display());
    let db = firn_core::db::Db::connect(&url)
        .await
        .expect("baseline database");
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        db.execute_durable(&format!(
            "INSERT INTO pending_objects (path, bytes) VALUES ('baseline-{i}', x'00')"
        ))
        .await
        .expect("baseline insert");
        lat.push(t.elapsed());
    }
    lat.sort();
    pct(&lat, 0.5)
}

/// PostgreSQL's own figures on the server `server`, in a fresh database: the p50 of one
/// durable single-row UPDATE (its own transaction) with one client, and UPDATEs/s with
/// `clients` clients each updating its own row, and all updating one row.
async fn postgres_baseline(server: &str, n: usize, clients: usize) -> (Duration, f64, f64) {
    let db = firn_core::db::Db::connect(&firn_tests::fresh_postgres_db(server).await)
        .await
        .expect("baseline database");
    db.execute_durable("CREATE TABLE bench_rows (id BIGINT PRIMARY KEY, n BIGINT NOT NULL)")
        .await
        .expect("baseline table");
    for id in 0..clients {
        db.execute_durable(&format!("INSERT INTO bench_rows VALUES ({id}, 0)"))
            .await
            .expect("baseline row");
    }
    let update = |id: usize| format!("UPDATE bench_rows SET n = n + 1 WHERE id = {id}");
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        db.execute_durable(&update(0))
            .await
            .expect("baseline update");
        lat.push(t.elapsed());
    }
    lat.sort();
    let rate = |same_row: bool| {
        let db = db.clone();
        async move {
            let start = Instant::now();
            let tasks: Vec<_> = (0..clients)
                .map(|c| {
                    let (db, sql) = (db.clone(), update(if same_row { 0 } else { c }));
                    tokio::spawn(async move {
                        for _ in 0..n / clients {
                            db.execute_durable(&sql).await.expect("baseline update");
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            (n / clients * clients) as f64 / start.elapsed().as_secs_f64()
        }
    };
    let distinct = rate(false).await;
    let one = rate(true).await;
    (pct(&lat, 0.5), distinct, one)
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Ok(filter) = std::env::var("FIRN_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let n = if args.quick { 100 } else { 500 };
    let server = TestServer::start_in(&args.dir).await;
    let create = create_baseline(server.dir.path(), 500);
    let client = server.client().await;
    let mut rows: Vec<(String, String)> = Vec::new();

    // 1. Single writer latency.
    let (ident, t) = create_table(&client, "bench", "single", false).await;
    let lat = sequential(&client, &ident, &files(&t.location, "s", n)).await;
    rows.push(("single writer p50".into(), ms(pct(&lat, 0.5))));
    rows.push(("single writer p99".into(), ms(pct(&lat, 0.99))));

    // 2. Throughput, one table and 16 tables.
    let mut one_table_16 = 0.0;
    for writers in [1usize, 4, 16] {
        let (ident, t) = create_table(&client, "bench", &format!("one{writers}"), false).await;
        let per = if args.quick { 40 } else { args.burst / writers };
        let burst = concurrent(&server, &[(ident, t.location)], writers, per, "c").await;
        if writers == 16 {
            one_table_16 = burst.rate;
        }
        rows.push((format!("{writers:>2} writers, 1 table"), burst.to_string()));
    }
    let mut tables = Vec::new();
    for i in 0..16 {
        let (ident, t) = create_table(&client, "bench", &format!("many{i}"), false).await;
        tables.push((ident, t.location));
    }
    let per = if args.quick { 40 } else { 125 };
    let burst = concurrent(&server, &tables, 16, per, "m").await;
    let many_tables_16 = burst.rate;
    rows.push(("16 writers, 16 tables".into(), burst.to_string()));

    // 3. Latency early vs late in a table's history: two tables, one with a long history,
    //    probed alternately so both see the same machine conditions.
    let history = if args.quick { 1000 } else { args.history };
    let probe = if args.quick { 50 } else { 200 };
    let (old, old_t) = create_table(&client, "bench", "history", false).await;
    let grown = concurrent(
        &server,
        &[(old.clone(), old_t.location.clone())],
        16,
        history.div_ceil(16),
        "grow",
    )
    .await;
    assert_eq!(grown.failed, 0);
    let (young, young_t) = create_table(&client, "bench", "young", false).await;
    sequential(&client, &young, &files(&young_t.location, "warm", 10)).await;
    let old_files = files(&old_t.location, "late", probe);
    let young_files = files(&young_t.location, "early", probe);
    let (mut early, mut late) = (Vec::new(), Vec::new());
    for (y, o) in young_files.iter().zip(&old_files) {
        early.push(commit(&client, &young, y).await);
        late.push(commit(&client, &old, o).await);
    }
    early.sort();
    late.sort();
    let snapshots = client.list_snapshots(&old).await.unwrap().len();
    let (e, l) = (pct(&early, 0.5), pct(&late, 0.5));
    rows.push((format!("p50 at snapshot 10..{}", 10 + probe), ms(e)));
    rows.push((
        format!("p50 at snapshot {}..{snapshots}", snapshots - probe),
        ms(l),
    ));
    rows.push((
        "ratio late/early".into(),
        format!("{:.2}x", l.as_secs_f64() / e.as_secs_f64()),
    ));

    // Baseline, same process and disk: one durable transaction of the catalog's database
    // (SQLite: WAL, synchronous=FULL), the floor under any durable commit on this machine.
    let postgres = std::env::var("FIRN_TEST_POSTGRES").ok();
    let base = match &postgres {
        Some(server) => {
            let (update, distinct, one) = postgres_baseline(server, n.max(320), 16).await;
            rows.push(("baseline: PostgreSQL durable UPDATE p50".into(), ms(update)));
            rows.push((
                "baseline: PostgreSQL UPDATEs/s, 16 clients, 16 rows".into(),
                format!("{distinct:.0}/s"),
            ));
            rows.push((
                "baseline: PostgreSQL UPDATEs/s, 16 clients, 1 row".into(),
                format!("{one:.0}/s"),
            ));
            rows.push((
                "16 writers, 1 table / 1-row UPDATEs/s".into(),
                format!("{:.2}x", one_table_16 / one),
            ));
            rows.push((
                "16 writers, 16 tables / 16-row UPDATEs/s".into(),
                format!("{:.2}x", many_tables_16 / distinct),
            ));
            update
        }
        None => {
            let base = sqlite_baseline(server.dir.path(), n).await;
            rows.push(("baseline: SQLite fsynced tx p50".into(), ms(base)));
            base
        }
    };
    let database = if postgres.is_some() {
        "PostgreSQL UPDATE"
    } else {
        "SQLite baseline"
    };
    rows.push((
        format!("single writer p50 / {database}"),
        format!("{:.1}x", pct(&lat, 0.5).as_secs_f64() / base.as_secs_f64()),
    ));
    rows.push(("baseline: new 4 KiB file p50".into(), ms(create)));
    // The floor the transport puts under every commit: a call that touches no table.
    let mut rtt = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        client.list_namespaces().await.unwrap();
        rtt.push(t.elapsed());
    }
    rtt.sort();
    rows.push((
        "baseline: gRPC call (list namespaces) p50".into(),
        ms(pct(&rtt, 0.5)),
    ));
    // Every added file's footer is read to check the writer's statistics (one per commit
    // here): its cost beside the single-writer latency it is part of.
    let (_, t) = create_table(&client, "bench", "footer", false).await;
    let sample = files(&t.location, "f", 1);
    let footer = footer_baseline(server.catalog.warehouse(), &sample[0].0, 500).await;
    rows.push((
        "baseline: Parquet size + footer read p50".into(),
        ms(footer),
    ));
    rows.push((
        "footer read / single writer p50".into(),
        format!(
            "{:.2}x",
            footer.as_secs_f64() / pct(&lat, 0.5).as_secs_f64().max(1e-9)
        ),
    ));

    // 4. The cost of authentication and TLS: a second server with both on (a principal's
    //    token checked on every call, TLS on loopback), in alternating rounds with the plain
    //    server so both see the same machine.
    let secured = TestServer::start_secured_tls_in(&args.dir).await;
    let secured_client = secured.client().await;
    let rounds = 3;
    let per_round = if args.quick { 50 } else { 200 };
    let per_writer = if args.quick { 10 } else { 60 };
    let (mut plain_p50, mut tls_p50, mut plain_rate, mut tls_rate) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        for (srv, c, p50, rate) in [
            (&server, &client, &mut plain_p50, &mut plain_rate),
            (&secured, &secured_client, &mut tls_p50, &mut tls_rate),
        ] {
            let (ident, t) = create_table(c, "cost", &format!("s{round}"), false).await;
            let lat = sequential(c, &ident, &files(&t.location, "cost", per_round)).await;
            p50.push(pct(&lat, 0.5));
            let (ident, t) = create_table(c, "cost", &format!("c{round}"), false).await;
            let burst = concurrent(srv, &[(ident, t.location)], 16, per_writer, "cost").await;
            assert_eq!(burst.failed, 0);
            rate.push(burst.rate);
        }
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let median_f = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (pp, tp) = (median(&mut plain_p50), median(&mut tls_p50));
    let (pr, tr) = (median_f(&mut plain_rate), median_f(&mut tls_rate));
    rows.push(("plain: single writer p50 (median of 3)".into(), ms(pp)));
    rows.push(("auth + TLS: single writer p50 (median of 3)".into(), ms(tp)));
    rows.push((
        "auth + TLS / plain, single writer p50 (target <= 1.2x)".into(),
        format!("{:.2}x", tp.as_secs_f64() / pp.as_secs_f64()),
    ));
    rows.push((
        "plain: 16 writers, 1 table (median of 3)".into(),
        format!("{pr:.0} commits/s"),
    ));
    rows.push((
        "auth + TLS: 16 writers, 1 table (median of 3)".into(),
        format!("{tr:.0} commits/s"),
    ));
    rows.push((
        "auth + TLS / plain, 16-writer commits/s (target >= 0.9x)".into(),
        format!("{:.2}x", tr / pr),
    ));

    // 5. The same commits on S3: a server whose warehouse is a bucket of the project's S3
    //    server (moto, on loopback), behind the counting proxy; beside the floor of one PUT
    //    of a 4 KiB object to the same server, and the local-disk figures above.
    if !args.skip_s3 {
        s3_rows(&mut rows, &args, pct(&lat, 0.5)).await;
    }

    let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    println!(
        "Firn commit benchmark ({} + local disk, gRPC on loopback)",
        if std::env::var_os("FIRN_TEST_POSTGRES").is_some() {
            "PostgreSQL"
        } else {
            "SQLite WAL synchronous=FULL"
        }
    );
    println!("{:<w$}  value", "measure");
    println!("{:-<w$}  {:-<24}", "", "");
    for (k, v) in rows {
        println!("{k:<w$}  {v}");
    }
}

/// The S3 rows: single-writer latency, commits/s with 1 and 16 writers, object-store
/// requests per commit by kind (counted at the wire), and the PUT floor.
async fn s3_rows(rows: &mut Vec<(String, String)>, args: &Args, local_p50: Duration) {
    use firn_tests::s3_proxy::{S3Proxy, WireFaults};
    let proxy = S3Proxy::start(&firn_tests::s3_server(), WireFaults::default()).await;
    let server = TestServer::start_on_s3_at(&proxy.endpoint, None).await;
    let client = server.client().await;
    let n = if args.quick { 100 } else { 500 };
    let (ident, t) = create_table(&client, "bench", "s3single", false).await;
    let files = files(&t.location, "s3", n);
    let before = proxy.counts();
    let lat = sequential(&client, &ident, &files).await;
    let after = proxy.counts();
    let p50 = pct(&lat, 0.5);
    rows.push(("S3: single writer p50".into(), ms(p50)));
    rows.push(("S3: single writer p99".into(), ms(pct(&lat, 0.99))));
    rows.push((
        "S3: 1 writer".into(),
        format!(
            "{:.0} commits/s",
            n as f64 / lat.iter().sum::<Duration>().as_secs_f64()
        ),
    ));
    let per_commit: Vec<String> = after
        .iter()
        .map(|(k, v)| (k, (v - before.get(k).unwrap_or(&0)) as f64 / n as f64))
        .filter(|(_, v)| *v > 0.0)
        .map(|(k, v)| format!("{k} {v:.2}"))
        .collect();
    rows.push((
        "S3: requests per commit".into(),
        if per_commit.is_empty() {
            "none".into()
        } else {
            per_commit.join(", ")
        },
    ));
    let (ident, t) = create_table(&client, "bench", "s3many", false).await;
    let per = if args.quick { 20 } else { 60 };
    let burst = concurrent(&server, &[(ident, t.location)], 16, per, "s3c").await;
    rows.push(("S3: 16 writers, 1 table".into(), burst.to_string()));
    // The floor: one PUT of a 4 KiB object to the same server, through the same proxy.
    let store = server.catalog.warehouse();
    let mut put = Vec::with_capacity(n);
    for i in 0..n {
        let object = store
            .object(&format!("{}put-baseline/{i}", store.root()))
            .expect("baseline path");
        let t = Instant::now();
        store
            .put(&object, vec![0u8; 4096].into())
            .await
            .expect("baseline put");
        put.push(t.elapsed());
    }
    put.sort();
    let floor = pct(&put, 0.5);
    rows.push(("S3 baseline: one 4 KiB PUT p50".into(), ms(floor)));
    rows.push((
        "S3 single writer p50 / one PUT".into(),
        format!("{:.1}x", p50.as_secs_f64() / floor.as_secs_f64()),
    ));
    rows.push((
        "S3 / local disk, single writer p50".into(),
        format!("{:.1}x", p50.as_secs_f64() / local_p50.as_secs_f64()),
    ));
    rows.push((
        "S3: LIST requests, including the 16-writer burst".into(),
        proxy.count("LIST").to_string(),
    ));
}
