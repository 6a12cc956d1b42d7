//! Scale benchmark: what Iceberg REST readers and writers pay as a table's history grows,
//! and what the first reader pays after a burst of commits.
//!
//! Through a real server in the process (SQLite + local disk, or PostgreSQL when
//! `FIRN_TEST_POSTGRES` names one), for tables with 10, 1,000 and 10,000 snapshots:
//! - REST `loadTable` with `snapshots=all` and `snapshots=refs` (median of runs, on a
//!   kept-alive connection), beside a baseline in the same process: the same `all` bytes
//!   served by a static in-memory HTTP server to the same client;
//! - a REST metadata commit (`set-properties`, as a client changing a table property sends
//!   it), whose time at each size is printed beside its time at 10 snapshots.
//!
//! Then a burst of 1,000 gRPC commits to a fresh table, and the first full read right after
//! it (REST `loadTable`, then the manifest list and every manifest it names, read from the
//! store as an engine planning a scan reads them) beside the second read.
//!
//! Run: `cargo run --release -p firn-bench --bin firn-bench-scale` (`--quick` for a smoke
//! run).

use std::time::{Duration, Instant};

use clap::Parser;
use firn_client::TableIdent;
use firn_tests::{TestServer, build_history, create_table, local_path};

#[derive(Parser)]
struct Args {
    /// Small histories (a smoke run, not the reported figures).
    #[arg(long)]
    quick: bool,
    /// Runs per median.
    #[arg(long, default_value_t = 15)]
    runs: usize,
    /// Commits in the burst before the first read.
    #[arg(long, default_value_t = 1000)]
    burst: usize,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// Times `runs` GETs of `url`: (median, body bytes).
async fn time_get(http: &reqwest::Client, url: &str, runs: usize) -> (Duration, usize) {
    let mut times = Vec::with_capacity(runs);
    let mut bytes = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let r = http.get(url).send().await.expect("GET");
        assert!(r.status().is_success(), "GET {url}: {}", r.status());
        bytes = r.bytes().await.expect("body").len();
        times.push(t.elapsed());
    }
    (median(times), bytes)
}

/// Serves `body` at `/` from memory: the baseline for serving the same bytes.
async fn static_server(body: bytes::Bytes) -> String {
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let body = body.clone();
            async move { ([("content-type", "application/json")], body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/")
}

fn table_url(server: &TestServer, ident: &TableIdent) -> String {
    format!(
        "{}/v1/namespaces/{}/tables/{}",
        server.rest_endpoint, ident.namespace, ident.name
    )
}

/// A REST metadata commit: one table property set, as any client sends it.
async fn set_property(http: &reqwest::Client, url: &str, value: usize) -> Duration {
    let body = serde_json::json!({
        "requirements": [],
        "updates": [{"action": "set-properties", "updates": {"bench.run": value.to_string()}}],
    });
    let t = Instant::now();
    let r = http.post(url).json(&body).send().await.expect("commit");
    let status = r.status();
    let text = r.text().await.expect("body");
    assert!(status.is_success(), "commit: {status}: {text}");
    t.elapsed()
}

/// A full read as an engine plans a scan: the table's metadata, then its current manifest
/// list and every manifest in it, read from the store. Returns the manifests read and how
/// long loadTable took.
async fn full_read(http: &reqwest::Client, url: &str) -> (usize, Duration) {
    let t0 = Instant::now();
    let r = http.get(url).send().await.expect("load");
    assert!(r.status().is_success());
    let load: serde_json::Value = r.json().await.expect("load body");
    let load_time = t0.elapsed();
    let meta = &load["metadata"];
    let current = meta["current-snapshot-id"].as_i64().expect("a snapshot");
    let snap = meta["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["snapshot-id"].as_i64() == Some(current))
        .expect("current snapshot");
    let list_bytes =
        std::fs::read(local_path(snap["manifest-list"].as_str().unwrap())).expect("list");
    let list = iceberg::spec::ManifestList::parse_with_version(
        &list_bytes,
        iceberg::spec::FormatVersion::V2,
    )
    .expect("manifest list");
    for m in list.entries() {
        let bytes = std::fs::read(local_path(&m.manifest_path)).expect("manifest");
        iceberg::spec::Manifest::parse_avro(&bytes).expect("manifest");
    }
    (list.entries().len(), load_time)
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let sizes: &[usize] = if args.quick {
        &[10, 100, 300]
    } else {
        &[10, 1_000, 10_000]
    };
    let burst = if args.quick { 100 } else { args.burst };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-scale");
    let server = TestServer::start_in(&root).await;
    let client = server.client().await;
    let http = reqwest::Client::new();
    let backend = if server.catalog_url.starts_with("postgres") {
        "PostgreSQL"
    } else {
        "SQLite"
    };

    let mut rows = Vec::new();
    for &n in sizes {
        eprintln!("building a table with {n} snapshots...");
        let (ident, t) = create_table(&client, "bench", &format!("h{n}"), false).await;
        build_history(&server.endpoint, &ident, &t.location, n, 8).await;
        let url = table_url(&server, &ident);
        // Settled: the first load writes what the burst left behind.
        time_get(&http, &url, 1).await;
        let (all, bytes) = time_get(&http, &url, args.runs).await;
        let (refs, refs_bytes) = time_get(&http, &format!("{url}?snapshots=refs"), args.runs).await;
        let body = http.get(&url).send().await.unwrap().bytes().await.unwrap();
        let baseline_url = static_server(body).await;
        let (baseline, _) = time_get(&http, &baseline_url, args.runs).await;
        let mut commits = Vec::with_capacity(args.runs);
        for i in 0..args.runs {
            commits.push(set_property(&http, &url, i).await);
        }
        rows.push((n, bytes, all, refs, refs_bytes, baseline, median(commits)));
    }

    eprintln!("a burst of {burst} commits...");
    let (ident, t) = create_table(&client, "bench", "burst", false).await;
    build_history(&server.endpoint, &ident, &t.location, burst, 8).await;
    let url = table_url(&server, &ident);
    let t0 = Instant::now();
    let (manifests, first_load) = full_read(&http, &url).await;
    let first = t0.elapsed();
    let t0 = Instant::now();
    let (_, second_load) = full_read(&http, &url).await;
    let second = t0.elapsed();

    println!(
        "Firn scale benchmark ({backend} + local disk, medians of {} runs)",
        args.runs
    );
    println!(
        "{:>10}  {:>9}  {:>11}  {:>11}  {:>11}  {:>9}  {:>11}  {:>10}",
        "snapshots",
        "metadata",
        "load all",
        "static",
        "load refs",
        "all/static",
        "REST commit",
        "commit/10"
    );
    println!(
        "{:->10}  {:->9}  {:->11}  {:->11}  {:->11}  {:->9}  {:->11}  {:->10}",
        "", "", "", "", "", "", "", ""
    );
    let commit_10 = rows[0].6;
    for (n, bytes, all, refs, _refs_bytes, baseline, commit) in &rows {
        println!(
            "{n:>10}  {:>6.2} MB  {:>11}  {:>11}  {:>11}  {:>9.2}x  {:>11}  {:>9.2}x",
            *bytes as f64 / 1e6,
            ms(*all),
            ms(*baseline),
            ms(*refs),
            all.as_secs_f64() / baseline.as_secs_f64(),
            ms(*commit),
            commit.as_secs_f64() / commit_10.as_secs_f64(),
        );
    }
    println!(
        "targets: load all within 2x of static; refs at most all; REST commit at the largest \
         size within 1.5x of 10"
    );
    println!();
    println!(
        "first full read after {burst} commits: {} (loadTable + manifest list + {manifests} \
         manifests); second: {}; first/second {:.2}x (target <= 3x); of which loadTable {} \
         and {}",
        ms(first),
        ms(second),
        first.as_secs_f64() / second.as_secs_f64(),
        ms(first_load),
        ms(second_load),
    );
}
