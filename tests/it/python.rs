//! Python clients: a writer using stubs generated from `proto/` (grpcio) commits pyarrow
//! files; PyIceberg reads and appends through the Iceberg REST API.

use std::path::PathBuf;

use firn_tests::*;

/// The repository root and the Python of `tools/.venv` (made by tools/setup-python.sh).
fn python() -> (PathBuf, PathBuf) {
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
    let (ident, _) = create_table(&client, "rs", "written", true).await;
    for (ids, day) in [(0..5, 0), (5..8, 1)] {
        let mut w = firn_client::TableWriter::new(&client, &ident, Default::default())
            .await
            .unwrap();
        w.write(&batch(ids, day)).await.unwrap();
        w.commit().await.unwrap();
    }
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
    // The table PyIceberg created with a staged create, rows included.
    assert_eq!(count("SELECT sum(id) FROM py.staged".into()).await, 3);
}
