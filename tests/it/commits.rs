//! Commits through a real gRPC server, read back with iceberg-rust.

use firn_client::{TableWriter, WriteMode, WriterOptions, proto as pb};
use firn_tests::*;

#[tokio::test]
async fn append_without_stats_reads_footer_and_iceberg_reads_it() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let (ident, t) = create_table(&client, "ns", "events", true).await;
    let (a, sa) = write_parquet(&t.location, "a.parquet", &batch(0..10, 0));
    let (b, sb) = write_parquet(&t.location, "b.parquet", &batch(10..25, 1));
    let r = client
        .commit_once(append_request(
            &ident,
            vec![data_file(&a, sa), data_file(&b, sb)],
        ))
        .await
        .unwrap();
    assert!(!r.replayed);
    assert_eq!(r.sequence_number, 1);

    let snaps = client.list_snapshots(&ident).await.unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].summary["added-records"], "25");
    assert_eq!(snaps[0].summary["total-data-files"], "2");
    assert_eq!(
        read_ids(&client, &ident, None).await,
        (0..25).collect::<Vec<_>>()
    );

    // The footer-derived partition of each file is its day.
    let t = client.load_table(&ident, true).await.unwrap();
    assert_eq!(t.current_snapshot_id, Some(r.snapshot_id));
    assert!(t.metadata_json.contains(&r.snapshot_id.to_string()));
}

#[tokio::test]
async fn table_writer_partitions_rolls_and_commits() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let (ident, _) = create_table(&client, "ns", "w", true).await;
    let mut w = TableWriter::new(&client, &ident, WriterOptions::default())
        .await
        .unwrap();
    w.write(&batch(0..100, 0)).await.unwrap();
    w.write(&batch(100..150, 2)).await.unwrap();
    let r = w.commit().await.unwrap();
    let snap = client.get_snapshot(&ident, r.snapshot_id).await.unwrap();
    assert_eq!(snap.summary["added-records"], "150");
    assert_eq!(
        snap.summary["added-data-files"], "2",
        "one file per day partition"
    );
    assert_eq!(
        read_ids(&client, &ident, None).await,
        (0..150).collect::<Vec<_>>()
    );

    // Overwrite replaces everything; the old snapshot still reads its rows.
    let mut w = TableWriter::new(
        &client,
        &ident,
        WriterOptions {
            mode: WriteMode::Overwrite,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    w.write(&batch(1000..1010, 5)).await.unwrap();
    let r2 = w.commit().await.unwrap();
    let snap2 = client.get_snapshot(&ident, r2.snapshot_id).await.unwrap();
    assert_eq!(snap2.operation, "overwrite");
    assert_eq!(snap2.summary["deleted-records"], "150");
    assert_eq!(snap2.summary["total-records"], "10");
    assert_eq!(
        read_ids(&client, &ident, None).await,
        (1000..1010).collect::<Vec<_>>()
    );
    assert_eq!(
        read_ids(&client, &ident, Some(r.snapshot_id)).await.len(),
        150
    );
}

#[tokio::test]
async fn delete_and_partition_overwrite() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let (ident, t) = create_table(&client, "ns", "d", true).await;
    let mut files = Vec::new();
    for day in 0..3 {
        let (u, s) = write_parquet(
            &t.location,
            &format!("d{day}.parquet"),
            &batch(day * 10..day * 10 + 10, day),
        );
        files.push((u, s));
    }
    let r1 = client
        .commit_once(append_request(
            &ident,
            files.iter().map(|(u, s)| data_file(u, *s)).collect(),
        ))
        .await
        .unwrap();
    // Delete day 1's file.
    let del = delete_request(
        &ident,
        "delete-1",
        Some(r1.snapshot_id),
        vec![files[1].0.clone()],
    );
    let r2 = client.commit_once(del).await.unwrap();
    let ids = read_ids(&client, &ident, None).await;
    assert_eq!(ids, (0..10).chain(20..30).collect::<Vec<_>>());
    assert_eq!(
        client
            .get_snapshot(&ident, r2.snapshot_id)
            .await
            .unwrap()
            .operation,
        "delete"
    );

    // Replace day 2 only (dynamic partition overwrite).
    let (u, s) = write_parquet(&t.location, "d2b.parquet", &batch(200..205, 2));
    let ow = overwrite_request(
        &ident,
        "ow-1",
        Some(r2.snapshot_id),
        vec![data_file(&u, s)],
        pb::overwrite_op::Remove::AddedPartitions(true),
    );
    client.commit_once(ow).await.unwrap();
    assert_eq!(
        read_ids(&client, &ident, None).await,
        (0..10).chain(200..205).collect::<Vec<_>>()
    );
    // Every snapshot still reads exactly its rows.
    assert_eq!(
        read_ids(&client, &ident, Some(r1.snapshot_id)).await,
        (0..30).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn retried_commit_id_applies_once() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let (ident, t) = create_table(&client, "ns", "r", false).await;
    let (u, s) = write_parquet(&t.location, "x.parquet", &batch(0..5, 0));
    let req = append_request(&ident, vec![data_file(&u, s)]);
    // The same request sent concurrently and then again: one snapshot.
    let (a, b) = tokio::join!(
        client.commit_once(req.clone()),
        client.commit_once(req.clone())
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let c = client.commit_once(req.clone()).await.unwrap();
    assert_eq!(a.snapshot_id, b.snapshot_id);
    assert_eq!(a.snapshot_id, c.snapshot_id);
    assert!(c.replayed);
    assert!(
        a.replayed != b.replayed,
        "exactly one of the first two applied"
    );
    assert_eq!(client.list_snapshots(&ident).await.unwrap().len(), 1);
    assert_eq!(read_ids(&client, &ident, None).await.len(), 5);
}

#[tokio::test]
async fn conflicting_overwrites_exactly_one_wins() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let (ident, t) = create_table(&client, "ns", "c", false).await;
    let (u, s) = write_parquet(&t.location, "base.parquet", &batch(0..5, 0));
    let base = client
        .commit_once(append_request(&ident, vec![data_file(&u, s)]))
        .await
        .unwrap();
    let overwrite = |name: &str, ids: std::ops::Range<i64>| {
        let (u, s) = write_parquet(&t.location, name, &batch(ids, 0));
        overwrite_request(
            &ident,
            name,
            Some(base.snapshot_id),
            vec![data_file(&u, s)],
            pb::overwrite_op::Remove::All(true),
        )
    };
    let (x, y) = (
        overwrite("x.parquet", 100..110),
        overwrite("y.parquet", 200..220),
    );
    let (rx, ry) = tokio::join!(client.commit_once(x), client.commit_once(y));
    let loser = match (rx, ry) {
        (Ok(_), Err(e)) | (Err(e), Ok(_)) => e,
        other => panic!("expected exactly one winner: {other:?}"),
    };
    assert_eq!(loser.code(), Some(tonic::Code::Aborted));
    assert!(
        loser.to_string().contains(&base.snapshot_id.to_string()),
        "{loser}"
    );
    let ids = read_ids(&client, &ident, None).await;
    assert!(ids == (100..110).collect::<Vec<_>>() || ids == (200..220).collect::<Vec<_>>());
    assert_eq!(client.list_snapshots(&ident).await.unwrap().len(), 2);
}

#[tokio::test]
async fn manifest_list_stays_bounded_as_history_grows() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let (ident, t) = create_table(&client, "ns", "m", false).await;
    for i in 0..300i64 {
        let (u, s) = write_parquet(
            &t.location,
            &format!("f{i}.parquet"),
            &batch(i * 2..i * 2 + 2, 0),
        );
        client
            .commit_once(append_request(&ident, vec![data_file(&u, s)]))
            .await
            .unwrap();
    }
    let snaps = client.list_snapshots(&ident).await.unwrap();
    assert_eq!(snaps.len(), 300);
    let last = snaps.last().unwrap();
    let bytes = read_object(&last.manifest_list).unwrap();
    let list =
        iceberg::spec::ManifestList::parse_with_version(&bytes, iceberg::spec::FormatVersion::V2)
            .unwrap();
    assert!(
        list.entries().len() <= 2 * firn_core::commit::MERGE_FAN_IN,
        "{} manifests after 300 appends",
        list.entries().len()
    );
    assert_eq!(
        read_ids(&client, &ident, None).await,
        (0..600).collect::<Vec<_>>()
    );
    // Older snapshots are intact too.
    assert_eq!(
        read_ids(&client, &ident, Some(snaps[99].snapshot_id)).await,
        (0..200).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn paging_through_snapshots() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let (ident, t) = create_table(&client, "ns", "p", false).await;
    for i in 0..7i64 {
        let (u, s) = write_parquet(&t.location, &format!("f{i}.parquet"), &batch(i..i + 1, 0));
        client
            .commit_once(append_request(&ident, vec![data_file(&u, s)]))
            .await
            .unwrap();
    }
    let mut raw = client.raw();
    let mut token = String::new();
    let mut seen = Vec::new();
    loop {
        let page = raw
            .list_snapshots(pb::ListSnapshotsRequest {
                ident: pb_ident(&ident),
                page_size: 3,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.snapshots.len() <= 3);
        seen.extend(page.snapshots.iter().map(|s| s.sequence_number));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, (1..=7).collect::<Vec<_>>());
}

/// Every file a reader outside the server can learn of exists when it is handed out,
/// although a commit's manifest and manifest list are written behind it: a snapshot listing,
/// the metadata file of a load, and another replica's view right after the commits.
#[tokio::test]
async fn metadata_written_behind_commits_is_in_the_store_before_readers_see_it() {
    let server = TestServer::start().await;
    let replica = server.replica().await;
    let (client, other) = (server.client().await, replica.client().await);
    let (ident, t) = create_table(&client, "ns", "behind", false).await;
    let mut first = None;
    for i in 0..30i64 {
        let (u, s) = write_parquet(&t.location, &format!("f{i}.parquet"), &batch(i..i + 1, 0));
        let r = client
            .commit_once(append_request(&ident, vec![data_file(&u, s)]))
            .await
            .unwrap();
        first.get_or_insert(r.snapshot_id);
    }
    // Straight after the last commit: every manifest list another replica lists, and every
    // manifest in it, is a complete file on disk.
    let snaps = other.list_snapshots(&ident).await.unwrap();
    assert_eq!(snaps.len(), 30);
    for s in &snaps {
        assert_snapshot_files_on_disk(&s.manifest_list);
    }
    // The metadata file a load hands out names only files that exist; iceberg-rust reads
    // the first and the last snapshot from it.
    let (u, s) = write_parquet(&t.location, "last.parquet", &batch(100..101, 0));
    client
        .commit_once(append_request(&ident, vec![data_file(&u, s)]))
        .await
        .unwrap();
    let loaded = client.load_table(&ident, true).await.unwrap();
    let meta: serde_json::Value = serde_json::from_str(&loaded.metadata_json).unwrap();
    let lists: Vec<&str> = meta["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["manifest-list"].as_str().unwrap())
        .collect();
    assert_eq!(lists.len(), 31);
    lists.iter().for_each(|l| assert_snapshot_files_on_disk(l));
    assert_eq!(read_ids(&client, &ident, first).await, vec![0]);
    let mut all: Vec<i64> = (0..30).collect();
    all.push(100);
    assert_eq!(read_ids(&other, &ident, None).await, all);
}
