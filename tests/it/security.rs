//! `firn serve` as a team runs it: authentication on, TLS with a certificate from the team's
//! CA (generated here), the first admin's credential, a second principal, and every client
//! (the CLI, `firn sql`, PyIceberg, a REST client) over TLS.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use firn_tests::*;

struct Served {
    child: Child,
    grpc: String,
    rest: String,
    data_dir: PathBuf,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn serve_tls(dir: &Path, cert: &Path, key: &Path) -> Served {
    let (grpc, rest) = (free_port(), free_port());
    let data_dir = dir.join("firn-data");
    let child = Command::new(firn_bin())
        .args(["serve", "--auth", "--data-dir"])
        .arg(&data_dir)
        .args(["--grpc-listen", &format!("127.0.0.1:{grpc}")])
        .args(["--rest-listen", &format!("127.0.0.1:{rest}")])
        .args(["--admin-listen", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(cert)
        .arg("--tls-key")
        .arg(key)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(&format!("127.0.0.1:{grpc}")).await;
    wait_for_port(&format!("127.0.0.1:{rest}")).await;
    Served {
        child,
        grpc: format!("https://127.0.0.1:{grpc}"),
        rest: format!("https://127.0.0.1:{rest}"),
        data_dir,
    }
}

/// `firn ARGS` against `endpoint`, trusting `ca` (if any), with `token` in FIRN_TOKEN.
fn firn(endpoint: &str, ca: Option<&Path>, token: Option<&str>, args: &[&str]) -> Output {
    let mut c = Command::new(firn_bin());
    c.args(args).env("FIRN_ENDPOINT", endpoint);
    c.env_remove("FIRN_TOKEN").env_remove("FIRN_CA_CERT");
    if let Some(ca) = ca {
        c.env("FIRN_CA_CERT", ca);
    }
    if let Some(t) = token {
        c.env("FIRN_TOKEN", t);
    }
    c.output().unwrap()
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn a_secured_server_over_tls_with_the_cli_sql_pyiceberg_and_rest() {
    let dir = tempfile::tempdir().unwrap();
    let TlsFiles { ca, cert, key } = generate_certificates(dir.path());
    let s = serve_tls(dir.path(), &cert, &key).await;

    // The first admin's credential, readable only by its owner.
    let token_file = s.data_dir.join("admin-token");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let admin = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_string();
    let cli = |token: Option<&str>, args: &[&str]| firn(&s.grpc, Some(&ca), token, args);

    ok(
        cli(Some(&admin), &["namespace", "create", "sales"]),
        "create namespace",
    );
    ok(
        cli(
            Some(&admin),
            &[
                "table",
                "create",
                "sales.orders",
                "--schema",
                "id:long not null,name:string,ts:timestamp",
            ],
        ),
        "create table",
    );
    ok(
        cli(Some(&admin), &["principal", "create", "alice"]),
        "create principal",
    );
    ok(
        cli(
            Some(&admin),
            &["grant", "read", "ON", "namespace", "sales", "TO", "alice"],
        ),
        "grant",
    );
    let out = ok(
        cli(Some(&admin), &["token", "create", "alice", "--ttl", "30d"]),
        "token",
    );
    let alice = out.lines().last().unwrap().trim().to_string();
    assert!(alice.starts_with("firn_"), "{out}");
    assert_eq!(ok(cli(Some(&alice), &["whoami"]), "whoami").trim(), "alice");

    // What alice may and may not do, over TLS.
    let listed = ok(
        cli(Some(&alice), &["table", "list", "sales", "--json"]),
        "list",
    );
    assert!(listed.contains("sales.orders"), "{listed}");
    let denied = cli(Some(&alice), &["namespace", "create", "hr"]);
    assert!(!denied.status.success());
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("PERMISSION_DENIED"),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );
    let anonymous = cli(None, &["namespace", "list"]);
    assert!(String::from_utf8_lossy(&anonymous.stderr).contains("UNAUTHENTICATED"));
    let counted = ok(
        cli(
            Some(&admin),
            &[
                "sql",
                "-c",
                "INSERT INTO sales.orders VALUES (1, 'a', NULL), (2, 'b', NULL)",
            ],
        ),
        "sql insert",
    );
    assert!(!counted.is_empty());
    let rows = ok(
        cli(
            Some(&alice),
            &[
                "sql",
                "--format",
                "csv",
                "-c",
                "SELECT count(*) AS n FROM sales.orders",
            ],
        ),
        "sql select",
    );
    assert_eq!(rows.lines().collect::<Vec<_>>(), ["n", "2"], "{rows}");

    // Never plain text: without the CA the certificate is refused, and http:// to a TLS
    // port fails rather than speaking in the clear.
    let untrusted = firn(&s.grpc, None, Some(&admin), &["namespace", "list"]);
    assert!(!untrusted.status.success());
    let plain = firn(
        &s.grpc.replace("https://", "http://"),
        None,
        Some(&admin),
        &["namespace", "list"],
    );
    assert!(!plain.status.success());

    // REST over TLS, trusting the CA.
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap())
        .build()
        .unwrap();
    let resp = http
        .get(format!("{}/v1/namespaces", s.rest))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let untrusting = reqwest::Client::new()
        .get(format!("{}/v1/config", s.rest))
        .send()
        .await;
    assert!(untrusting.is_err(), "an unknown CA must be refused");

    // PyIceberg over TLS with OAuth2 client credentials.
    ok(
        cli(
            Some(&admin),
            &["principal", "create", "etl", "--kind", "service"],
        ),
        "etl",
    );
    ok(
        cli(
            Some(&admin),
            &["grant", "write", "ON", "table", "sales.orders", "TO", "etl"],
        ),
        "grant etl",
    );
    let etl = ok(cli(Some(&admin), &["token", "create", "etl"]), "etl token");
    let etl = etl.lines().last().unwrap().trim().to_string();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = tokio::process::Command::new(root.join("tools/.venv/bin/python"))
        .arg(root.join("tools/python/pyiceberg_auth_check.py"))
        .args([
            s.rest.as_str(),
            &format!("etl:{etl}"),
            &format!("alice:{alice}"),
            "sales",
            "orders",
        ])
        .arg(&ca)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("PYICEBERG-AUTH-OK"),
        "pyiceberg over TLS failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(
        (seen["before"].as_i64(), seen["after"].as_i64()),
        (Some(2), Some(5))
    );
    assert!(
        seen["reader_append"]
            .as_str()
            .unwrap()
            .starts_with("forbidden")
    );
}
