//! Compaction memory benchmark: a table of many small Parquet files (SQLite + local disk,
//! through a real gRPC server in the process) compacted into one file, at three input
//! sizes (1x, 2x, 4x).
//! Reports the input and output bytes, the time, and how far the heap rose above where it
//! stood before the run (a counting allocator: bytes allocated and not freed at the peak,
//! unlike resident memory not blurred by what the allocator kept from writing the inputs),
//! with its ratio to the input. Bounded memory shows as a rise that stays flat as the input grows;
//! a compaction that holds its output in memory rises with it.
//!
//! Run: `cargo run --release -p firn-bench --bin firn-bench-compact` (`--quick` for a smoke
//! run).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use clap::Parser;
use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use firn_client::proto as pb;
use firn_tests::{TestServer, append_request, batch, create_table, data_file, write_parquet};

/// `rows` rows in the test table's schema (id, name, ts) with values that barely compress
/// (as real data often does not), so the output is about as large as the input.
fn random_batch(seed: u64, rows: usize) -> RecordBatch {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let ids: Vec<i64> = (0..rows).map(|_| next() as i64).collect();
    let names: Vec<String> = (0..rows).map(|_| format!("{:016x}", next())).collect();
    let ts: Vec<i64> = (0..rows).map(|_| (next() >> 20) as i64).collect();
    RecordBatch::try_new(
        batch(0..1, 0).schema(),
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from(names)),
            Arc::new(TimestampMicrosecondArray::from(ts)),
        ],
    )
    .expect("a batch in the table's schema")
}

#[derive(Parser)]
struct Args {
    /// Small inputs (a smoke run, not the reported figures).
    #[arg(long)]
    quick: bool,
    /// Input files of the smallest run (the others have two and four times as many).
    #[arg(long, default_value_t = 40)]
    files: usize,
    /// Rows per input file (about 3.4 MB of Parquet per 100,000 rows).
    #[arg(long, default_value_t = 100_000)]
    rows: i64,
}

/// The process's heap: bytes allocated now and the most since [`reset_peak`].
struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = CURRENT.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call goes to `System` unchanged; the counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static HEAP: Counting = Counting;

/// Starts a new peak at the heap's current size; returns that size.
fn reset_peak() -> usize {
    let now = CURRENT.load(Ordering::Relaxed);
    PEAK.store(now, Ordering::Relaxed);
    now
}

fn mb(b: u64) -> String {
    format!("{:.1} MB", b as f64 / 1e6)
}

/// One run: `files` files of `rows` rows each, compacted: (input bytes, output bytes,
/// milliseconds, heap rise in bytes).
async fn one(files: usize, rows: i64) -> (u64, u64, u128, u64) {
    let server = TestServer::start().await;
    let client = server.client().await;
    let (ident, t) = create_table(&client, "bench", "small_files", false).await;
    let mut input = 0;
    let mut added = Vec::new();
    for i in 0..files {
        let (uri, size) = write_parquet(
            &t.location,
            &format!("f{i:05}.parquet"),
            &random_batch(i as u64, rows as usize),
        );
        input += size;
        added.push(data_file(&uri, size));
    }
    client
        .commit_once(append_request(&ident, added))
        .await
        .expect("commit");
    // The peak from here on: writing the inputs above is not the compaction's.
    let before = reset_peak();
    let started = Instant::now();
    let r = client
        .compact(pb::CompactRequest {
            ident: firn_tests::pb_ident(&ident),
            ..Default::default()
        })
        .await
        .expect("compact");
    let took = started.elapsed();
    let peak = PEAK.load(Ordering::Relaxed);
    assert_eq!(r.files_rewritten, files as u64, "{r:?}");
    assert_eq!(r.records, files as u64 * rows as u64, "{r:?}");
    (
        input,
        r.bytes_written,
        took.as_millis(),
        peak.saturating_sub(before) as u64,
    )
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let (files, rows) = if args.quick {
        (8, 20_000)
    } else {
        (args.files, args.rows)
    };
    println!("compaction of many small files into one, SQLite + local disk, in-process server");
    println!(
        "{:>6}  {:>10}  {:>10}  {:>8}  {:>10}  {:>10}",
        "files", "input", "output", "time", "heap rise", "rise/input"
    );
    let mut rises = Vec::new();
    for n in [files, 2 * files, 4 * files] {
        let (input, output, ms, rise) = one(n, rows).await;
        println!(
            "{n:>6}  {:>10}  {:>10}  {ms:>6} ms  {:>10}  {:>9.2}x",
            mb(input),
            mb(output),
            mb(rise),
            rise as f64 / input as f64
        );
        rises.push(rise);
    }
    println!(
        "heap rise at 2x and 4x the input: {:.2}x and {:.2}x the rise at 1x (flat: ~1x)",
        rises[1] as f64 / rises[0].max(1) as f64,
        rises[2] as f64 / rises[0].max(1) as f64
    );
}
