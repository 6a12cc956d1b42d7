//! S3 as its own backend, on the test S3 server (moto, started by `tools/start-s3.sh`):
//! what only S3 has. Wrong settings refused at start, object requests per operation (no
//! LIST anywhere but the orphan sweep), put-if-absent. The conformance modules run on S3
//! too (tools/test.sh's S3 phases).

use bytes::Bytes;
use firn_core::{Warehouse, WarehouseConfig};
use firn_tests::s3_proxy::{S3Proxy, WireFaults};
use firn_tests::*;

/// `firn serve` on a warehouse with `options`: it must not start, and says why in one line
/// that names the warehouse.
fn refused_warehouse(warehouse: &str, options: &[String]) -> String {
    let mut args = vec!["--warehouse", warehouse];
    for o in options {
        args.extend(["--warehouse-option", o.as_str()]);
    }
    let e = refused_start(&args);
    assert!(e.contains("warehouse"), "{e}");
    e
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
    let e = refused_warehouse(&bucket, &with(&[format!("endpoint={endpoint}")]));
    assert!(
        e.contains("allow_http=true") && e.contains(&endpoint),
        "{e}"
    );
    // Not a URL.
    let e = refused_warehouse(&bucket, &with(&["endpoint=127.0.0.1:9900".to_string()]));
    assert!(e.contains("endpoint=127.0.0.1:9900"), "{e}");
    // A bucket the store does not have.
    let e = refused_warehouse(
        "s3://no-such-bucket-here/wh",
        &with(&[format!("endpoint={endpoint}"), "allow_http=true".into()]),
    );
    assert!(
        e.contains("\"no-such-bucket-here\" does not exist") && e.contains(&endpoint),
        "{e}"
    );
    // Nothing listens at the endpoint.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let e = refused_warehouse(
        &bucket,
        &with(&[format!("endpoint={closed}"), "allow_http=true".into()]),
    );
    assert!(e.contains("cannot reach") && e.contains(&closed), "{e}");
    // Clients' credentials from an STS nothing answers at.
    let e = refused_warehouse(
        &bucket,
        &with(&[
            format!("endpoint={endpoint}"),
            "allow_http=true".into(),
            "sts_role_arn=arn:aws:iam::123456789012:role/firn-clients".into(),
            format!("sts_endpoint={closed}"),
        ]),
    );
    assert!(e.contains("sts_role_arn") && e.contains(&closed), "{e}");
}

/// On a store that checks credentials (its own moto with IAM on; the shared one takes any
/// key): a wrong secret and an unknown key each stop `firn serve` at start with one line
/// naming the credential settings; the right keys start it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_stop_the_start_on_a_store_that_checks_them() {
    let s3 = CheckingS3::start().await;
    let url = format!("s3://{}/wh", s3.bucket);
    let option = |k: &str, v: &str| format!("{k}={v}");
    let base: Vec<String> = ["endpoint", "allow_http", "region"]
        .iter()
        .map(|k| option(k, &s3.options[*k]))
        .collect();
    let key = &s3.options["access_key_id"];
    for (id, secret) in [
        (key.as_str(), "not-the-secret"),
        ("AKIAUNKNOWNKEY000000", "whatever"),
    ] {
        let options = [
            &base[..],
            &[
                option("access_key_id", id),
                option("secret_access_key", secret),
            ],
        ]
        .concat();
        let e = refused_warehouse(&url, &options);
        assert!(
            e.contains("refused the credentials") && e.contains("secret_access_key"),
            "{e}"
        );
    }
    // The right keys pass the same check (the probe object is written, read and deleted).
    let w = Warehouse::open(WarehouseConfig {
        url,
        options: s3.options.clone(),
    })
    .unwrap();
    w.check().await.unwrap();
}

/// The seed of the seeded fault runs: `FIRN_TEST_SEED` replays one.
fn seed() -> u64 {
    std::env::var("FIRN_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(14)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_s3_nothing_that_decides_table_contents_lists_and_commits_cost_few_requests() {
    // Every request of the server and of its clients crosses the counting proxy.
    let proxy = S3Proxy::start(&s3_server(), WireFaults::default()).await;
    let server = TestServer::start_on_s3_at(&proxy.endpoint, None).await;
    let client = server.client().await;
    let (ident, t) = create_table(&client, "ns", "t", true).await;
    let created = proxy.counts();
    let mut snapshots = Vec::new();
    let mut per_commit = Vec::new();
    for i in 0..6 {
        let (u, s) = write_parquet(
            &t.location,
            &format!("f{i}.parquet"),
            &batch(i * 10..i * 10 + 10, i),
        );
        let before = proxy.counts();
        let r = client
            .commit_once(append_request(&ident, vec![data_file(&u, s)]))
            .await
            .unwrap();
        let after = proxy.counts();
        let delta = |k: &str| after.get(k).unwrap_or(&0) - before.get(k).unwrap_or(&0);
        per_commit.push((delta("PUT"), delta("HEAD"), delta("GET")));
        snapshots.push(r.snapshot_id);
    }
    eprintln!("create: {created:?}; per append commit (PUT, HEAD, GET): {per_commit:?}");
    // One new manifest and one manifest list per append; one request for the added file
    // (its footer, read for statistics, also proves it exists with its size).
    for (puts, heads, gets) in &per_commit {
        assert!(*puts <= 2 && heads + gets <= 1, "{per_commit:?}");
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
    // Expiry of all but the last two snapshots leaves what they reference (the test
    // lists), deleting what they alone had in one DeleteObjects request, with no HEAD;
    // then a drop.
    let before = proxy.counts();
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
    let after = proxy.counts();
    let delta = |k: &str| after.get(k).unwrap_or(&0) - before.get(k).unwrap_or(&0);
    assert!(r.tables[0].manifest_lists_deleted >= 4, "{r:?}");
    assert_eq!(
        (delta("DELETE many"), delta("DELETE"), delta("HEAD")),
        (1, 0, 0),
        "expiry's requests: {after:?} after {before:?}"
    );
    assert_eq!(read_ids(&client, &ident, None).await.len(), 60);
    assert_eq!(proxy.count("LIST"), 0, "Firn listed: {:?}", proxy.counts());
    let data: Vec<String> = list_objects(&format!("{}/data", t.location))
        .into_iter()
        .collect();
    assert_eq!(data.len(), 6, "every data file is live: {data:?}");
    client.drop_table(&ident).await.unwrap();
    assert_eq!(proxy.count("LIST"), 0, "Firn listed: {:?}", proxy.counts());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wire_faults_lose_no_acknowledged_commit_and_apply_none_twice() {
    let seed = seed();
    let faults = WireFaults {
        seed,
        slow_down_rate: 0.15,
        drop_response_rate: 0.15,
        latency: std::time::Duration::from_millis(2),
    };
    let proxy = S3Proxy::start(&s3_server(), faults).await;
    let server = TestServer::start_on_s3_at(&proxy.endpoint, None).await;
    let client = server.client().await.with_retry(firn_client::RetryPolicy {
        max_attempts: 50,
        initial_backoff: std::time::Duration::from_millis(5),
        max_backoff: std::time::Duration::from_millis(100),
    });
    let (ident, t) = loop {
        // Creating the table is retried by hand: its metadata file may meet a fault too.
        match client.create_namespace("ns").await {
            Ok(_) => {}
            Err(e) if e.code() == Some(tonic::Code::AlreadyExists) => {}
            Err(e) if e.code() == Some(tonic::Code::Unavailable) => continue,
            Err(e) => panic!("create namespace: {e}"),
        }
        let req = firn_client::proto::CreateTableRequest {
            ident: pb_ident(&firn_client::TableIdent::new("ns", "t")),
            fields: test_fields(),
            ..Default::default()
        };
        match client.create_table(req).await {
            Ok(t) => break (firn_client::TableIdent::new("ns", "t"), t),
            Err(e) if e.code() == Some(tonic::Code::Unavailable) => continue,
            Err(e) => panic!("create table (seed {seed}): {e}"),
        }
    };
    // Appends commute (the server rebases them): a conflict here could only be an unknown
    // outcome misreported, which must never happen.
    let conflicts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..4i64 {
        let conflicts = conflicts.clone();
        let (client, ident, location) = (client.clone(), ident.clone(), t.location.clone());
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..12 {
                let first = (w * 12 + i) * 3;
                let (u, s) = write_parquet(
                    &location,
                    &format!("w{w}-{i}.parquet"),
                    &batch(first..first + 3, 0),
                );
                let r = client
                    .commit(append_request(&ident, vec![data_file(&u, s)]), |r| {
                        conflicts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        async move { Ok(Some(r)) }
                    })
                    .await
                    .unwrap_or_else(|e| panic!("a commit failed for good (seed {seed}): {e}"));
                acked.push(r.snapshot_id);
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    let counts = proxy.counts();
    eprintln!("seed {seed}: requests that reached the store: {counts:?}");
    assert_eq!(
        conflicts.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a fault was reported as a conflict (seed {seed})"
    );
    let snaps = client.list_snapshots(&ident).await.unwrap();
    let ids: std::collections::BTreeSet<i64> = snaps.iter().map(|s| s.snapshot_id).collect();
    assert!(
        acked.iter().all(|a| ids.contains(a)),
        "an acknowledged commit is missing (seed {seed})"
    );
    assert_eq!(
        snaps.len(),
        acked.len(),
        "a commit applied twice (seed {seed})"
    );
    let rows = loop {
        // A load may meet a fault while it writes the metadata file: retried.
        match client.load_table(&ident, false).await {
            Ok(_) => break read_ids(&client, &ident, None).await,
            Err(e) if e.code() == Some(tonic::Code::Unavailable) => continue,
            Err(e) => panic!("load (seed {seed}): {e}"),
        }
    };
    assert_eq!(rows, (0..144).collect::<Vec<_>>(), "seed {seed}");
    assert_eq!(proxy.count("LIST"), 0, "Firn listed (seed {seed})");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_files_go_up_in_parts_and_an_abandoned_upload_is_aborted() {
    let proxy = S3Proxy::start(&s3_server(), WireFaults::default()).await;
    let root = format!("s3://{TEST_BUCKET}/{}", uuid::Uuid::new_v4().simple());
    let file_io = firn_core::FirnStorageFactory::file_io(&WarehouseConfig {
        url: root.clone(),
        options: s3_options(&proxy.endpoint),
    });
    let mib = |n: usize, fill: u8| bytes::Bytes::from(vec![fill; n << 20]);

    // 20 MiB in 1 MiB writes: parts of 8, 8 and 4 MiB, no single PUT.
    let big = format!("{root}/t/data/big.parquet");
    let mut w = file_io.new_output(&big).unwrap().writer().await.unwrap();
    let mut expected = Vec::new();
    for i in 0..20u8 {
        let chunk = mib(1, i);
        expected.extend_from_slice(&chunk);
        w.write(chunk).await.unwrap();
    }
    w.close().await.unwrap();
    let c = proxy.counts();
    assert_eq!(c.get("CREATE multipart"), Some(&1), "{c:?}");
    assert_eq!(c.get("PUT part"), Some(&3), "{c:?}");
    assert_eq!(c.get("COMPLETE multipart"), Some(&1), "{c:?}");
    assert_eq!(c.get("PUT"), None, "{c:?}");
    assert!(
        read_object(&big).unwrap() == expected,
        "the object is the bytes written"
    );

    // A small file: one PUT.
    let small = format!("{root}/t/data/small.parquet");
    let mut w = file_io.new_output(&small).unwrap().writer().await.unwrap();
    w.write(bytes::Bytes::from_static(b"small")).await.unwrap();
    w.close().await.unwrap();
    assert_eq!(proxy.count("PUT"), 1);
    assert_eq!(read_object(&small).unwrap(), b"small");

    // A writer given up after one part: the upload is aborted, nothing is left.
    let gone = format!("{root}/t/data/gone.parquet");
    let mut w = file_io.new_output(&gone).unwrap().writer().await.unwrap();
    w.write(mib(9, 7)).await.unwrap();
    assert_eq!(proxy.count("CREATE multipart"), 2);
    drop(w);
    let started = std::time::Instant::now();
    while proxy.count("ABORT multipart") == 0 {
        assert!(started.elapsed().as_secs() < 10, "{:?}", proxy.counts());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(!object_exists(&gone));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_sts_clients_get_temporary_credentials_for_the_table_not_the_servers_keys() {
    let mut options = s3_options(&s3_server());
    options.insert(
        "sts_role_arn".into(),
        "arn:aws:iam::123456789012:role/firn-clients".into(),
    );
    let server = TestServer::start_on_warehouse(WarehouseConfig {
        url: format!("s3://{TEST_BUCKET}/{}", uuid::Uuid::new_v4().simple()),
        options,
    })
    .await;
    let client = server.client().await;
    let (ident, t) = create_table(&client, "ns", "t", false).await;
    let (u, s) = write_parquet(&t.location, "f.parquet", &batch(0..5, 0));
    client
        .commit_once(append_request(&ident, vec![data_file(&u, s)]))
        .await
        .unwrap();

    // gRPC: the storage access carries STS's temporary keys, which read the table.
    let access = client.storage_config(&ident).await.unwrap();
    let key = &access.options["aws_access_key_id"];
    assert_ne!(key, "firn-test", "the server's own key was handed out");
    assert!(!access.options["aws_session_token"].is_empty());
    assert_ne!(access.options["aws_secret_access_key"], "firn-test-secret");
    assert_eq!(
        read_ids(&client, &ident, None).await,
        (0..5).collect::<Vec<_>>()
    );
    // A second ask within their lifetime gets the same credentials (no STS call per load).
    let again = client.storage_config(&ident).await.unwrap();
    assert_eq!(&again.options["aws_access_key_id"], key);
    // Their expiry travels with them (STS's default hour), so the Rust client renews them
    // through the server before then; its writer goes through that renewing store.
    let raw = client
        .raw()
        .get_storage_access(firn_client::proto::GetStorageAccessRequest {
            ident: pb_ident(&ident),
        })
        .await
        .unwrap()
        .into_inner();
    let left_ms = raw.expires_at_ms - chrono::Utc::now().timestamp_millis();
    assert!(
        (50 * 60_000..=61 * 60_000).contains(&left_ms),
        "{left_ms} ms"
    );
    let mut w = firn_client::TableWriter::new(&client, &ident, Default::default())
        .await
        .unwrap();
    w.write(&batch(5..8, 0)).await.unwrap();
    w.commit().await.unwrap();
    assert_eq!(
        read_ids(&client, &ident, None).await,
        (0..8).collect::<Vec<_>>()
    );

    // REST: only when asked for, in config and storage-credentials, with their expiry.
    let path = "/v1/namespaces/ns/tables/t";
    let (status, plain) = rest_call(&server, "GET", path, None).await;
    assert_eq!(status, 200);
    assert!(
        plain["config"].get("s3.access-key-id").is_none(),
        "{}",
        plain["config"]
    );
    let (status, body) = rest_call_with(
        &server,
        "GET",
        path,
        &[("X-Iceberg-Access-Delegation", "vended-credentials")],
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["config"]["s3.access-key-id"], key.as_str());
    assert!(
        body["config"]["s3.session-token-expires-at-ms"]
            .as_str()
            .and_then(|v| v.parse::<i64>().ok())
            .is_some_and(|at| at > 0),
        "{}",
        body["config"]
    );
    assert_eq!(
        body["storage-credentials"][0]["prefix"],
        t.location.as_str()
    );
    let (status, fresh) = rest_call(&server, "GET", &format!("{path}/credentials"), None).await;
    assert_eq!(status, 200, "{fresh}");
    assert_eq!(
        fresh["storage-credentials"][0]["config"]["s3.session-token"],
        access.options["aws_session_token"].as_str()
    );
}
