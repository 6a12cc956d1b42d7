//! The README's production walkthrough, run as written: its shell block, in a fresh
//! directory, with this build's `firn` first on the PATH.

use std::process::Command;

use firn_tests::{firn_bin, list_objects};

/// The shell block between the `NAME:begin` and `NAME:end` markers.
fn block(name: &str) -> String {
    let readme = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"),
    )
    .unwrap();
    let (_, rest) = readme
        .split_once(&format!("<!-- {name}:begin -->"))
        .unwrap_or_else(|| panic!("the README marks its {name} walkthrough"));
    let (block, _) = rest.split_once(&format!("<!-- {name}:end -->")).unwrap();
    let block = block.trim();
    block
        .strip_prefix("```sh")
        .and_then(|b| b.strip_suffix("```"))
        .expect("a sh code block")
        .to_string()
}

/// Runs a README block with bash in `dir`, this build's `firn` first on the PATH and no
/// client settings in the environment; returns (stdout, stderr), asserting success (the
/// server log `log` is shown if not).
fn run_block(name: &str, dir: &std::path::Path, log: &str) -> (String, String) {
    let bin_dir = firn_bin().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("bash");
    // Whatever happens, the server the walkthrough started in the background stops.
    cmd.args([
        "-euo",
        "pipefail",
        "-c",
        &format!(
            "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n{}",
            block(name)
        ),
    ])
    .current_dir(dir)
    .env("PATH", path);
    for (k, _) in std::env::vars() {
        if k.starts_with("FIRN_") || k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let log = std::fs::read_to_string(dir.join(log)).unwrap_or_default();
    assert!(
        out.status.success(),
        "the {name} walkthrough failed:\n{stdout}\n{stderr}\nserver log:\n{log}"
    );
    (stdout, stderr)
}

#[test]
fn the_production_walkthrough_runs_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let (stdout, stderr) = run_block("production", dir.path(), "firn.log");
    let log = std::fs::read_to_string(dir.path().join("firn.log")).unwrap_or_default();
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

#[test]
fn the_s3_walkthrough_runs_as_written() {
    // In a fresh directory, with the project's tools where the README expects them.
    let dir = tempfile::tempdir().unwrap();
    let tools = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools");
    std::os::unix::fs::symlink(tools, dir.path().join("tools")).unwrap();
    let (stdout, _) = run_block("s3", dir.path(), "firn-s3.log");
    // firn load and firn sql reached the bucket with the server's storage access.
    let oslo = stdout
        .lines()
        .position(|l| l.contains("oslo") && l.contains("12.5"));
    let bergen = stdout
        .lines()
        .position(|l| l.contains("bergen") && l.contains('8'));
    assert!(oslo.is_some() && oslo < bergen, "{stdout}");
    // PyIceberg appended and read back through vended credentials.
    assert!(
        stdout.contains("3 rows, read by PyIceberg from S3"),
        "{stdout}"
    );
    // The table's files are in the bucket (the test may list).
    let objects = list_objects("s3://lake/warehouse/trips");
    assert!(
        objects.iter().any(|o| o.ends_with(".parquet")),
        "{objects:?}"
    );
    // The archive warehouse: listed with its secret hidden, its table in its own bucket,
    // and PyIceberg found it by name alone.
    assert!(
        stdout.contains("archive") && stdout.contains("secret_access_key=***"),
        "{stdout}"
    );
    assert!(!stdout.contains("archive-secret"), "{stdout}");
    assert!(
        stdout.contains("[('old',)] 2 rows in the archive"),
        "{stdout}"
    );
    let archived = list_objects("s3://archive/tables/old");
    assert!(
        archived.iter().any(|o| o.ends_with(".parquet")),
        "{archived:?}"
    );
    assert!(list_objects("s3://lake/warehouse/old").is_empty());
}
