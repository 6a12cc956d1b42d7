//! Several warehouses per server: each namespace's tables live in its warehouse, on its own
//! store, for gRPC, SQL, maintenance and Iceberg REST clients (which pick one by prefix).
//!
//! The second warehouse is on the other kind of store than the server's own: S3 when the
//! suite runs on local disk, a local directory when it runs on S3.

use std::collections::HashMap;

use firn_client::proto as pb;
use firn_tests::*;

/// The second warehouse's URL and options.
fn second_warehouse(dir: &tempfile::TempDir) -> (String, HashMap<String, String>) {
    match test_s3() {
        Some(_) => (
            format!("file://{}", dir.path().join("second").display()),
            HashMap::new(),
        ),
        None => (
            format!("s3://{TEST_BUCKET}/{}", uuid::Uuid::new_v4().simple()),
            s3_options(&s3_server()),
        ),
    }
}

/// The root of a warehouse URL as Firn spells it (a local directory resolved, `/` at the end).
fn root_of(url: &str) -> String {
    match url.strip_prefix("file://") {
        Some(dir) => format!("file://{}/", std::fs::canonicalize(dir).unwrap().display()),
        None => format!("{}/", url.trim_end_matches('/')),
    }
}

/// A server with warehouse `second` created ([`second_warehouse`]); its URL.
async fn with_second_warehouse() -> (
    TestServer,
    firn_client::FirnClient,
    tempfile::TempDir,
    String,
) {
    let server = TestServer::start().await;
    let client = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let (url, options) = second_warehouse(&dir);
    client
        .create_warehouse("second", &url, options)
        .await
        .unwrap();
    (server, client, dir, url)
}

fn code(e: &firn_client::ClientError) -> Option<tonic::Code> {
    e.code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_namespace_keeps_its_tables_in_its_own_warehouse() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let (url, options) = second_warehouse(&dir);
    let created = client
        .create_warehouse("second", &url, options.clone())
        .await
        .unwrap();
    assert_eq!(created.source, "catalog");
    if let Some(secret) = created.options.get("secret_access_key") {
        assert_eq!(secret, "***", "a listing shows no secret");
    }
    let root = root_of(&url);
    let listed: Vec<(String, String)> = client
        .list_warehouses()
        .await
        .unwrap()
        .into_iter()
        .map(|w| (w.name, w.source))
        .collect();
    assert_eq!(
        listed,
        [
            ("default".to_string(), "server".to_string()),
            ("second".to_string(), "catalog".to_string())
        ]
    );

    client.create_namespace_in("far", "second").await.unwrap();
    let (near, near_t) = create_table(&client, "near", "t", false).await;
    let (far, far_t) = create_table(&client, "far", "t", false).await;
    let default_root = server.catalog.warehouse().root().to_string();
    assert!(far_t.location.starts_with(&root), "{}", far_t.location);
    assert_eq!(
        (far_t.warehouse.as_str(), near_t.warehouse.as_str()),
        ("second", "default")
    );
    assert!(near_t.location.starts_with(&default_root));
    let of = |w: &str| {
        let client = client.clone();
        let w = w.to_string();
        async move {
            let mut names: Vec<String> = client
                .list_namespaces_in(&w)
                .await
                .unwrap()
                .into_iter()
                .map(|n| n.name)
                .collect();
            names.sort();
            names
        }
    };
    assert_eq!(of("second").await, ["far"]);
    assert_eq!(of("default").await, ["near"]);
    assert_eq!(of("").await, ["far", "near"]);
    let e = client.list_namespaces_in("nowhere").await.unwrap_err();
    assert_eq!(code(&e), Some(tonic::Code::NotFound), "{e}");

    // Commits, scans, SQL and expiry of far.t all go to the second store.
    for (i, name) in ["a.parquet", "b.parquet"].iter().enumerate() {
        let start = i as i64 * 10;
        let (u, s) = write_parquet(&far_t.location, name, &batch(start..start + 5, 0));
        client
            .commit_once(append_request(&far, vec![data_file(&u, s)]))
            .await
            .unwrap();
    }
    let (u, s) = write_parquet(&near_t.location, "n.parquet", &batch(100..103, 0));
    client
        .commit_once(append_request(&near, vec![data_file(&u, s)]))
        .await
        .unwrap();
    let want: Vec<i64> = (0..5).chain(10..15).collect();
    assert_eq!(read_ids(&client, &far, None).await, want);
    let session = firn_query::FirnSession::connect(&server.endpoint)
        .await
        .unwrap();
    let batches = session.sql("SELECT count(*) FROM far.t").await.unwrap();
    let n = batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .unwrap()
        .value(0);
    assert_eq!(n, 10);
    server.catalog.flush().await.unwrap();
    let far_objects = list_objects(&far_t.location);
    assert!(
        far_objects.iter().any(|o| o.contains("/metadata/")),
        "{far_objects:?}"
    );
    assert!(far_objects.iter().all(|o| o.starts_with(&root)));
    assert!(
        list_objects(&format!("{default_root}far")).is_empty(),
        "nothing of far.t is in the server's own warehouse"
    );
    let first_list = client
        .list_snapshots(&far)
        .await
        .unwrap()
        .into_iter()
        .min_by_key(|s| s.sequence_number)
        .unwrap()
        .manifest_list;
    assert!(object_exists(&first_list));
    let expired = client
        .expire_snapshots(pb::ExpireSnapshotsRequest {
            ident: pb_ident(&far),
            older_than_ms: Some(i64::MAX),
            retain_last: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(expired.tables[0].expired_snapshot_ids.len(), 1);
    assert!(
        !object_exists(&first_list),
        "expiry deleted in the second store"
    );
    assert_eq!(read_ids(&client, &far, None).await, want);

    // Another replica finds the warehouse in the catalog when it first needs it.
    let replica = server.replica().await;
    let rc = replica.client().await;
    let (u, s) = write_parquet(&far_t.location, "c.parquet", &batch(20..22, 0));
    rc.commit_once(append_request(&far, vec![data_file(&u, s)]))
        .await
        .unwrap();
    assert_eq!(read_ids(&rc, &far, None).await.len(), 12);

    // A warehouse goes only once no namespace is bound to it; its objects stay.
    let e = client.drop_warehouse("second").await.unwrap_err();
    assert_eq!(code(&e), Some(tonic::Code::FailedPrecondition), "{e}");
    let e = client.drop_warehouse("default").await.unwrap_err();
    assert_eq!(code(&e), Some(tonic::Code::FailedPrecondition), "{e}");
    client.drop_table(&far).await.unwrap();
    client.drop_namespace("far").await.unwrap();
    client.drop_warehouse("second").await.unwrap();
    assert_eq!(client.list_warehouses().await.unwrap().len(), 1);
    let e = client
        .create_namespace_in("far", "second")
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some(tonic::Code::NotFound), "{e}");
    assert!(!list_objects(&far_t.location).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warehouse_is_checked_before_it_is_recorded() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let refused = |name: &str, url: &str, options: HashMap<String, String>| {
        let client = client.clone();
        let (name, url) = (name.to_string(), url.to_string());
        async move {
            let e = client
                .create_warehouse(&name, &url, options)
                .await
                .unwrap_err();
            (code(&e), e.to_string())
        }
    };
    let s3 = s3_server();
    let fresh = || format!("s3://{TEST_BUCKET}/{}", uuid::Uuid::new_v4().simple());
    let mut plain = s3_options(&s3);
    plain.remove("allow_http");
    let (c, e) = refused("plain", &fresh(), plain).await;
    assert_eq!(c, Some(tonic::Code::InvalidArgument), "{e}");
    assert!(e.contains("allow_http=true"), "{e}");
    let (c, e) = refused("nobucket", "s3://no-such-bucket-here/lake", s3_options(&s3)).await;
    assert_eq!(c, Some(tonic::Code::InvalidArgument), "{e}");
    assert!(e.contains("no-such-bucket-here"), "{e}");
    // Roots never nest: not inside the server's own, and not around it.
    let inside = format!("{}inner", server.catalog.warehouse().root());
    let (c, e) = refused("inner", &inside, HashMap::new()).await;
    assert_eq!(c, Some(tonic::Code::InvalidArgument), "{e}");
    assert!(e.contains("overlaps warehouse default"), "{e}");
    for name in ["namespaces", "config", "bad name", "default"] {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let (c, e) = refused(name, &url, HashMap::new()).await;
        assert!(
            matches!(
                c,
                Some(tonic::Code::InvalidArgument | tonic::Code::AlreadyExists)
            ),
            "{name}: {e}"
        );
    }
    // Nothing refused was recorded.
    assert_eq!(client.list_warehouses().await.unwrap().len(), 1);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    client
        .create_warehouse("local", &url, HashMap::new())
        .await
        .unwrap();
    let (c, e) = refused("local", &format!("{url}/other"), HashMap::new()).await;
    assert!(
        matches!(
            c,
            Some(tonic::Code::InvalidArgument | tonic::Code::AlreadyExists)
        ),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_admin_creates_or_drops_a_warehouse() {
    let server = TestServer::start_secured().await;
    let admin = server.admin().await;
    let mut access = admin.access();
    access
        .create_principal(pb::CreatePrincipalRequest {
            name: "ann".into(),
            kind: "user".into(),
        })
        .await
        .unwrap();
    let token = access
        .create_token(pb::CreateTokenRequest {
            principal: "ann".into(),
            ttl_seconds: Some(3600),
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    let ann = server.client_as(Some(&token)).await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let e = ann
        .create_warehouse("w", &url, HashMap::new())
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some(tonic::Code::PermissionDenied), "{e}");
    admin
        .create_warehouse("w", &url, HashMap::new())
        .await
        .unwrap();
    // Anyone may see which warehouses there are, to pick one.
    assert_eq!(ann.list_warehouses().await.unwrap().len(), 2);
    let e = ann.drop_warehouse("w").await.unwrap_err();
    assert_eq!(code(&e), Some(tonic::Code::PermissionDenied), "{e}");
    admin.drop_warehouse("w").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_clients_pick_a_warehouse_and_see_only_its_namespaces() {
    let (server, client, _dir, url) = with_second_warehouse().await;
    let root = root_of(&url);
    client.create_namespace("near").await.unwrap();

    // The configuration names the prefix of the chosen warehouse; none for the server's own.
    let (s, c) = rest_call(&server, "GET", "/v1/config?warehouse=second", None).await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["overrides"]["prefix"], "second");
    assert_eq!(c["overrides"]["warehouse"], root.as_str());
    let by_url = format!("/v1/config?warehouse={}", url);
    let (s, c) = rest_call(&server, "GET", &by_url, None).await;
    assert_eq!(
        (s, c["overrides"]["prefix"].clone()),
        (200, "second".into())
    );
    let (s, c) = rest_call(&server, "GET", "/v1/config", None).await;
    assert_eq!(s, 200);
    assert!(c["overrides"].get("prefix").is_none(), "{c}");
    let (s, c) = rest_call(&server, "GET", "/v1/config?warehouse=nowhere", None).await;
    assert_eq!(s, 404, "{c}");
    assert_eq!(c["error"]["type"], "NoSuchWarehouseException");
    assert!(
        c["error"]["message"]
            .as_str()
            .unwrap()
            .contains("default, second"),
        "{c}"
    );

    // Under the prefix: namespaces are created in the warehouse, and only its own are seen.
    let (s, c) = rest_call(
        &server,
        "POST",
        "/v1/second/namespaces",
        Some(&serde_json::json!({"namespace": ["r"]})),
    )
    .await;
    assert_eq!(s, 200, "{c}");
    let (_, c) = rest_call(&server, "GET", "/v1/second/namespaces", None).await;
    assert_eq!(c["namespaces"], serde_json::json!([["r"]]));
    let (_, c) = rest_call(&server, "GET", "/v1/namespaces", None).await;
    assert_eq!(c["namespaces"], serde_json::json!([["near"]]));
    let ns = client.list_namespaces_in("second").await.unwrap();
    assert_eq!(ns.len(), 1);
    assert_eq!(ns[0].warehouse, "second");
    let (s, c) = rest_call(
        &server,
        "POST",
        "/v1/second/namespaces/r/tables",
        Some(&serde_json::json!({
            "name": "t",
            "schema": {"type": "struct", "schema-id": 0, "fields": [
                {"id": 1, "name": "id", "required": false, "type": "long"}
            ]}
        })),
    )
    .await;
    assert_eq!(s, 200, "{c}");
    let location = c["metadata"]["location"].as_str().unwrap();
    assert!(location.starts_with(&root), "{location}");
    let (s, _) = rest_call(&server, "GET", "/v1/second/namespaces/r/tables/t", None).await;
    assert_eq!(s, 200);
    // Another warehouse's namespace does not exist for the client: not loaded, not renamed
    // into, not committed to.
    for path in [
        "/v1/namespaces/r/tables/t",
        "/v1/namespaces/r",
        "/v1/second/namespaces/near",
        "/v1/second/namespaces/near/tables",
    ] {
        let (s, c) = rest_call(&server, "GET", path, None).await;
        assert_eq!(s, 404, "{path}: {c}");
        assert_eq!(c["error"]["type"], "NoSuchNamespaceException", "{path}");
    }
    let (s, c) = rest_call(
        &server,
        "POST",
        "/v1/tables/rename",
        Some(&serde_json::json!({
            "source": {"namespace": ["r"], "name": "t"},
            "destination": {"namespace": ["near"], "name": "t"}
        })),
    )
    .await;
    assert_eq!(s, 404, "{c}");
    let (s, c) = rest_call(
        &server,
        "POST",
        "/v1/second/transactions/commit",
        Some(&serde_json::json!({"table-changes": [{
            "identifier": {"namespace": ["near"], "name": "x"},
            "requirements": [], "updates": []
        }]})),
    )
    .await;
    assert_eq!(s, 404, "{c}");
    let (s, c) = rest_call(&server, "GET", "/v1/nowhere/namespaces", None).await;
    assert_eq!(s, 404, "{c}");
    assert_eq!(c["error"]["type"], "NoSuchWarehouseException");
    assert!(
        client
            .load_table(&firn_client::TableIdent::new("r", "t"), false)
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyiceberg_writes_a_named_warehouse_with_only_its_name_configured() {
    let (root_dir, py) = crate::python::python();
    let (server, client, _dir, url) = with_second_warehouse().await;
    let root = root_of(&url);
    let out = tokio::process::Command::new(&py)
        .arg(root_dir.join("tools/python/pyiceberg_warehouse_check.py"))
        .args([server.rest_endpoint.as_str(), "second", "py", "t"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("PYICEBERG-WAREHOUSE-OK"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(seen["rows"], 3);
    assert_eq!(seen["namespaces"], serde_json::json!([["py"]]));
    let location = seen["location"].as_str().unwrap();
    assert!(location.starts_with(&root), "{location}");
    // Firn sees what PyIceberg wrote, in the warehouse it chose.
    let ns = client.list_namespaces_in("second").await.unwrap();
    assert_eq!(ns[0].name, "py");
    let ident = firn_client::TableIdent::new("py", "t");
    let t = client.load_table(&ident, false).await.unwrap();
    assert!(t.location.starts_with(&root));
    let files = list_objects(&t.location);
    assert!(files.iter().any(|f| f.ends_with(".parquet")), "{files:?}");
}
