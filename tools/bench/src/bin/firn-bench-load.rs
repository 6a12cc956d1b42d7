//! `firn load` memory benchmark: the `firn` binary (built next to this one) loads CSV files
//! of a taxi-like table (8 columns) into a server in this process (SQLite + local disk), at
//! a small baseline size and at the reported sizes.
//! Reports each load's time, rate and peak resident memory (the child's `ru_maxrss`), with
//! the peak's ratio to the baseline load's: memory independent of file size shows as ratios
//! near 1x; a load that holds its input rises with it.
//!
//! Run: `cargo build --release --bins && cargo run --release -p firn-bench --bin
//! firn-bench-load` (`--quick` for a smoke run; `--sizes-mb 100,1000` by default;
//! `FIRN_BIN=path` measures another `firn` binary, e.g. an older build).

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use clap::Parser;
use firn_tests::TestServer;

/// The `firn` binary: `FIRN_BIN`, else the one built beside this benchmark.
fn firn_bin() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("FIRN_BIN") {
        return p.into();
    }
    let bin = std::env::current_exe().unwrap().with_file_name("firn");
    assert!(
        bin.exists(),
        "{} is missing: cargo build --release --bins",
        bin.display()
    );
    bin
}

#[derive(Parser)]
struct Args {
    /// Small inputs (a smoke run, not the reported figures).
    #[arg(long)]
    quick: bool,
    /// Sizes of the CSV files loaded, in MB (after a baseline of `--baseline-mb`).
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    sizes_mb: Vec<u64>,
    #[arg(long, default_value_t = 4)]
    baseline_mb: u64,
}

const SCHEMA: &str = "id:long not null,vendor:string,pickup:timestamp,dropoff:timestamp,\
                      passengers:int,distance:double,fare:double,tip:double";

/// Writes a CSV file of about `mb` megabytes in the table's columns; returns its rows.
fn write_csv(path: &Path, mb: u64) -> u64 {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    writeln!(out, "id,vendor,pickup,dropoff,passengers,distance,fare,tip").unwrap();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (mut written, mut rows) = (0u64, 0u64);
    let vendors = ["CMT", "VTS", "DDS", "NYC"];
    while written < mb * 1_000_000 {
        let r = next();
        let day = 1 + (r % 28);
        let (h, m, s) = ((r >> 8) % 24, (r >> 16) % 60, (r >> 24) % 60);
        let line = format!(
            "{rows},{},2026-11-{day:02} {h:02}:{m:02}:{s:02},2026-11-{day:02} {h:02}:{:02}:{s:02},{},{:.2},{:.2},{:.2}\n",
            vendors[(r >> 32) as usize % 4],
            (m + 7) % 60,
            1 + (r >> 36) % 5,
            ((r >> 40) % 3000) as f64 / 100.0,
            ((r >> 44) % 9000) as f64 / 100.0,
            ((r >> 50) % 2000) as f64 / 100.0,
        );
        out.write_all(line.as_bytes()).unwrap();
        written += line.len() as u64;
        rows += 1;
    }
    out.flush().unwrap();
    rows
}

/// Runs `firn load` of `file` into `table`: (milliseconds, peak RSS in bytes).
#[expect(
    clippy::zombie_processes,
    reason = "wait4 reaps the child, returning its resource usage"
)]
fn load(endpoint: &str, table: &str, file: &Path) -> (u128, u64) {
    let started = Instant::now();
    let child = std::process::Command::new(firn_bin())
        .args(["load", table])
        .arg(file)
        .env("FIRN_ENDPOINT", endpoint)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("run firn load");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: a zeroed rusage is valid; wait4 fills it for the child just spawned.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4");
    let took = started.elapsed().as_millis();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "firn load {} failed",
        file.display()
    );
    (took, usage.ru_maxrss as u64 * 1024)
}

fn mb(b: u64) -> String {
    format!("{:.0} MB", b as f64 / 1e6)
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let (baseline, sizes) = if args.quick {
        (1, vec![4, 16])
    } else {
        (args.baseline_mb, args.sizes_mb)
    };
    let server = TestServer::start().await;
    let client = server.client().await;
    client.create_namespace("bench").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    println!("firn load of a CSV file (8 columns), SQLite + local disk, server in this process");
    println!(
        "{:>8}  {:>10}  {:>9}  {:>9}  {:>9}  {:>9}",
        "input", "rows", "time", "rate", "peak RSS", "/baseline"
    );
    let mut base_rss = 0;
    for (i, size) in std::iter::once(baseline).chain(sizes).enumerate() {
        let table = format!("bench.trips{i}");
        let out = std::process::Command::new(firn_bin())
            .args(["table", "create", &table, "--schema", SCHEMA])
            .env("FIRN_ENDPOINT", &server.endpoint)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let file = dir.path().join(format!("trips{i}.csv"));
        let rows = write_csv(&file, size);
        let bytes = std::fs::metadata(&file).unwrap().len();
        let (ms, rss) = load(&server.endpoint, &table, &file);
        std::fs::remove_file(&file).unwrap();
        let ident = firn_client::TableIdent::new("bench", format!("trips{i}"));
        let snap = client
            .list_snapshots(&ident)
            .await
            .unwrap()
            .pop()
            .expect("the load committed");
        assert_eq!(
            snap.summary["total-records"],
            rows.to_string(),
            "every row loaded"
        );
        if i == 0 {
            base_rss = rss;
        }
        println!(
            "{:>8}  {rows:>10}  {:>6} ms  {:>6.0} MB/s  {:>9}  {:>8.2}x",
            mb(bytes),
            ms,
            bytes as f64 / 1e6 / (ms.max(1) as f64 / 1e3),
            mb(rss),
            rss as f64 / base_rss.max(1) as f64
        );
    }
}
