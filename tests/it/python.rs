//! Python clients: a writer using stubs generated from `proto/` (grpcio) commits pyarrow
//! files; PyIceberg reads and appends through the Iceberg REST API.

use std::collections::HashMap;
use std::path::PathBuf;

use firn_tests::*;

/// The repository root and the Python of `tools/.venv` (made by tools/setup-python.sh).
pub(crate) fn python() -> (PathBuf, PathBuf) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let python = root.join("tools/.venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run tools/setup-python.sh (tools/test.sh does)",
        python.display()
    );
    (root, python)
}

#[tokio::test]
async fn python_grpc_client_commits_pyarrow_files() {
    let (root, python) = python();
    let server = TestServer::start().await;
    let endpoint = server.endpoint.trim_start_matches("http://").to_string();
    let out = tokio::process::Command::new(&python)
        .arg(root.join("tools/python/grpc_client_check.py"))
        .arg(&endpoint)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("PYTHON-OK 33 rows"),
        "python client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// PyIceberg, through Firn's Iceberg REST catalog, reads a table the Rust writer committed
/// (current and first snapshot), uses the namespace and table API, and appends — twice in
/// sequence, then from 4 threads at once with no failure; Firn reads every row back through
/// SQL, and the first append's snapshot by id.
#[tokio::test]
async fn pyiceberg_reads_and_appends_over_rest() {
    let (root, python) = python();
    let server = TestServer::start().await;
    let client = server.client().await;
    rust_written_table(&client, true).await;
    let out = tokio::process::Command::new(&python)
        .arg(root.join("tools/python/pyiceberg_check.py"))
        .args([&server.rest_endpoint, "rs", "written"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("PYICEBERG-OK"),
        "pyiceberg failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(seen["rows"], 8);
    assert_eq!(seen["ids"], serde_json::json!([0, 1, 2, 3, 4, 5, 6, 7]));
    assert_eq!(seen["first_rows"], 5);
    assert_eq!(seen["snapshots"], 2);
    // What PyIceberg committed over REST, Firn reads back (current and first snapshot).
    let appended: serde_json::Value = serde_json::from_str(
        stdout
            .lines()
            .find(|l| l.contains("appended_first_snapshot"))
            .unwrap(),
    )
    .unwrap();
    let first = appended["appended_first_snapshot"].as_i64().unwrap();
    let session = firn_query::FirnSession::connect(&server.endpoint)
        .await
        .unwrap();
    let count = |sql: String| {
        let session = session.clone();
        async move {
            let b = session.sql(&sql).await.unwrap();
            b[0].column(0)
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .unwrap()
                .value(0)
        }
    };
    // 0+1+2+10 from the sequential appends, then 4 threads x 3 appends x 10 rows.
    let threaded: i64 = (0..4)
        .flat_map(|w| (0..3).flat_map(move |k| (0..10).map(move |i| 1000 + w * 100 + k * 10 + i)))
        .sum();
    assert_eq!(
        count("SELECT sum(id) FROM py.appended".into()).await,
        13 + threaded
    );
    assert_eq!(count("SELECT count(*) FROM py.appended".into()).await, 124);
    assert_eq!(
        count(format!(
            "SELECT count(*) FROM py.appended VERSION AS OF {first}"
        ))
        .await,
        3
    );
    let snaps = client
        .list_snapshots(&firn_client::TableIdent::new("py", "appended"))
        .await
        .unwrap();
    assert_eq!(snaps.len(), 2 + 12);
    // A streaming writer's summary properties survive the rebase, over REST and gRPC.
    let props_line: serde_json::Value = serde_json::from_str(
        stdout
            .lines()
            .find(|l| l.contains("props_summary"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        props_line["props_summary"],
        serde_json::json!({"flink.max-committed-checkpoint-id": "7", "wap.id": "w-1"})
    );
    let props = firn_client::TableIdent::new("py", "props");
    let s = &client.list_snapshots(&props).await.unwrap()[0];
    assert_eq!(s.summary["flink.max-committed-checkpoint-id"], "7");
    // The manifest list and manifest PyIceberg wrote are unused (Firn committed its own):
    // they were recorded, and the next expiry deletes them.
    let expiry = client
        .expire_snapshots(firn_client::proto::ExpireSnapshotsRequest {
            ident: Some(firn_client::proto::TableIdent {
                namespace: "py".into(),
                name: "props".into(),
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let t = &expiry.tables[0];
    assert_eq!(
        (t.manifest_lists_deleted, t.manifests_deleted),
        (1, 1),
        "{t:?}"
    );
    assert_eq!(client.list_snapshots(&props).await.unwrap().len(), 1);
    // The table PyIceberg created with a staged create, rows included — dropped and
    // registered again under another name.
    assert_eq!(count("SELECT sum(id) FROM py.again".into()).await, 3);
    // The evolved schema: Firn reads the new column, null for the old row.
    assert_eq!(
        count("SELECT count(*) FROM py.evolve WHERE score = 1.5 AND id = 2".into()).await,
        1
    );
    assert_eq!(
        count("SELECT count(*) FROM py.evolve WHERE score IS NULL AND id = 1".into()).await,
        1
    );
    let latest = appended["evolve_latest"].as_i64().unwrap();
    let t = client
        .load_table(&firn_client::TableIdent::new("py", "evolve"), false)
        .await
        .unwrap();
    assert_eq!(t.current_snapshot_id, Some(latest));
    // Its refs' own retention, set by PyIceberg, rules Firn's expiry: the tag with a 1 ms
    // maximum age goes, the rest stays.
    let evolve = firn_client::TableIdent::new("py", "evolve");
    let r = client
        .expire_snapshots(firn_client::proto::ExpireSnapshotsRequest {
            ident: pb_ident(&evolve),
            older_than_ms: Some(i64::MAX),
            retain_last: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(r.tables[0].removed_refs, vec!["short-lived".to_string()]);
    let refs: Vec<String> = client
        .list_refs(&evolve)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(refs, ["main", "keep-all", "v1"]);
    let t = client.load_table(&evolve, true).await.unwrap();
    let meta: serde_json::Value = serde_json::from_str(&t.metadata_json).unwrap();
    assert_eq!(meta["refs"]["keep-all"]["min-snapshots-to-keep"], 10);
}

/// `rs.written`, committed by the Rust writer in two commits: ids 0..5 (day 0), then 5..8
/// (day 1).
/// A principal with `privilege` on `on` and a token: its `NAME:TOKEN` credential.
async fn principal_with(
    admin: &firn_client::FirnClient,
    name: &str,
    privilege: &str,
    on: (&str, &str),
) -> String {
    use firn_client::proto as pb;
    let mut access = admin.access();
    access
        .create_principal(pb::CreatePrincipalRequest {
            name: name.into(),
            kind: "service".into(),
        })
        .await
        .unwrap();
    access
        .grant(pb::GrantRequest {
            principal: name.into(),
            privilege: privilege.into(),
            on: Some(pb::Resource {
                kind: on.0.into(),
                name: on.1.into(),
            }),
        })
        .await
        .unwrap();
    let token = access
        .create_token(pb::CreateTokenRequest {
            principal: name.into(),
            ttl_seconds: None,
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    format!("{name}:{token}")
}

/// PyIceberg with OAuth2 client credentials (`credential=id:secret`): a writer appends, a
/// read-only principal's append is refused with 403 and changes nothing, a wrong secret is
/// refused.
#[tokio::test]
async fn pyiceberg_authenticates_with_client_credentials_and_follows_grants() {
    let server = TestServer::start_secured().await;
    let admin = server.admin().await;
    rust_written_table(&admin, false).await;
    let writer = principal_with(&admin, "etl", "write", ("table", "rs.written")).await;
    let reader = principal_with(&admin, "analyst", "read", ("namespace", "rs")).await;
    let ident = firn_client::TableIdent::new("rs", "written");
    let checks = run_check(
        "pyiceberg_auth_check.py",
        &[&server.rest_endpoint, &writer, &reader, "rs", "written"],
        "PYICEBERG-AUTH-OK",
    )
    .await;
    let after_writer = admin.load_table(&ident, false).await.unwrap();
    let seen = &checks["auth"];
    assert_eq!(
        (seen["before"].as_i64(), seen["after"].as_i64()),
        (Some(8), Some(11))
    );
    assert_eq!(seen["reader_saw"], 11);
    assert!(
        seen["reader_append"]
            .as_str()
            .unwrap()
            .starts_with("forbidden"),
        "{seen}"
    );
    assert!(
        seen["bad_secret"].as_str().unwrap().starts_with("refused"),
        "{seen}"
    );
    // The refused append left no commit: the newest is the writer's, naming it.
    let log = admin
        .raw()
        .list_commits(firn_client::proto::ListCommitsRequest {
            ident: pb_ident(&ident),
            limit: 1,
        })
        .await
        .unwrap()
        .into_inner()
        .commits;
    assert_eq!(log[0].principal, "etl");
    assert_eq!(Some(log[0].snapshot_id), after_writer.current_snapshot_id);
}

/// Remote signing on a store that checks every signature (its own moto with IAM on):
/// PyIceberg with no S3 keys reads and appends through Firn's signer, a read-only
/// principal's append is refused by the signer, and the signer refuses a LIST and an
/// object outside the table. Its signatures are real: the store accepts a signed GET and
/// refuses the same headers for another object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyiceberg_without_keys_reads_and_writes_s3_through_remote_signing() {
    let s3 = CheckingS3::start().await;
    let server = TestServer::start_secured_on(Some(firn_core::WarehouseConfig {
        url: format!("s3://{}/wh", s3.bucket),
        options: s3.options.clone(),
    }))
    .await;
    let admin = server.admin().await;
    rust_written_table(&admin, false).await;
    let writer = principal_with(&admin, "etl", "write", ("table", "rs.written")).await;
    let reader = principal_with(&admin, "analyst", "read", ("namespace", "rs")).await;
    let ident = firn_client::TableIdent::new("rs", "written");

    let checks = run_check(
        "pyiceberg_signing_check.py",
        &[&server.rest_endpoint, &writer, &reader, "rs", "written"],
        "PYICEBERG-SIGNING-OK",
    )
    .await;
    let seen = &checks["signing"];
    assert_eq!(seen["io"], "FsspecFileIO", "{seen}");
    assert_eq!(seen["signer"], "v1/namespaces/rs/tables/written/sign");
    assert_eq!(seen["keys_on_client"], serde_json::json!([]), "{seen}");
    assert_eq!(
        (seen["before"].as_i64(), seen["after"].as_i64()),
        (Some(8), Some(11)),
        "{seen}"
    );
    assert_eq!(seen["reader_saw"], 11);
    // Refused at its first write: the signer signs no PUT for it.
    let denied = seen["reader_append"].as_str().unwrap();
    assert!(denied.starts_with("refused: SignError"), "{seen}");
    // The refused append committed nothing: the newest commit is the writer's.
    let log = admin
        .raw()
        .list_commits(firn_client::proto::ListCommitsRequest {
            ident: pb_ident(&ident),
            limit: 1,
        })
        .await
        .unwrap()
        .into_inner()
        .commits;
    assert_eq!(log[0].principal, "etl");

    // The signer by hand, as the writer.
    let t = admin.load_table(&ident, false).await.unwrap();
    let bearer = format!("Bearer {}", writer.split_once(':').unwrap().1);
    let sign = |uri: String, method: &'static str, who: String| {
        let server = &server;
        async move {
            let body = serde_json::json!({
                "method": method,
                "region": "us-east-1",
                "uri": uri,
                "headers": {"User-Agent": ["test"]},
            });
            rest_call_with(
                server,
                "POST",
                "/v1/namespaces/rs/tables/written/sign",
                &[("Authorization", &who)],
                Some(&body),
            )
            .await
        }
    };
    let object_url = |uri: &str| {
        format!(
            "{}/{}/{}",
            s3.endpoint,
            s3.bucket,
            uri.strip_prefix(&format!("s3://{}/", s3.bucket)).unwrap()
        )
    };
    let metadata_url = object_url(&t.metadata_location);
    let (status, signed) = sign(metadata_url.clone(), "GET", bearer.clone()).await;
    assert_eq!(status, 200, "{signed}");
    let http = reqwest::Client::new();
    let send = |url: &str, signed: &serde_json::Value| {
        let mut r = http.get(url);
        for (k, vs) in signed["headers"].as_object().unwrap() {
            for v in vs.as_array().unwrap() {
                r = r.header(k, v.as_str().unwrap());
            }
        }
        r.send()
    };
    let got = send(&metadata_url, &signed).await.unwrap();
    assert_eq!(got.status(), 200);
    let json: serde_json::Value = got.json().await.unwrap();
    assert_eq!(json["table-uuid"], t.table_uuid.as_str());
    // The same signature for another object of the bucket: the store refuses it.
    let other = object_url(&format!("s3://{}/wh/elsewhere", s3.bucket));
    assert_eq!(send(&other, &signed).await.unwrap().status(), 403);
    // Refused before signing: a LIST, an object outside the table, a plain DELETE.
    for (uri, method) in [
        (
            format!("{}/{}?list-type=2&prefix=wh/", s3.endpoint, s3.bucket),
            "GET",
        ),
        (other.clone(), "GET"),
        (metadata_url.clone(), "DELETE"),
    ] {
        let (status, e) = sign(uri.clone(), method, bearer.clone()).await;
        assert_eq!(status, 403, "{method} {uri}: {e}");
        assert_eq!(e["error"]["type"], "ForbiddenException", "{e}");
    }
    // The reader gets reads signed and no write.
    let reader_bearer = format!("Bearer {}", reader.split_once(':').unwrap().1);
    let (status, _) = sign(metadata_url.clone(), "GET", reader_bearer.clone()).await;
    assert_eq!(status, 200);
    let put = format!("{}/data/new.parquet", object_url(&t.location));
    let (status, e) = sign(put, "PUT", reader_bearer).await;
    assert_eq!(status, 403, "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("write"),
        "{e}"
    );
}

async fn rust_written_table(client: &firn_client::FirnClient, by_day: bool) {
    let (ident, _) = create_table(client, "rs", "written", by_day).await;
    for (ids, day) in [(0..5, 0), (5..8, 1)] {
        let mut w = firn_client::TableWriter::new(client, &ident, Default::default())
            .await
            .unwrap();
        w.write(&batch(ids, day)).await.unwrap();
        w.commit().await.unwrap();
    }
}

/// Runs a check script of `tools/python` and returns its JSON lines by `check` name,
/// failing with its output unless it printed `ok_line`.
async fn run_check(
    script: &str,
    args: &[&str],
    ok_line: &str,
) -> HashMap<String, serde_json::Value> {
    let (root, python) = python();
    let out = tokio::process::Command::new(&python)
        .arg(root.join("tools/python").join(script))
        .args(args)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.lines().any(|l| l == ok_line),
        "{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v["check"].as_str()?.to_string(), v)))
        .collect()
}

/// Sorted `id`s of a SQL query through `firn sql`'s engine.
async fn sql_ids(session: &firn_query::FirnSession, sql: &str) -> Vec<i64> {
    let batches = session.sql(sql).await.unwrap();
    let mut ids: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            let a = b
                .column(0)
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .unwrap();
            a.iter().flatten().collect::<Vec<_>>()
        })
        .collect();
    ids.sort_unstable();
    ids
}

/// Spark 3.5 with the Iceberg 1.10 runtime, through Firn's REST catalog: reads a table the
/// Rust writer committed (same rows), then creates, inserts, time-travels, uses metadata
/// tables, tags and branches, rolls back, adds a column, deletes merge-on-read (position
/// deletes), updates, merges and expires snapshots. Firn's SQL reads Spark's table back
/// with the same rows, and its snapshots are exactly the ones Spark kept.
#[tokio::test]
async fn spark_commits_and_reads_through_rest() {
    let server = TestServer::start().await;
    let client = server.client().await;
    rust_written_table(&client, true).await;
    let seen = run_check(
        "spark_check.py",
        &[&server.rest_endpoint, "--firn-table", "rs.written"],
        "SPARK-OK",
    )
    .await;
    assert_eq!(
        seen["firn_table"]["ids"],
        serde_json::json!([0, 1, 2, 3, 4, 5, 6, 7])
    );
    assert_eq!(seen["firn_table"]["first_rows"], 5);
    assert_eq!(seen["delete"]["position_delete_files"], 2);
    let final_ids: Vec<i64> = serde_json::from_value(seen["final"]["ids"].clone()).unwrap();
    assert_eq!(final_ids, [1, 3, 5, 7, 8]);
    // Firn reads what Spark wrote (position deletes applied), at its current snapshot.
    let session = firn_query::FirnSession::connect(&server.endpoint)
        .await
        .unwrap();
    assert_eq!(
        sql_ids(&session, "SELECT id FROM spark.events").await,
        final_ids
    );
    // Spark's expiry went through Firn: the catalog keeps exactly what Spark kept.
    let kept: Vec<i64> = serde_json::from_value(seen["expire_snapshots"]["kept"].clone()).unwrap();
    let snaps: Vec<i64> = client
        .list_snapshots(&firn_client::TableIdent::new("spark", "events"))
        .await
        .unwrap()
        .iter()
        .map(|s| s.snapshot_id)
        .collect();
    assert_eq!(snaps, kept);
    assert_eq!(
        sql_ids(
            &session,
            "SELECT id FROM spark.events VERSION AS OF 'first'"
        )
        .await,
        [1, 2, 3]
    );
}

/// DuckDB's iceberg extension, through Firn's REST catalog: attaches without auth, reads a
/// table the Rust writer committed (current and first snapshot), and writes its own table
/// (create, inserts, delete, update, drop), which Firn's catalog then holds.
#[tokio::test]
async fn duckdb_reads_and_writes_through_rest() {
    let server = TestServer::start().await;
    let client = server.client().await;
    rust_written_table(&client, false).await;
    let seen = run_check(
        "duckdb_check.py",
        &[&server.rest_endpoint, "rs", "written"],
        "DUCKDB-OK",
    )
    .await;
    assert_eq!(
        seen["read"]["ids"],
        serde_json::json!([0, 1, 2, 3, 4, 5, 6, 7])
    );
    assert_eq!(seen["read"]["first_rows"], 5);
    assert_eq!(seen["write"]["ids"], serde_json::json!([1, 3, 4]));
    // DuckDB's commits are Firn snapshots: the current one is the one DuckDB saw last.
    let t = client
        .load_table(&firn_client::TableIdent::new("duck", "events"), false)
        .await
        .unwrap();
    assert_eq!(
        t.current_snapshot_id,
        seen["write"]["current_snapshot"].as_i64()
    );
    let tables = client.list_tables("duck").await.unwrap();
    assert!(
        tables.iter().all(|t| t.name != "scratch"),
        "DuckDB's dropped table is gone: {tables:?}"
    );
    // DuckDB 1.4 writes its own manifest-entry schema into its manifests' `schema` header:
    // PyIceberg appends to its table, and Firn plans, reads, expires and purges it.
    let (root, python) = python();
    let out = tokio::process::Command::new(&python)
        .arg(root.join("tools/python/pyiceberg_append_loop.py"))
        .args([&server.rest_endpoint, "duck.events", "10", "2"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "PyIceberg append to DuckDB's table failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let session = firn_query::FirnSession::connect(&server.endpoint)
        .await
        .unwrap();
    assert_eq!(
        sql_ids(&session, "SELECT id FROM duck.events").await,
        [1, 3, 4, 10, 11]
    );
    let duck = firn_client::TableIdent::new("duck", "events");
    let expiry = client
        .expire_snapshots(firn_client::proto::ExpireSnapshotsRequest {
            ident: Some(firn_client::proto::TableIdent {
                namespace: "duck".into(),
                name: "events".into(),
            }),
            older_than_ms: Some(i64::MAX),
            retain_last: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!expiry.tables[0].expired_snapshot_ids.is_empty());
    assert_eq!(client.list_snapshots(&duck).await.unwrap().len(), 1);
    assert_eq!(
        sql_ids(&session, "SELECT id FROM duck.events").await,
        [1, 3, 4, 10, 11]
    );
    let (status, body) = rest_call(
        &server,
        "DELETE",
        "/v1/namespaces/duck/tables/events?purgeRequested=true",
        None,
    )
    .await;
    assert_eq!(status, 204, "{body}");
    assert!(client.list_tables("duck").await.unwrap().is_empty());
}

/// gRPC and REST writers interleaving on one table: PyIceberg appends (each loads the
/// table, writes its own manifests and commits requirements + updates) while the Rust
/// writer appends over gRPC; every commit of both lands, in one linear history.
#[tokio::test]
async fn grpc_and_rest_writers_interleave_without_losing_commits() {
    let (root, python) = python();
    let server = TestServer::start().await;
    let client = server.client().await;
    let (ident, t) = create_table(&client, "mix", "t", false).await;
    let rest = tokio::process::Command::new(&python)
        .arg(root.join("tools/python/pyiceberg_append_loop.py"))
        .args([&server.rest_endpoint, "mix.t", "1000", "15"])
        .output();
    let grpc = async {
        for i in 0..15 {
            let (uri, size) =
                write_parquet(&t.location, &format!("g{i}.parquet"), &batch(i..i + 1, 0));
            client
                .commit_once(append_request(&ident, vec![data_file(&uri, size)]))
                .await
                .unwrap();
        }
    };
    let (out, ()) = tokio::join!(rest, grpc);
    let out = out.unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let want: Vec<i64> = (0..15).chain(1000..1015).collect();
    assert_eq!(read_ids(&client, &ident, None).await, want);
    let snaps = client.list_snapshots(&ident).await.unwrap();
    assert_eq!(snaps.len(), 30, "one snapshot per commit");
    for w in snaps.windows(2) {
        assert_eq!(
            w[1].parent_snapshot_id,
            Some(w[0].snapshot_id),
            "a linear history"
        );
    }
}
