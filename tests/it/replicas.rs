//! Two Firn servers on one catalog database and warehouse (replicas): their commits race on
//! the pointer swap, and neither may lose, duplicate or wrongly refuse a commit.

use firn_client::proto as pb;
use firn_tests::*;

#[tokio::test]
async fn replicas_share_tables_without_losing_commits() {
    let a = TestServer::start().await;
    let b = a.replica().await;
    let (ca, cb) = (a.client().await, b.client().await);
    let (ident, t) = create_table(&ca, "ns", "shared", false).await;

    // Appends through both replicas at once.
    let mut tasks = Vec::new();
    for w in 0..6i64 {
        let client = if w % 2 == 0 { ca.clone() } else { cb.clone() };
        let (ident, location) = (ident.clone(), t.location.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..20i64 {
                let first = (w * 20 + i) * 2;
                let (u, s) = write_parquet(
                    &location,
                    &format!("w{w}-{i}.parquet"),
                    &batch(first..first + 2, 0),
                );
                client
                    .commit_once(append_request(&ident, vec![data_file(&u, s)]))
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let snaps = ca.list_snapshots(&ident).await.unwrap();
    assert_eq!(snaps.len(), 120);
    for pair in snaps.windows(2) {
        assert_eq!(
            pair[1].parent_snapshot_id,
            Some(pair[0].snapshot_id),
            "history forked"
        );
    }
    assert_eq!(
        read_ids(&cb, &ident, None).await,
        (0..240).collect::<Vec<_>>()
    );

    // B has a cached view of the table; A moves it on; an overwrite based on A's snapshot,
    // sent to B, must not be refused as a conflict.
    let (u, s) = write_parquet(&t.location, "via-a.parquet", &batch(1000..1001, 0));
    let via_a = ca
        .commit_once(append_request(&ident, vec![data_file(&u, s)]))
        .await
        .unwrap();
    let (u2, s2) = write_parquet(&t.location, "ow.parquet", &batch(2000..2003, 0));
    let ow = overwrite_request(
        &ident,
        "overwrite-via-b",
        Some(via_a.snapshot_id),
        vec![data_file(&u2, s2)],
        pb::overwrite_op::Remove::Files(pb::FileList {
            paths: vec![u.clone()],
        }),
    );
    let r = cb
        .commit_once(ow)
        .await
        .expect("B refused a commit based on A's current snapshot");
    assert_eq!(r.parent_snapshot_id, Some(via_a.snapshot_id));
    let ids = read_ids(&ca, &ident, None).await;
    assert!(ids.contains(&2000) && !ids.contains(&1000));
    assert_eq!(ids.len(), 243);
}
