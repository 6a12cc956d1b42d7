//! `firn serve` as a team runs it: authentication on, TLS with a certificate from the team's
//! CA (generated here), the first admin's credential, a second principal, and every client
//! (the CLI, `firn sql`, PyIceberg, Spark, a REST client) over TLS; and an OpenID Connect
//! issuer's tokens as credentials.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use firn_tests::*;

struct Served {
    _child: KillOnDrop,
    grpc: String,
    rest: String,
    data_dir: PathBuf,
}

async fn serve_tls(dir: &Path, cert: &Path, key: &Path) -> Served {
    serve(dir, Some((cert, key)), &[]).await
}

/// `firn serve --auth` in `dir`, over TLS with `tls` (certificate, key) if given, with
/// `extra` arguments.
async fn serve(dir: &Path, tls: Option<(&Path, &Path)>, extra: &[&str]) -> Served {
    let (grpc, rest) = (free_port(), free_port());
    let data_dir = dir.join("firn-data");
    let mut c = Command::new(firn_bin());
    c.args(["serve", "--auth", "--data-dir"])
        .arg(&data_dir)
        .args(serve_backend_args(&data_dir))
        .args(["--grpc-listen", &format!("127.0.0.1:{grpc}")])
        .args(["--rest-listen", &format!("127.0.0.1:{rest}")])
        .args(["--admin-listen", "127.0.0.1:0"])
        .args(extra);
    if let Some((cert, key)) = tls {
        c.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
    }
    let child = c
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(&format!("127.0.0.1:{grpc}")).await;
    wait_for_port(&format!("127.0.0.1:{rest}")).await;
    let scheme = if tls.is_some() { "https" } else { "http" };
    Served {
        _child: KillOnDrop(child),
        grpc: format!("{scheme}://127.0.0.1:{grpc}"),
        rest: format!("{scheme}://127.0.0.1:{rest}"),
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
async fn a_secured_server_over_tls_with_the_cli_sql_pyiceberg_spark_and_rest() {
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

    // Spark over TLS (trusting the CA through a JVM trust store) with the same credentials.
    let out = tokio::process::Command::new(root.join("tools/.venv/bin/python"))
        .arg(root.join("tools/python/spark_auth_check.py"))
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
        out.status.success() && stdout.lines().any(|l| l == "SPARK-OK"),
        "spark over TLS failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let checks: std::collections::HashMap<String, serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v["check"].as_str()?.to_string(), v)))
        .collect();
    assert_eq!(
        (
            checks["writer"]["before"].as_i64(),
            checks["writer"]["after"].as_i64()
        ),
        (Some(5), Some(7))
    );
    let reader = &checks["reader"];
    assert_eq!(reader["saw"], 7);
    assert!(
        reader["insert"]
            .as_str()
            .unwrap()
            .contains("ForbiddenException"),
        "{reader}"
    );
    // The refused insert changed nothing.
    assert_eq!(reader["after_denied"], 7);
    let bad = checks["bad_secret"]["result"].as_str().unwrap();
    assert!(bad.starts_with("refused"), "{bad}");
    let count = ok(
        cli(
            Some(&admin),
            &[
                "sql",
                "--format",
                "csv",
                "-c",
                "SELECT count(*) AS n FROM sales.orders",
            ],
        ),
        "count after spark",
    );
    assert_eq!(count.lines().collect::<Vec<_>>(), ["n", "7"]);
}

/// An OpenID Connect issuer on loopback: its discovery document and its JWKS, which the
/// test replaces to rotate keys.
struct Issuer {
    url: String,
    jwks: std::sync::Arc<std::sync::Mutex<serde_json::Value>>,
    /// How many times the JWKS was fetched.
    fetches: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Issuer {
    async fn start(keys: &[&JwtKey]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let jwks = std::sync::Arc::new(std::sync::Mutex::new(JwtKey::set(keys)));
        let discovery = serde_json::json!({"issuer": url, "jwks_uri": format!("{url}/jwks")});
        let served = jwks.clone();
        let fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = fetches.clone();
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(move || async move { axum::Json(discovery) }),
            )
            .route(
                "/jwks",
                axum::routing::get(move || async move {
                    counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    axum::Json(served.lock().unwrap().clone())
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Issuer { url, jwks, fetches }
    }

    fn fetched(&self) -> usize {
        self.fetches.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn rotate(&self, keys: &[&JwtKey]) {
        *self.jwks.lock().unwrap() = JwtKey::set(keys);
    }

    fn token(&self, key: &JwtKey, sub: &str, expires_in: i64) -> String {
        let now = chrono::Utc::now().timestamp();
        key.sign(&serde_json::json!({
            "iss": self.url, "sub": sub, "aud": "firn", "iat": now, "exp": now + expires_in,
        }))
    }
}

/// Tokens of an OpenID Connect issuer stand for Firn principals on every transport (the
/// CLI over gRPC, `firn sql`, REST, and the OAuth2 token exchange), with those principals'
/// grants; a subject that is no principal, an expired token and another audience are
/// refused; the issuer's rotated keys are followed without a restart, and its retired key
/// stops working. (Multi-threaded: the issuer answers while the test waits on the CLI.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oidc_issuers_tokens_name_principals_on_every_transport_and_rotation_is_followed() {
    let dir = tempfile::tempdir().unwrap();
    let (k1, k2) = (JwtKey::generate("k1"), JwtKey::generate("k2"));
    let issuer = Issuer::start(&[&k1]).await;
    let s = serve(
        dir.path(),
        None,
        &["--oidc-issuer", &issuer.url, "--oidc-audience", "firn"],
    )
    .await;
    let admin = std::fs::read_to_string(s.data_dir.join("admin-token")).unwrap();
    let cli = |token: &str, args: &[&str]| firn(&s.grpc, None, Some(token.trim()), args);
    for args in [
        &["namespace", "create", "sales"][..],
        &[
            "table",
            "create",
            "sales.orders",
            "--schema",
            "id:long not null,name:string",
        ],
        &[
            "sql",
            "-c",
            "INSERT INTO sales.orders VALUES (1, 'a'), (2, 'b')",
        ],
        &["principal", "create", "alice"],
        &["grant", "read", "ON", "namespace", "sales", "TO", "alice"],
    ] {
        ok(cli(&admin, args), &args.join(" "));
    }

    // Read once at start (after the discovery document).
    assert_eq!(issuer.fetched(), 1);
    let alice = issuer.token(&k1, "alice", 300);
    assert_eq!(ok(cli(&alice, &["whoami"]), "whoami").trim(), "alice");
    let rows = ok(
        cli(
            &alice,
            &[
                "sql",
                "--format",
                "csv",
                "-c",
                "SELECT count(*) AS n FROM sales.orders",
            ],
        ),
        "sql",
    );
    assert_eq!(rows.lines().collect::<Vec<_>>(), ["n", "2"]);
    let denied = cli(&alice, &["table", "drop", "sales.orders"]);
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("PERMISSION_DENIED"),
        "{denied:?}"
    );

    let http = reqwest::Client::new();
    let rest = |token: String, path: &str| {
        http.get(format!("{}/v1/{path}", s.rest))
            .bearer_auth(token)
            .send()
    };
    let listed = rest(alice.clone(), "namespaces/sales/tables")
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    assert!(listed.text().await.unwrap().contains("orders"));
    let create = http
        .post(format!("{}/v1/namespaces", s.rest))
        .bearer_auth(&alice)
        .json(&serde_json::json!({"namespace": ["hr"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(create.status(), 403);

    // Refused: a subject that is no principal, an expired token, another audience.
    let nobody = rest(issuer.token(&k1, "mallory", 300), "namespaces")
        .await
        .unwrap();
    assert_eq!(nobody.status(), 401);
    assert!(nobody.text().await.unwrap().contains("not a principal"));
    let expired = rest(issuer.token(&k1, "alice", -3600), "namespaces")
        .await
        .unwrap();
    assert_eq!(expired.status(), 401);
    assert!(expired.text().await.unwrap().contains("expired"));
    let now = chrono::Utc::now().timestamp();
    let other_aud = k1.sign(&serde_json::json!({
        "iss": issuer.url, "sub": "alice", "aud": "another-app", "exp": now + 300,
    }));
    assert_eq!(rest(other_aud, "namespaces").await.unwrap().status(), 401);

    // The OAuth2 token exchange turns the issuer's token into a Firn token of alice.
    let exchanged: serde_json::Value = http
        .post(format!("{}/v1/oauth/tokens", s.rest))
        .form(&[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("subject_token", alice.as_str()),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let firn_token = exchanged["access_token"].as_str().unwrap();
    assert!(firn_token.starts_with("firn_"), "{exchanged}");
    assert!(
        exchanged["expires_in"].as_i64().unwrap() <= 300,
        "{exchanged}"
    );
    assert_eq!(ok(cli(firn_token, &["whoami"]), "whoami").trim(), "alice");

    // The issuer rotates its keys: k2's tokens work at once, k1's no longer.
    issuer.rotate(&[&k2]);
    let rotated = issuer.token(&k2, "alice", 300);
    assert_eq!(ok(cli(&rotated, &["whoami"]), "whoami").trim(), "alice");
    let retired = cli(&issuer.token(&k1, "alice", 300), &["whoami"]);
    assert!(
        String::from_utf8_lossy(&retired.stderr).contains("is not among the issuer's keys"),
        "{retired:?}"
    );
    // One read for the rotation; made-up key ids soon after do not read again.
    assert_eq!(issuer.fetched(), 2);
    let mut bogus = JwtKey::generate("made-up");
    for _ in 0..3 {
        let t = issuer.token(&bogus, "alice", 300);
        assert_eq!(rest(t, "namespaces").await.unwrap().status(), 401);
        bogus = JwtKey::generate("made-up-too");
    }
    assert_eq!(issuer.fetched(), 2);
}

/// `firn serve` with an issuer whose keys cannot be had stops at start, naming it.
#[tokio::test]
async fn an_unreachable_oidc_issuer_stops_the_start_with_one_line() {
    let err = refused_start(&["--auth", "--oidc-issuer", "http://127.0.0.1:9/realms/data"]);
    assert!(
        err.contains("OpenID Connect issuer http://127.0.0.1:9/realms/data")
            && err.contains("cannot fetch"),
        "{err}"
    );
}
