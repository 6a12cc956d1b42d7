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
