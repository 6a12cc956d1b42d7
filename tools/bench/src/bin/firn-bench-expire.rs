//! Expiry benchmark: a table with a long copy-on-write history (every commit replaces the
//! previous data file, so each expired snapshot leaves a data file, a manifest and a
//! manifest list that nothing else needs), expired down to its newest snapshots. Reports
//! the time to plan (dry run) and to run the expiry, the cost per deleted object, and the
//! storage before and after. Baseline, in the same process and store: deleting the same
//! number of plain files through the warehouse, one by one as expiry does.
//!
//! Run: `cargo run --release -p firn-bench --bin firn-bench-expire` (`--quick` for a smoke
//! run).

use std::path::Path;
use std::time::{Duration, Instant};

use clap::Parser;
use firn_client::proto as pb;
use firn_tests::{
    TestServer, batch, create_table, data_file, local_path, overwrite_request, write_parquet,
};

#[derive(Parser)]
struct Args {
    /// A small history (a smoke run, not the reported figures).
    #[arg(long)]
    quick: bool,
    /// Snapshots in the history.
    #[arg(long, default_value_t = 10_000)]
    snapshots: usize,
    /// Snapshots kept.
    #[arg(long, default_value_t = 10)]
    keep: u32,
}

/// Files and bytes under `dir`.
fn usage(dir: &Path) -> (u64, u64) {
    let mut out = (0, 0);
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                let (f, b) = usage(&p);
                out.0 += f;
                out.1 += b;
            } else if let Ok(m) = p.metadata() {
                out.0 += 1;
                out.1 += m.len();
            }
        }
    }
    out
}

fn mb(b: u64) -> String {
    format!("{:.1} MB", b as f64 / 1e6)
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let snapshots = if args.quick { 300 } else { args.snapshots };
    let server = TestServer::start().await;
    let client = server.client().await;
    let (ident, t) = create_table(&client, "bench", "history", false).await;
    let started = Instant::now();
    let mut base = None;
    for i in 0..snapshots {
        let (uri, size) = write_parquet(
            &t.location,
            &format!("f{i:06}.parquet"),
            &batch(i as i64 * 10..i as i64 * 10 + 10, 0),
        );
        let r = client
            .commit_once(overwrite_request(
                &ident,
                &format!("c{i}"),
                base,
                vec![data_file(&uri, size)],
                pb::overwrite_op::Remove::All(true),
            ))
            .await
            .expect("commit");
        base = Some(r.snapshot_id);
    }
    let build = started.elapsed();
    // One load writes the current metadata file, as readers would.
    client.load_table(&ident, false).await.unwrap();
    let table_dir = local_path(&t.location);
    let (files_before, bytes_before) = usage(&table_dir);

    let req = |dry_run| pb::ExpireSnapshotsRequest {
        ident: firn_tests::pb_ident(&ident),
        older_than_ms: Some(i64::MAX),
        retain_last: Some(args.keep),
        dry_run,
        ..Default::default()
    };
    let t0 = Instant::now();
    let dry = client
        .expire_snapshots(req(true))
        .await
        .unwrap()
        .tables
        .remove(0);
    let plan_time = t0.elapsed();
    let t0 = Instant::now();
    let r = client
        .expire_snapshots(req(false))
        .await
        .unwrap()
        .tables
        .remove(0);
    let expire_time = t0.elapsed();
    let (files_after, bytes_after) = usage(&table_dir);
    let deleted = r.data_files_deleted
        + r.delete_files_deleted
        + r.manifests_deleted
        + r.manifest_lists_deleted
        + r.metadata_files_deleted;
    assert_eq!(r.expired_snapshot_ids.len(), dry.expired_snapshot_ids.len());
    assert_eq!(r.failed_deletes, 0);
    assert_eq!(
        client.list_snapshots(&ident).await.unwrap().len(),
        args.keep as usize
    );

    // Baseline: the same number of small objects deleted through the same store, one by one.
    let scratch = format!("{}/scratch", t.location);
    let mut uris = Vec::new();
    for i in 0..deleted {
        let uri = format!("{scratch}/x{i}");
        std::fs::create_dir_all(local_path(&scratch)).unwrap();
        std::fs::write(local_path(&uri), b"0123456789").unwrap();
        uris.push(uri);
    }
    let warehouse = server.catalog.warehouse().clone();
    let scope = firn_core::storage::TableScope::new(
        warehouse.location("location", &t.location).unwrap(),
        [],
    );
    let owned: Vec<_> = uris
        .iter()
        .map(|u| scope.own(&warehouse.object(u).unwrap()).unwrap())
        .collect();
    let t0 = Instant::now();
    for o in &owned {
        warehouse.delete(o).await.unwrap();
    }
    let raw = t0.elapsed();

    let per = |d: Duration| d.as_secs_f64() * 1e6 / deleted.max(1) as f64;
    println!("| metric | value |");
    println!("| --- | --- |");
    println!(
        "| history built | {snapshots} overwrite commits in {:.1} s |",
        build.as_secs_f64()
    );
    println!(
        "| snapshots expired / kept | {} / {} |",
        r.expired_snapshot_ids.len(),
        r.retained_snapshots
    );
    println!(
        "| objects deleted | {deleted} ({} data, {} manifests, {} manifest lists, {} metadata) |",
        r.data_files_deleted,
        r.manifests_deleted,
        r.manifest_lists_deleted,
        r.metadata_files_deleted
    );
    println!(
        "| plan (dry run) | {:.0} ms |",
        plan_time.as_secs_f64() * 1e3
    );
    println!(
        "| expire (plan + commit + delete) | {:.0} ms |",
        expire_time.as_secs_f64() * 1e3
    );
    println!("| cost per deleted object | {:.0} µs |", per(expire_time));
    println!("| baseline: plain delete per object | {:.0} µs |", per(raw));
    println!(
        "| ratio expire / plain delete | {:.2} |",
        expire_time.as_secs_f64() / raw.as_secs_f64().max(1e-9)
    );
    println!(
        "| storage before | {files_before} objects, {} |",
        mb(bytes_before)
    );
    println!(
        "| storage after | {files_after} objects, {} |",
        mb(bytes_after)
    );
    println!("| bytes freed (reported) | {} |", mb(r.bytes_freed));
}
