//! What operators watch: Prometheus metrics counted right over a known workload (a real
//! `firn serve`, so the process's metrics are its own), readiness that follows the object
//! store and the catalog database down and back up, on `/readyz` and the gRPC health check,
//! and graceful shutdown.

use std::process::{Command, Stdio};
use std::time::Duration;

use firn_client::{TableWriter, WriterOptions};
use firn_core::storage::fault::FaultConfig;
use firn_tests::*;

/// The value of the sample `name{labels}` in a Prometheus text exposition (0 when absent).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

async fn scrape(admin: &str) -> String {
    reqwest::get(format!("{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn metrics_count_a_known_workload() {
    let dir = tempfile::tempdir().unwrap();
    let (grpc, rest, admin) = (free_port(), free_port(), free_port());
    let mut child = Command::new(firn_bin())
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(serve_backend_args(&dir.path().join("data")))
        .args(["--grpc-listen", &format!("127.0.0.1:{grpc}")])
        .args(["--rest-listen", &format!("127.0.0.1:{rest}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_port(&format!("127.0.0.1:{admin}")).await;
    wait_for_port(&format!("127.0.0.1:{grpc}")).await;
    let admin = format!("http://127.0.0.1:{admin}");
    let before = scrape(&admin).await;
    let client = firn_client::FirnClient::connect(&format!("http://127.0.0.1:{grpc}"))
        .await
        .unwrap();
    let (ident, _) = create_table(&client, "ops", "t", false).await;
    for i in 0..5 {
        let mut w = TableWriter::new(&client, &ident, WriterOptions::default())
            .await
            .unwrap();
        w.write(&batch(i * 10..i * 10 + 10, 0)).await.unwrap();
        w.commit().await.unwrap();
    }
    // Two refused requests: a table that does not exist, twice.
    for _ in 0..2 {
        let missing = firn_client::TableIdent::new("ops", "missing");
        assert!(client.load_table(&missing, false).await.is_err());
    }
    let after = scrape(&admin).await;
    let delta = |series: &str| sample(&after, series) - sample(&before, series);
    assert_eq!(
        delta(r#"firn_commits_total{operation="append",outcome="committed"}"#),
        5.0,
        "{after}"
    );
    assert_eq!(
        delta(r#"firn_commit_duration_seconds_count{operation="append",outcome="committed"}"#),
        5.0
    );
    assert_eq!(
        delta(
            r#"firn_requests_total{transport="grpc",method="/firn.catalog.v1.CatalogService/Commit",code="OK"}"#
        ),
        5.0
    );
    assert_eq!(
        delta(
            r#"firn_requests_total{transport="grpc",method="/firn.catalog.v1.CatalogService/LoadTable",code="NOT_FOUND"}"#
        ),
        2.0
    );
    assert!(delta("firn_commit_batch_size_count") >= 1.0);
    assert!(delta(r#"firn_object_store_request_duration_seconds_count{op="put"}"#) >= 1.0);
    assert!(after.contains("firn_write_behind_bytes"));
    // Alive and ready.
    let health = reqwest::get(format!("{admin}/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = reqwest::get(format!("{admin}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);

    // One log line per commit at the default level, naming table, operation and snapshot.
    // SIGTERM: the server stops, flushes and exits 0.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let stopping = std::time::Instant::now();
    // Waited for without blocking the runtime, which drives the client's side of the
    // connections the server is closing.
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(status.success(), "firn serve exited with {status}: {log}");
    // An idle client connection does not hold the shutdown to its timeout.
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "{:?}: {log}",
        stopping.elapsed()
    );
    let committed: Vec<&str> = log.lines().filter(|l| l.contains("committed")).collect();
    assert_eq!(committed.len(), 5, "{log}");
    assert!(
        committed.iter().all(|l| l.contains("table=ops.t")
            && l.contains("operation=\"append\"")
            && l.contains("snapshot=")),
        "{log}"
    );
    assert!(
        log.contains("request failed") && log.contains("NOT_FOUND"),
        "{log}"
    );
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log that is not a terminal"
    );
}

async fn readyz(server: &TestServer) -> (u16, String) {
    let r = reqwest::get(format!("{}/readyz", server.admin_endpoint))
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn grpc_health(server: &TestServer) -> i32 {
    let channel = tonic::transport::Endpoint::from_shared(server.endpoint.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

/// Polls the gRPC health check until it says `want` (it is refreshed every few seconds).
async fn wait_for_health(
    server: &TestServer,
    want: tonic_health::pb::health_check_response::ServingStatus,
) {
    for _ in 0..60 {
        if grpc_health(server).await == want as i32 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("the gRPC health check never said {want:?}");
}

#[tokio::test]
async fn readiness_follows_the_object_store_down_and_back() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let server = TestServer::start_with(Some(FaultConfig::default())).await;
    assert_eq!(readyz(&server).await.0, 200);
    wait_for_health(&server, ServingStatus::Serving).await;
    let store = server.store.clone().unwrap();
    store.set_down(true);
    let (status, body) = readyz(&server).await;
    assert_eq!(status, 503);
    assert!(body.contains("object store"), "{body}");
    wait_for_health(&server, ServingStatus::NotServing).await;
    store.set_down(false);
    assert_eq!(readyz(&server).await.0, 200);
    wait_for_health(&server, ServingStatus::Serving).await;
}

/// With the catalog on PostgreSQL (the PG phase of tools/test.sh): the catalog's database
/// stops taking connections and its sessions are ended, as when the server stops; then it
/// comes back.
#[tokio::test]
async fn readiness_follows_the_catalog_database_down_and_back() {
    let Ok(pg) = std::env::var("FIRN_TEST_POSTGRES") else {
        eprintln!("FIRN_TEST_POSTGRES is not set: the database part runs in the PostgreSQL phase");
        return;
    };
    use sqlx::Connection;
    let server = TestServer::start().await;
    assert_eq!(readyz(&server).await.0, 200);
    let db = server.catalog_url.rsplit('/').next().unwrap().to_string();
    let mut admin = sqlx::PgConnection::connect(&format!("{pg}/postgres"))
        .await
        .unwrap();
    sqlx::query(&format!("ALTER DATABASE {db} WITH ALLOW_CONNECTIONS false"))
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&db)
        .execute(&mut admin)
        .await
        .unwrap();
    let mut unready = false;
    for _ in 0..40 {
        let (status, body) = readyz(&server).await;
        if status == 503 {
            assert!(body.contains("database"), "{body}");
            unready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        unready,
        "/readyz stayed ready with the database refusing connections"
    );
    sqlx::query(&format!("ALTER DATABASE {db} WITH ALLOW_CONNECTIONS true"))
        .execute(&mut admin)
        .await
        .unwrap();
    let mut ready = false;
    for _ in 0..40 {
        if readyz(&server).await.0 == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(ready, "/readyz did not come back with the database");
}

/// SIGTERM with a request still in flight (a REST body that never finishes arriving): the
/// server waits `--shutdown-timeout` for it, then cuts it (the client sees its connection
/// close, not a hang), flushes and exits 0; the cut request changed nothing.
#[tokio::test]
async fn a_request_in_flight_at_the_shutdown_timeout_is_cut_not_waited_for() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let (grpc, rest) = (free_port(), free_port());
    let mut child = Command::new(firn_bin())
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(serve_backend_args(&dir.path().join("data")))
        .args(["--grpc-listen", &format!("127.0.0.1:{grpc}")])
        .args(["--rest-listen", &format!("127.0.0.1:{rest}")])
        .args(["--admin-listen", "127.0.0.1:0"])
        .args(["--shutdown-timeout", "1s", "--body-read-timeout", "60s"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_port(&format!("127.0.0.1:{rest}")).await;
    wait_for_port(&format!("127.0.0.1:{grpc}")).await;
    let mut conn = tokio::net::TcpStream::connect(format!("127.0.0.1:{rest}"))
        .await
        .unwrap();
    let body = r#"{"namespace": ["cut"]}"#;
    let head = format!(
        "POST /v1/namespaces HTTP/1.1\r\nHost: firn\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    // The head and half the body: the request is in flight until the rest arrives.
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&body.as_bytes()[..body.len() / 2])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let stopping = std::time::Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), conn.read_to_end(&mut answer)).await;
    let cut_after = stopping.elapsed();
    assert!(
        read.is_ok(),
        "the connection was neither answered nor closed"
    );
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(status.success(), "firn serve exited with {status}: {log}");
    // Waited for its timeout (the request was in flight), then cut: no answer at all.
    assert!(
        cut_after >= Duration::from_millis(900) && cut_after < Duration::from_secs(10),
        "cut after {cut_after:?}: {log}"
    );
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    assert!(log.contains("at the shutdown timeout: cut"), "{log}");

    // The cut request created nothing.
    let mut again = Command::new(firn_bin())
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(serve_backend_args(&dir.path().join("data")))
        .args(["--grpc-listen", &format!("127.0.0.1:{grpc}")])
        .args(["--rest-listen", &format!("127.0.0.1:{rest}")])
        .args(["--admin-listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(&format!("127.0.0.1:{grpc}")).await;
    let client = firn_client::FirnClient::connect(&format!("http://127.0.0.1:{grpc}"))
        .await
        .unwrap();
    assert!(client.list_namespaces().await.unwrap().is_empty());
    let _ = again.kill();
    let _ = again.wait();
}
