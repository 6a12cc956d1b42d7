//! A faulty object store (latency, failing PUT/GET, a LIST that misses recent objects)
//! loses no acknowledged commit, while a reader that lists the bucket loses files.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use firn_client::RetryPolicy;
use firn_core::storage::fault::FaultConfig;
use firn_tests::*;
use futures::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt};

#[tokio::test]
async fn commits_never_list_the_warehouse() {
    let server = TestServer::start_with(Some(FaultConfig::default())).await;
    let client = server.client().await;
    let (ident, t) = create_table(&client, "ns", "nolist", true).await;
    let store = server.store.as_ref().unwrap();
    let heads_before = store.counts.heads.load(Ordering::Relaxed);
    let gets_before = store.counts.gets.load(Ordering::Relaxed);
    for i in 0..20 {
        let (u, s) = write_parquet(
            &t.location,
            &format!("f{i}.parquet"),
            &batch(i * 10..i * 10 + 10, i % 4),
        );
        client
            .commit_once(append_request(&ident, vec![data_file(&u, s)]))
            .await
            .unwrap();
    }
    // Each added file is checked with one suffix read (its size and footer), no HEAD.
    assert!(
        store.counts.gets.load(Ordering::Relaxed) - gets_before >= 20,
        "every added file is read"
    );
    assert_eq!(
        store.counts.heads.load(Ordering::Relaxed) - heads_before,
        0,
        "an added file's size comes with its footer, not from a HEAD"
    );
    client.load_table(&ident, true).await.unwrap();
    client.list_snapshots(&ident).await.unwrap();
    assert_eq!(
        store.counts.lists.load(Ordering::Relaxed),
        0,
        "a commit path listed the warehouse"
    );
}

#[tokio::test]
async fn faults_lose_no_acknowledged_commit_but_listing_does() {
    let faults = FaultConfig {
        seed: 7,
        latency: Some(Duration::from_micros(200)..Duration::from_millis(3)),
        put_error_rate: 0.05,
        put_ambiguous_rate: 0.05,
        get_error_rate: 0.05,
        list_lag: Duration::from_secs(30),
        delete_error_rate: 0.0,
    };
    let server = TestServer::start_with(Some(faults)).await;
    let client = server.client().await.with_retry(RetryPolicy {
        max_attempts: 100,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(20),
    });
    let (ident, t) = create_table(&client, "ns", "faulty", false).await;

    let writers = 4i64;
    let per = 25i64;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let client = client.clone();
        let ident = ident.clone();
        let location = t.location.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..per {
                let first = (w * per + i) * 4;
                // The writer's own storage is healthy; the server's view of it is faulty.
                let (u, s) = write_parquet(
                    &location,
                    &format!("w{w}-{i}.parquet"),
                    &batch(first..first + 4, 0),
                );
                let req = append_request(&ident, vec![data_file(&u, s)]);
                let r = client
                    .commit(req, |r| async move { Ok(Some(r)) })
                    .await
                    .expect("a commit failed for good under transient faults");
                acked.push((r.snapshot_id, first));
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    assert_eq!(acked.len() as i64, writers * per);

    // Every acknowledged commit is a snapshot, once; every row is there.
    let snaps = client.list_snapshots(&ident).await.unwrap();
    let snap_ids: BTreeSet<i64> = snaps.iter().map(|s| s.snapshot_id).collect();
    for (id, _) in &acked {
        assert!(
            snap_ids.contains(id),
            "acknowledged snapshot {id} is missing"
        );
    }
    assert_eq!(snaps.len(), acked.len(), "a retried commit applied twice");
    let expected: Vec<i64> = (0..writers * per * 4).collect();
    assert_eq!(read_ids(&client, &ident, None).await, expected);

    // A reader that discovers data files by listing the table's data directory, through
    // the same store, misses the files written in the last `list_lag`: data loss.
    let store = server.store.as_ref().unwrap().clone();
    let prefix = server
        .catalog
        .warehouse()
        .location("location", &format!("{}/data", t.location))
        .unwrap()
        .key();
    // Files written through the faulty store are the ones it tracks; write the data files
    // of a last commit through it, as a writer on that store would.
    let (u, _) = write_parquet(&t.location, "late.parquet", &batch(10_000..10_004, 0));
    let bytes = read_object(&u).unwrap();
    let path = server.catalog.warehouse().object(&u).unwrap().key().clone();
    loop {
        if store.put(&path, bytes.clone().into()).await.is_ok() {
            break;
        }
    }
    let req = append_request(&ident, vec![data_file(&u, bytes.len() as u64)]);
    client
        .commit(req, |r| async move { Ok(Some(r)) })
        .await
        .unwrap();
    let listed: Vec<_> = store.list(Some(&prefix)).collect().await;
    let listed: BTreeSet<String> = listed
        .into_iter()
        .filter_map(|m| m.ok())
        .map(|m| m.location.to_string())
        .collect();
    assert!(
        !listed.iter().any(|p| p.ends_with("late.parquet")),
        "the listing saw the new file: the fault injection did not bite"
    );
    assert!(
        read_ids(&client, &ident, None).await.contains(&10_003),
        "Firn's metadata has it"
    );
}
