//! The failure Firn exists to end, reproduced on S3 and beaten: one job's tasks write their
//! files to a bucket whose LIST is only eventually consistent (a [`FaultyStore`] over the
//! real S3 client leaves out objects younger than `lag`), then
//! - a **listing-based commit** (what Hadoop's output committers do) lists the output
//!   prefix and publishes what it found: files LIST did not show yet are silently lost;
//! - the **same job through Firn** hands the paths its tasks wrote to one Firn commit; a
//!   reader finds files only through committed metadata, so none is lost.
//!
//! Run by `s3::the_seed_failure_loses_files_by_listing_and_none_through_firn` and, with its
//! counts printed, by `tools/seed-failure-demo.sh`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use firn_core::storage::fault::{FaultConfig, FaultyStore};
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::*;

/// What each way of committing the job kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Files the job's tasks wrote (each way).
    pub written: usize,
    /// Files the listing-based commit published.
    pub published_by_listing: usize,
    /// Files a reader of the Firn table finds, and its rows (`rows_each` per file).
    pub committed_through_firn: usize,
    pub rows_through_firn: usize,
}

/// Runs the job both ways: `tasks` tasks each write `files_per_task` Parquet files of
/// `rows_each` rows, one after another with a short pause, while LIST lags by `lag`.
pub async fn run(tasks: usize, files_per_task: usize, lag: Duration) -> Outcome {
    let rows_each = 10i64;
    let faults = FaultConfig {
        list_lag: lag,
        ..Default::default()
    };
    let server = TestServer::start_on_s3(Some(faults.clone())).await;
    let client = server.client().await;
    let (ident, t) = create_table(&client, "job", "events", false).await;

    // The tasks, writing to S3 through the lagging view of it, as each of their clients sees
    // the store. The same files go to a plain output prefix (for the listing committer) and
    // to the table's location (for Firn).
    let (store, _) = store_of(&t.location);
    let lagging = Arc::new(FaultyStore::new(store, faults));
    let job_output = format!("{}/_listing-job", t.location);
    let writes = (0..tasks).map(|task| {
        let (lagging, job_output, location) =
            (lagging.clone(), job_output.clone(), t.location.clone());
        async move {
            let mut files = Vec::new();
            for i in 0..files_per_task {
                let first = ((task * files_per_task + i) as i64) * rows_each;
                let bytes = parquet_bytes(&batch(first..first + rows_each, 0));
                let name = format!("part-{task:03}-{i:03}.parquet");
                for dir in [&job_output, &format!("{location}/data")] {
                    let (_, key) = store_of(&format!("{dir}/{name}"));
                    lagging
                        .put(&key, bytes.clone().into())
                        .await
                        .expect("task write");
                }
                files.push((format!("{location}/data/{name}"), bytes.len() as u64));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            files
        }
    });
    let written: Vec<(String, u64)> = futures::future::join_all(writes)
        .await
        .into_iter()
        .flatten()
        .collect();

    // 1. The listing-based commit: whatever LIST shows now is the job's output.
    let (_, prefix) = store_of(&job_output);
    let listed: Vec<_> = lagging
        .list(Some(&prefix))
        .try_collect()
        .await
        .expect("list");
    let published = listed
        .iter()
        .filter(|m| m.location.as_ref().ends_with(".parquet"))
        .count();

    // 2. Through Firn: the driver commits the paths its tasks reported, in one commit.
    let files = written.iter().map(|(u, s)| data_file(u, *s)).collect();
    client
        .commit_once(append_request(&ident, files))
        .await
        .expect("the job's commit");
    let plan = client.plan_scan(&ident, None, None).await.expect("plan");
    let committed: BTreeSet<&str> = plan.files.iter().map(|f| f.path.as_str()).collect();
    let rows = read_ids(&client, &ident, None).await.len();
    // Firn's own store never listed, lagging or not.
    let counts = &server.store.as_ref().unwrap().counts;
    let firn_lists = counts.lists.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(firn_lists, 0, "Firn listed the bucket");
    Outcome {
        written: written.len(),
        published_by_listing: published,
        committed_through_firn: committed.len(),
        rows_through_firn: rows,
    }
}
