//! `tools/seed-failure-demo.sh`: the seed failure on S3, both ways, with the counts printed
//! (see `firn_tests::seed_failure`). Arguments: TASKS FILES_PER_TASK LIST_LAG_MS.

use std::time::Duration;

#[tokio::main]
async fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("TASKS FILES_PER_TASK LIST_LAG_MS"))
        .collect();
    let [tasks, files, lag_ms] = args[..] else {
        eprintln!("usage: seed-failure TASKS FILES_PER_TASK LIST_LAG_MS");
        std::process::exit(2);
    };
    println!(
        "{tasks} tasks write {files} files each to S3, whose LIST leaves out objects younger \
         than {lag_ms} ms"
    );
    let o = firn_tests::seed_failure::run(
        tasks as usize,
        files as usize,
        Duration::from_millis(lag_ms),
    )
    .await;
    println!(
        "listing-based commit: {} files written, {} published, {} lost",
        o.written,
        o.published_by_listing,
        o.written - o.published_by_listing
    );
    println!(
        "commit through Firn:  {} files written, {} committed, {} lost ({} rows read back)",
        o.written,
        o.committed_through_firn,
        o.written - o.committed_through_firn,
        o.rows_through_firn
    );
}
