//! SIGKILL of the server in the middle of a commit loop: after a restart every
//! acknowledged commit is there, the table loads, and no snapshot is half-visible.

use std::collections::BTreeSet;

use firn_client::{FirnClient, TableIdent};
use firn_tests::*;

use crate::cli::serve;

#[tokio::test]
async fn sigkill_during_commits_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let endpoint = format!("http://{addr}");
    let mut child = serve(&data, port).unwrap();
    wait_for_port(&addr).await;
    let client = FirnClient::connect(&endpoint).await.unwrap();
    let (ident, t) = create_table(&client, "ns", "crash", true).await;

    // Four writers commit as fast as they can; the server is killed under them.
    let mut tasks = Vec::new();
    let acks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for w in 0..4i64 {
        let acks = acks.clone();
        let client = client.clone();
        let ident = ident.clone();
        let location = t.location.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0.. {
                let first = (w * 100_000 + i) * 5;
                let (u, s) = write_parquet(
                    &location,
                    &format!("w{w}-{i}.parquet"),
                    &batch(first..first + 5, i % 2),
                );
                match client
                    .commit_once(append_request(&ident, vec![data_file(&u, s)]))
                    .await
                {
                    Ok(r) => {
                        acked.push((r.snapshot_id, first));
                        acks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    Err(_) => break,
                }
            }
            acked
        }));
    }
    // Killed once enough commits were acknowledged to mean something (at least 1.5 s in,
    // whatever the backends' speed), while the writers are still going.
    let started = std::time::Instant::now();
    while acks.load(std::sync::atomic::Ordering::SeqCst) < 40
        || started.elapsed() < std::time::Duration::from_millis(1500)
    {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "the writers stalled"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    assert!(
        acked.len() > 20,
        "too few commits before the kill to mean anything: {}",
        acked.len()
    );

    drop(client);
    let mut child = serve(&data, port).unwrap();
    wait_for_port(&addr).await;
    let client = FirnClient::connect(&endpoint).await.unwrap();
    let snaps = client.list_snapshots(&ident).await.unwrap();
    let present: BTreeSet<i64> = snaps.iter().map(|s| s.snapshot_id).collect();
    for (id, _) in &acked {
        assert!(
            present.contains(id),
            "acknowledged snapshot {id} is gone after the crash"
        );
    }
    // The manifests and manifest lists written behind the last commits before the kill were
    // rewritten from the catalog at start: every snapshot's are complete files.
    for s in &snaps {
        assert_snapshot_files_on_disk(&s.manifest_list);
    }
    // Whole snapshots only: the rows are exactly the union of the committed files.
    let ids = read_ids(&client, &ident, None).await;
    let total: u64 = snaps.last().unwrap().summary["total-records"]
        .parse()
        .unwrap();
    assert_eq!(ids.len() as u64, total);
    assert_eq!(ids.len(), snaps.len() * 5, "a snapshot is partly visible");
    for (_, first) in &acked {
        assert!(ids.binary_search(first).is_ok() && ids.binary_search(&(first + 4)).is_ok());
    }
    // And the table takes commits again.
    let (u, s) = write_parquet(
        &t.location,
        "after.parquet",
        &batch(9_000_000..9_000_005, 0),
    );
    let after = client
        .commit_once(append_request(
            &TableIdent::new("ns", "crash"),
            vec![data_file(&u, s)],
        ))
        .await
        .unwrap();
    // A graceful stop (SIGTERM) writes what was written behind and empties the catalog of
    // object copies. (A graceful stop waits for clients to disconnect.)
    drop(client);
    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let mut stopped = None;
    for _ in 0..200 {
        // An async sleep: the runtime must run to close the dropped client's connection.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        stopped = child.try_wait().unwrap();
        if stopped.is_some() {
            break;
        }
    }
    if stopped.is_none() {
        child.kill().unwrap();
    }
    assert!(
        stopped.is_some_and(|s| s.success()),
        "firn serve did not stop cleanly on SIGTERM: {stopped:?}"
    );
    let db = served_catalog(&data).await;
    let (pending,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM pending_objects")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(
        pending, 0,
        "object copies left in the catalog after a clean stop"
    );
    let (list,): (String,) =
        sqlx::query_as("SELECT manifest_list FROM snapshots WHERE snapshot_id = $1")
            .bind(after.snapshot_id)
            .fetch_one(&db)
            .await
            .unwrap();
    assert!(object_exists(&list), "the last commit's manifest list");
}
