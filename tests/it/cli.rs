//! The `firn` binary as a new user runs it: serve, then the client commands.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use firn_tests::*;

struct Served {
    _child: KillOnDrop,
    endpoint: String,
}

pub fn serve(data_dir: &Path, port: u16) -> std::io::Result<Child> {
    serve_with(data_dir, port, &[])
}

fn serve_with(data_dir: &Path, port: u16, extra: &[&str]) -> std::io::Result<Child> {
    Command::new(firn_bin())
        .args(["serve", "--data-dir"])
        .arg(data_dir)
        .args(extra)
        .args(serve_backend_args(data_dir))
        .args(["--grpc-listen", &format!("127.0.0.1:{port}")])
        .args([
            "--rest-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

async fn start(data_dir: &Path) -> Served {
    start_with(data_dir, &[]).await
}

async fn start_with(data_dir: &Path, extra: &[&str]) -> Served {
    let port = free_port();
    let child = serve_with(data_dir, port, extra).unwrap();
    wait_for_port(&format!("127.0.0.1:{port}")).await;
    Served {
        _child: KillOnDrop(child),
        endpoint: format!("http://127.0.0.1:{port}"),
    }
}

fn firn(s: &Served, args: &[&str]) -> Output {
    Command::new(firn_bin())
        .args(args)
        .env("FIRN_ENDPOINT", &s.endpoint)
        .output()
        .unwrap()
}

fn ok(s: &Served, args: &[&str]) -> String {
    let out = firn(s, args);
    assert!(
        out.status.success(),
        "firn {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn warehouses_from_the_cli_and_from_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("firn.toml");
    let archive = dir.path().join("archive");
    std::fs::write(
        &config,
        format!(
            "[warehouses.archive]\nurl = \"file://{}\"\n",
            archive.display()
        ),
    )
    .unwrap();
    let s = start_with(
        &dir.path().join("firn-data"),
        &["--config", config.to_str().unwrap()],
    )
    .await;
    let lake = dir.path().join("lake");
    let lake_url = format!("file://{}", lake.display());
    let out = ok(&s, &["warehouse", "create", "lake", &lake_url]);
    assert!(out.contains("created warehouse lake"), "{out}");
    let listed: serde_json::Value =
        serde_json::from_str(&ok(&s, &["warehouse", "list", "--json"])).unwrap();
    let sources: Vec<(&str, &str)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["name"].as_str().unwrap(), w["source"].as_str().unwrap()))
        .collect();
    assert_eq!(
        sources,
        [
            ("default", "server"),
            ("archive", "config"),
            ("lake", "catalog")
        ]
    );
    ok(
        &s,
        &["namespace", "create", "old", "--warehouse", "archive"],
    );
    let out = ok(&s, &["namespace", "create", "new", "--warehouse", "lake"]);
    assert!(out.contains("in warehouse lake"), "{out}");
    ok(&s, &["namespace", "create", "here"]);
    let text = ok(&s, &["namespace", "list"]);
    assert!(text.contains("old") && text.contains("archive"), "{text}");
    let only: serde_json::Value = serde_json::from_str(&ok(
        &s,
        &["namespace", "list", "--warehouse", "lake", "--json"],
    ))
    .unwrap();
    assert_eq!(only[0]["name"], "new");
    assert_eq!(only.as_array().unwrap().len(), 1);
    ok(&s, &["table", "create", "old.t", "--schema", "id:long"]);
    let shown = ok(&s, &["table", "show", "old.t"]);
    let archive_root = std::fs::canonicalize(&archive).unwrap();
    assert!(
        shown.contains(&format!("file://{}/old/", archive_root.display())),
        "{shown}"
    );
    assert!(shown.contains("warehouse:         archive"), "{shown}");
    // The config file's warehouse is the config file's to remove; a used one stays.
    for (name, why) in [
        ("archive", "config file"),
        ("lake", "still holds namespaces"),
        ("default", "server's own"),
    ] {
        let out = firn(&s, &["warehouse", "drop", name]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(why), "{name}: {err}");
    }
    ok(&s, &["namespace", "drop", "new"]);
    ok(&s, &["warehouse", "drop", "lake"]);

    // A config-file warehouse with a wrong setting stops the start, naming where it is.
    std::fs::write(
        &config,
        "[warehouses.bad]\nurl = \"s3://b/x\"\noptions = { endpoint = \"http://127.0.0.1:1\" }\n",
    )
    .unwrap();
    let line = refused_start(&["--config", config.to_str().unwrap()]);
    assert!(
        line.contains("warehouses.bad") && line.contains("allow_http=true"),
        "{line}"
    );
}

#[tokio::test]
async fn walkthrough_with_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("firn-data")).await;
    ok(&s, &["namespace", "create", "sales"]);
    ok(
        &s,
        &[
            "table",
            "create",
            "sales.orders",
            "--schema",
            "id:long not null,name:string,amount:double,ts:timestamp",
            "--partition-by",
            "day(ts)",
        ],
    );
    let listed = ok(&s, &["table", "list", "sales", "--json"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&listed).unwrap(),
        serde_json::json!(["sales.orders"])
    );

    // Parquet written by another tool (no field ids, in a different column order and types).
    let pq = dir.path().join("orders.parquet");
    let b = batch(0..100, 0);
    let f = std::fs::File::create(&pq).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(f, b.schema(), None).unwrap();
    w.write(&b).unwrap();
    w.close().unwrap();
    let csv = dir.path().join("more.csv");
    std::fs::write(&csv, "ts,id,amount,name\n2026-11-23 10:00:00,100,1.5,x\n2026-11-24 11:00:00,101,2.5,y\n2026-11-24 12:00:00,102,,z\n").unwrap();
    let jsonl = dir.path().join("last.jsonl");
    std::fs::write(
        &jsonl,
        "{\"id\": 200, \"name\": \"j\", \"ts\": \"2026-11-25T08:00:00\"}\n",
    )
    .unwrap();

    let out = ok(&s, &["load", "sales.orders", pq.to_str().unwrap()]);
    assert!(out.contains("committed snapshot"), "{out}");
    ok(&s, &["load", "sales.orders", csv.to_str().unwrap()]);
    ok(
        &s,
        &["load", "sales.orders", jsonl.to_str().unwrap(), "--json"],
    );

    let snaps: serde_json::Value =
        serde_json::from_str(&ok(&s, &["snapshots", "sales.orders", "--json"])).unwrap();
    let snaps = snaps.as_array().unwrap();
    assert_eq!(snaps.len(), 3);
    let added: Vec<&str> = snaps
        .iter()
        .map(|s| s["summary"]["added-records"].as_str().unwrap())
        .collect();
    assert_eq!(added, ["100", "3", "1"]);
    assert_eq!(snaps[2]["summary"]["total-records"], "104");
    assert_eq!(
        snaps[1]["summary"]["added-data-files"], "2",
        "the CSV rows fall on two days"
    );
    let text = ok(&s, &["snapshots", "sales.orders"]);
    assert!(
        text.lines().count() == 5 && text.contains("total_rows"),
        "{text}"
    );

    // Overwrite mode replaces the rows.
    ok(
        &s,
        &[
            "load",
            "sales.orders",
            jsonl.to_str().unwrap(),
            "--mode",
            "overwrite",
        ],
    );
    let show: serde_json::Value =
        serde_json::from_str(&ok(&s, &["table", "show", "sales.orders", "--json"])).unwrap();
    assert_eq!(show["version"], 4);
    let client = firn_client::FirnClient::connect(&s.endpoint).await.unwrap();
    let ident = firn_client::TableIdent::new("sales", "orders");
    assert_eq!(read_ids(&client, &ident, None).await, vec![200]);

    // Errors: one line on stderr, non-zero exit, nothing changed.
    for (args, needle) in [
        (
            vec!["load", "sales.nope", jsonl.to_str().unwrap()],
            "NOT_FOUND",
        ),
        (
            vec!["table", "create", "sales.bad", "--schema", "id:lung"],
            "lung",
        ),
        (
            vec!["table", "create", "sales.orders", "--schema", "id:long"],
            "ALREADY_EXISTS",
        ),
        (vec!["namespace", "drop", "sales"], "FAILED_PRECONDITION"),
        (
            vec![
                "load",
                "sales.orders",
                csv.to_str().unwrap().replace(".csv", ".txt").as_str(),
            ],
            "error",
        ),
    ] {
        let out = firn(&s, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let bad_csv = dir.path().join("bad.csv");
    std::fs::write(&bad_csv, "id,colour\n1,red\n").unwrap();
    let out = firn(&s, &["load", "sales.orders", bad_csv.to_str().unwrap()]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("colour"));
    assert_eq!(client.list_snapshots(&ident).await.unwrap().len(), 4);

    // Every command documents itself.
    for cmd in [
        &["--help"][..],
        &["serve", "--help"],
        &["load", "--help"],
        &["table", "create", "--help"],
        &["namespace", "--help"],
        &["snapshots", "--help"],
    ] {
        let out = Command::new(firn_bin()).args(cmd).output().unwrap();
        assert!(out.status.success() && !out.stdout.is_empty(), "{cmd:?}");
    }
}

fn sql(s: &Served, args: &[&str]) -> Output {
    let mut all = vec!["sql"];
    all.extend_from_slice(args);
    firn(s, &all)
}

fn sql_ok(s: &Served, args: &[&str]) -> String {
    let mut all = vec!["sql"];
    all.extend_from_slice(args);
    ok(s, &all)
}

#[tokio::test]
async fn sql_batch_mode_formats_limits_and_stops_at_the_first_error() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path()).await;
    sql_ok(
        &s,
        &[
            "-c",
            "CREATE SCHEMA s; CREATE TABLE s.t (id bigint, name string); INSERT INTO s.t VALUES (1, 'a'), (2, 'b');",
        ],
    );
    let q = "SELECT * FROM s.t ORDER BY id";
    assert_eq!(
        sql_ok(&s, &["--format", "csv", "-c", q]),
        "id,name\n1,a\n2,b\n"
    );
    assert_eq!(
        sql_ok(&s, &["--format", "tsv", "-c", q]),
        "id\tname\n1\ta\n2\tb\n"
    );
    assert_eq!(
        sql_ok(&s, &["--format", "json", "-c", q]).trim(),
        r#"[{"id":1,"name":"a"},{"id":2,"name":"b"}]"#
    );
    assert_eq!(
        sql_ok(&s, &["--format", "ndjson", "-c", q]),
        "{\"id\":1,\"name\":\"a\"}\n{\"id\":2,\"name\":\"b\"}\n"
    );
    let limited = sql_ok(&s, &["--max-rows", "1", "-c", q]);
    assert!(limited.contains("| 1  | a    |"), "{limited}");
    assert!(!limited.contains("| 2 "), "{limited}");
    assert!(limited.contains("(1 more rows"), "{limited}");

    // -f: the first error stops the run with a non-zero exit; later statements do not run.
    let file = dir.path().join("script.sql");
    std::fs::write(
        &file,
        "INSERT INTO s.t VALUES (3, 'c');\nSELECT * FROM s.nope;\nINSERT INTO s.t VALUES (4, 'd');\n",
    )
    .unwrap();
    let out = sql(&s, &["-f", file.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error:") && err.contains("s.nope"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert_eq!(
        sql_ok(
            &s,
            &["--format", "csv", "-c", "SELECT count(*) AS n FROM s.t"]
        ),
        "n\n3\n"
    );
    // A syntax error is an error too.
    assert!(!sql(&s, &["-c", "SELEC 1"]).status.success());
}

#[tokio::test]
async fn sql_shell_reads_multi_line_statements_and_backslash_commands() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path()).await;
    sql_ok(
        &s,
        &[
            "-c",
            "CREATE SCHEMA s; CREATE TABLE s.t (id bigint); INSERT INTO s.t VALUES (7)",
        ],
    );
    let home = tempfile::tempdir().unwrap();
    let mut child = Command::new(firn_bin())
        .args(["sql"])
        .env("FIRN_ENDPOINT", &s.endpoint)
        .env("HOME", home.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"SELECT id * 6\n  AS answer\nFROM s.t;\n\\timing\nSELECT nope;\n\\d\n\\d s.t\n\\snapshots s.t\n\\q\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("| 42     |"), "{stdout}");
    assert!(stdout.contains("timing is on"), "{stdout}");
    // An error does not end the shell: the commands after it ran.
    assert!(stderr.contains("error:"), "{stderr}");
    assert!(stdout.contains("s          t"), "{stdout}");
    assert!(stdout.contains("field id"), "{stdout}");
    assert!(stdout.contains("append"), "{stdout}");
    assert!(stdout.contains("Time:"), "{stdout}");
    let history = std::fs::read_to_string(home.path().join(".firn_history")).unwrap();
    assert!(history.contains("AS answer"), "{history}");
}

/// The maintenance commands a cron runs: `firn compact --where`, `firn expire --json` (and
/// its dry run), `firn remove-orphans`, with their exit codes and clear errors.
#[tokio::test]
async fn maintenance_commands_for_cron() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("data")).await;
    ok(&s, &["namespace", "create", "ops"]);
    ok(
        &s,
        &[
            "table",
            "create",
            "ops.ev",
            "--schema",
            "id:long,day:string",
            "--partition-by",
            "day",
        ],
    );
    for (i, day) in ["a", "a", "b", "b", "b"].iter().enumerate() {
        let csv = dir.path().join(format!("f{i}.csv"));
        std::fs::write(&csv, format!("id,day\n{i},{day}\n")).unwrap();
        ok(&s, &["load", "ops.ev", csv.to_str().unwrap()]);
    }
    // Compact only day b: three files into one.
    let out = ok(&s, &["compact", "ops.ev", "--where", "day = 'b'", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["files_rewritten"].as_u64(), v["files_written"].as_u64()),
        (Some(3), Some(1)),
        "{v}"
    );
    let out = ok(
        &s,
        &[
            "sql",
            "-c",
            "SELECT count(*) AS n, sum(id) AS s FROM ops.ev",
            "--format",
            "csv",
        ],
    );
    assert_eq!(out.trim(), "n,s\n5,10");
    // Expire everything but the current snapshot.
    let dry = ok(
        &s,
        &[
            "expire",
            "ops.ev",
            "--older-than",
            "0s",
            "--dry-run",
            "--json",
        ],
    );
    let dry: serde_json::Value = serde_json::from_str(&dry).unwrap();
    assert_eq!(dry[0]["expired_snapshots"], 5, "{dry}");
    let out = ok(&s, &["expire", "--all", "--older-than", "0s", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["table"], "ops.ev");
    assert_eq!(v[0]["expired_snapshots"], 5);
    assert_eq!(
        v[0]["data_files_deleted"], 3,
        "the three compacted files of day b: {v}"
    );
    assert_eq!(v[0]["failed_deletes"], 0);
    let out = ok(
        &s,
        &[
            "sql",
            "-c",
            "SELECT count(*) AS n FROM ops.ev",
            "--format",
            "csv",
        ],
    );
    assert_eq!(out.trim(), "n\n5");
    let out = ok(
        &s,
        &["remove-orphans", "ops.ev", "--older-than", "0s", "--json"],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["failed_deletes"], 0, "{v}");
    // Bad input: one line, non-zero exit.
    for args in [
        &["expire"][..],
        &["expire", "ops.ev", "--retain-last", "0"],
        &["expire", "ops.ev", "--older-than", "soon"],
        &["compact", "ops.ev", "--target-file-size", "12 parsecs"],
        &["compact", "ops.nope"],
        &["compact", "ops.ev", "--where", "nope = 1"],
    ] {
        let out = firn(&s, args);
        assert!(!out.status.success(), "firn {args:?} must fail");
        assert!(!out.stderr.is_empty(), "firn {args:?} says why");
    }
}
