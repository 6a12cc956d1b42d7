//! A Python writer using stubs generated from `proto/` (grpcio) commits pyarrow files.

use firn_tests::*;

#[tokio::test]
async fn python_grpc_client_commits_pyarrow_files() {
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
/// (current and first snapshot) and uses the namespace and table API.
#[tokio::test]
async fn pyiceberg_reads_firn_tables_over_rest() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let python = root.join("tools/.venv/bin/python");
    assert!(
        python.exists(),
        "run tools/setup-python.sh (tools/test.sh does)"
    );
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
}
