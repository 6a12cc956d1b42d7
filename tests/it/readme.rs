//! The README's production walkthrough, run as written: its shell block, in a fresh
//! directory, with this build's `firn` first on the PATH.

use std::process::Command;

use firn_tests::firn_bin;

/// The shell block between the `production:begin` and `production:end` markers.
fn production_block() -> String {
    let readme = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"),
    )
    .unwrap();
    let (_, rest) = readme
        .split_once("<!-- production:begin -->")
        .expect("the README marks its production walkthrough");
    let (block, _) = rest.split_once("<!-- production:end -->").unwrap();
    let block = block.trim();
    block
        .strip_prefix("```sh")
        .and_then(|b| b.strip_suffix("```"))
        .expect("a sh code block")
        .to_string()
}

#[test]
fn the_production_walkthrough_runs_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let bin_dir = firn_bin().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        // Whatever happens, the server the walkthrough started in the background stops.
        .args([
            "-euo",
            "pipefail",
            "-c",
            &format!(
                "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n{}",
                production_block()
            ),
        ])
        .current_dir(dir.path())
        .env("PATH", path)
        .env_remove("FIRN_TOKEN")
        .env_remove("FIRN_ENDPOINT")
        .env_remove("FIRN_CA_CERT")
        .env_remove("FIRN_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let log = std::fs::read_to_string(dir.path().join("firn.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "the walkthrough failed:\n{stdout}\n{stderr}\nserver log:\n{log}"
    );
    // --print-config shows the file's settings.
    assert!(
        stdout.contains("auth = true") && stdout.contains("grpc = \"127.0.0.1:50443\""),
        "{stdout}"
    );
    // whoami as the first admin.
    assert!(stdout.lines().any(|l| l == "admin"), "{stdout}");
    // The job's load committed; its namespace create was refused.
    assert!(stderr.contains("PERMISSION_DENIED"), "{stderr}");
    assert!(stdout.contains("etl may not create namespaces"));
    // The commit log names the job, and the metrics counted one append.
    assert!(
        stdout.contains("etl") && stdout.contains("append"),
        "{stdout}"
    );
    assert!(
        stdout.contains(r#"firn_commits_total{operation="append",outcome="committed"} 1"#),
        "{stdout}"
    );
    // The first start printed the admin token once, and stopped cleanly.
    assert!(log.contains("created principal admin"), "{log}");
    assert!(log.contains("stopped"), "{log}");
}
