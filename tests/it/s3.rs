//! S3 as its own backend, on the test S3 server (moto, started by `tools/start-s3.sh`):
//! what only S3 has. Wrong settings refused at start, object requests per operation (no
//! LIST anywhere but the orphan sweep), put-if-absent. The conformance modules run on S3
//! too (tools/test.sh's S3 phases).

use std::process::Command;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use firn_core::storage::fault::FaultConfig;
use firn_core::{Warehouse, WarehouseConfig};
use firn_tests::*;

/// `firn serve` on a warehouse with `options`: it must not start, and says why in one line.
fn refused_start(warehouse: &str, options: &[String]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(firn_bin());
    cmd.args(["serve", "--data-dir"])
        .arg(dir.path())
        .args([
            "--grpc-listen",
            "127.0.0.1:0",
            "--rest-listen",
            "127.0.0.1:0",
        ])
        .args(["--admin-listen", "127.0.0.1:0", "--warehouse", warehouse])
        .env_remove("FIRN_LOG");
    for o in options {
        cmd.args(["--warehouse-option", o]);
    }
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "started with {options:?}: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line, not: {err}");
    assert!(err.contains("warehouse"), "{err}");
    lines[0].to_string()
}

#[test]
fn a_wrong_s3_setting_stops_the_start_with_one_line_naming_it() {
    let endpoint = s3_server();
    let keys = [
        "access_key_id=firn-test".to_string(),
        "secret_access_key=firn-test-secret".to_string(),
        "region=us-east-1".to_string(),
    ];
    let with = |extra: &[String]| [&keys[..], extra].concat();
    let bucket = format!("s3://{TEST_BUCKET}/start-check");

    // Plain http:// without allowing it: refused before any request.
    let e = refused_start(&bucket, &with(&[format!("endpoint={endpoint}")]));
    assert!(
        e.contains("allow_http=true") && e.contains(&endpoint),
        "{e}"
    );
    // Not a URL.
    let e = refused_start(&bucket, &with(&["endpoint=127.0.0.1:9900".to_string()]));
    assert!(e.contains("endpoint=127.0.0.1:9900"), "{e}");
    // A bucket the store does not have.
    let e = refused_start(
        "s3://no-such-bucket-here/wh",
        &with(&[format!("endpoint={endpoint}"), "allow_http=true".into()]),
    );
    assert!(
        e.contains("\"no-such-bucket-here\" does not exist") && e.contains(&endpoint),
        "{e}"
    );
    // Nothing listens at the endpoint.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let e = refused_start(
        &bucket,
        &with(&[format!("endpoint={closed}"), "allow_http=true".into()]),
    );
    assert!(e.contains("cannot reach") && e.contains(&closed), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_s3_nothing_that_decides_table_contents_lists_and_commits_cost_few_requests() {
    let server = TestServer::start_on_s3(Some(FaultConfig::default())).await;
    let store = server.store.clone().unwrap();
    let counts = &store.counts;
    let client = server.client().await;
    let (ident, t) = create_table(&client, "ns", "t", true).await;
    let mut snapshots = Vec::new();
    let mut per_commit = Vec::new();
    for i in 0..6 {
        let (u, s) = write_parquet(
            &t.location,
            &format!("f{i}.parquet"),
            &batch(i * 10..i * 10 + 10, i),
        );
        let (puts, heads) = (
            counts.puts.load(Ordering::SeqCst),
            counts.heads.load(Ordering::SeqCst),
        );
        let r = client
            .commit_once(append_request(&ident, vec![data_file(&u, s)]))
            .await
            .unwrap();
        per_commit.push((
            counts.puts.load(Ordering::SeqCst) - puts,
            counts.heads.load(Ordering::SeqCst) - heads,
        ));
        snapshots.push(r.snapshot_id);
    }
    eprintln!("object requests per append commit (PUTs, HEADs): {per_commit:?}");
    // One new manifest and one manifest list per append; one HEAD for the added file.
    for (puts, heads) in &per_commit {
        assert!(*puts <= 2, "PUTs per commit: {per_commit:?}");
        assert!(*heads <= 1, "HEADs per commit: {per_commit:?}");
    }
    // Loads, scans and time travel, as a reader outside the server sees them.
    assert_eq!(
        read_ids(&client, &ident, None).await,
        (0..60).collect::<Vec<_>>()
    );
    assert_eq!(
        read_ids(&client, &ident, Some(snapshots[1])).await,
        (0..20).collect::<Vec<_>>()
    );
    // Expiry of all but the last two snapshots, then a drop.
    let r = client
        .expire_snapshots(firn_client::proto::ExpireSnapshotsRequest {
            ident: pb_ident(&ident),
            retain_last: Some(2),
            older_than_ms: Some(i64::MAX),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(r.tables[0].expired_snapshot_ids.len(), 4, "{r:?}");
    assert_eq!(read_ids(&client, &ident, None).await.len(), 60);
    client.drop_table(&ident).await.unwrap();
    assert_eq!(
        counts.lists.load(Ordering::SeqCst),
        0,
        "Firn listed the bucket"
    );
}

#[tokio::test]
async fn an_object_is_never_overwritten_on_s3_and_a_retry_of_the_same_write_succeeds() {
    let root = format!("s3://{TEST_BUCKET}/{}", uuid::Uuid::new_v4().simple());
    let w = Warehouse::open(WarehouseConfig {
        url: root.clone(),
        options: s3_options(&s3_server()),
    })
    .unwrap();
    w.check().await.unwrap();
    let uri = format!("{root}/t/metadata/m.avro");
    let p = w.object(&uri).unwrap();
    w.put(&p, Bytes::from_static(b"first")).await.unwrap();
    // A retry whose first attempt landed (same bytes): done, not an error.
    w.put(&p, Bytes::from_static(b"first")).await.unwrap();
    // Other bytes under the same name: refused, and the object keeps its bytes.
    let e = w.put(&p, Bytes::from_static(b"second")).await.unwrap_err();
    assert!(e.to_string().contains("never overwrites"), "{e}");
    assert_eq!(read_object(&uri).unwrap(), b"first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_failure_loses_files_by_listing_and_none_through_firn() {
    let o = firn_tests::seed_failure::run(6, 8, std::time::Duration::from_millis(300)).await;
    eprintln!("{o:?}");
    assert_eq!(o.written, 48);
    assert!(
        o.published_by_listing < o.written,
        "the lagging LIST showed every file: the fault did not bite ({o:?})"
    );
    assert_eq!(o.committed_through_firn, o.written, "{o:?}");
    assert_eq!(o.rows_through_firn, o.written * 10, "{o:?}");
}
