//! Connection limits of `firn serve` on real sockets: idle, silent and slow clients cannot
//! exhaust the server's file descriptors or shut out others, slow bodies get 408, and the
//! REST API takes only JSON bodies, answers every error in the ErrorModel and sends no
//! CORS headers. All traffic goes to 127.0.0.1.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use firn_tests::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A `firn serve` process on two free loopback ports.
struct Firn {
    child: Child,
    grpc: String,
    rest: String,
    _dir: tempfile::TempDir,
}

impl Drop for Firn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Firn {
    /// Starts `firn serve ARGS`, with at most `open_files` file descriptors if given (as a
    /// machine with a low `ulimit -n` has: soft and hard).
    async fn start(open_files: Option<u32>, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let grpc = format!("127.0.0.1:{}", free_port());
        let rest = format!("127.0.0.1:{}", free_port());
        let mut cmd = match open_files {
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(firn_bin());
                c
            }
            None => Command::new(firn_bin()),
        };
        let child = cmd
            .args(["serve", "--data-dir"])
            .arg(dir.path())
            .args(serve_backend_args(dir.path()))
            .args(["--grpc-listen", &grpc, "--rest-listen", &rest])
            .args(["--admin-listen", "127.0.0.1:0"])
            .args(args)
            .env("FIRN_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_port(&grpc).await;
        wait_for_port(&rest).await;
        Self {
            child,
            grpc,
            rest,
            _dir: dir,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }
}

/// An HTTP response: status, headers (names in lower case), body.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{}: body is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    #[track_caller]
    fn assert_status(&self, status: u16) {
        assert_eq!(
            self.status,
            status,
            "{:?}",
            String::from_utf8_lossy(&self.body)
        );
    }

    /// Asserts the spec's ErrorModel for `status`, its message mentioning `needle`.
    #[track_caller]
    fn assert_error_model(&self, status: u16, needle: &str) {
        assert_eq!(
            self.status,
            status,
            "{:?}",
            String::from_utf8_lossy(&self.body)
        );
        let v = self.json();
        assert_eq!(v["error"]["code"], status, "{v}");
        assert!(v["error"]["type"].is_string(), "{v}");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    }
}

/// Reads one response from `s` (its body by Content-Length; none for 204/304).
async fn read_response(s: &mut TcpStream) -> std::io::Result<Resp> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(Resp {
        status,
        headers,
        body,
    })
}

fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        r.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    r.push_str("\r\n");
    let mut r = r.into_bytes();
    r.extend_from_slice(body);
    r
}

/// One request on a new connection, answered within 10 s.
async fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    send(addr, request(method, path, headers, body)).await
}

/// Sends `bytes` on a new connection; the response, within 10 s.
async fn send(addr: &str, bytes: Vec<u8>) -> Resp {
    let line = String::from_utf8_lossy(&bytes[..bytes.len().min(40)]).to_string();
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(&bytes).await?;
        read_response(&mut s).await
    })
    .await
    .unwrap_or_else(|_| panic!("{line:?}: no answer within 10 s"))
    .unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

async fn post_json(addr: &str, path: &str, body: &Value) -> Resp {
    http(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await
}

/// Whether the server closed `s` within `wait` (end of stream or reset, after any bytes).
async fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// The failure: with few file descriptors, idle connections (no token needed)
/// made every new REST request time out and gRPC commits fail with "Too many open files".
/// Capped, the server closes idle connections to make room and keeps serving.
#[tokio::test]
async fn idle_connections_neither_exhaust_descriptors_nor_shut_out_clients() {
    let firn = Firn::start(
        Some(256),
        &[
            "--max-connections",
            "32",
            "--header-read-timeout",
            "30s",
            "--idle-timeout",
            "60s",
        ],
    )
    .await;
    // More idle connections than the server has descriptors (the timeouts are long: it
    // is the cap that must make room).
    let mut idle = Vec::new();
    for addr in [&firn.rest, &firn.grpc] {
        for _ in 0..200 {
            let connect = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr));
            let s = connect
                .await
                .expect("the server stopped taking connections");
            idle.push(s.unwrap());
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let start = Instant::now();
    let r = http(&firn.rest, "GET", "/v1/config", &[], b"").await;
    assert_eq!(r.status, 200);
    post_json(
        &firn.rest,
        "/v1/namespaces",
        &json!({"namespace": ["viarest"]}),
    )
    .await
    .assert_status(200);
    let rest_took = start.elapsed();

    let start = Instant::now();
    let client = tokio::time::timeout(Duration::from_secs(10), async {
        let client = firn_client::FirnClient::connect(&firn.endpoint())
            .await
            .expect("connect");
        let (ident, t) = create_table(&client, "ns", "t", false).await;
        let (uri, size) = write_parquet(&t.location, "a.parquet", &batch(0..10, 0));
        client
            .commit_once(append_request(&ident, vec![data_file(&uri, size)]))
            .await
            .expect("commit");
        client
    })
    .await
    .expect("gRPC calls answered within 10 s");
    let grpc_took = start.elapsed();
    eprintln!("with 400 idle connections: REST {rest_took:?}, gRPC connect+commit {grpc_took:?}");
    assert!(rest_took < Duration::from_secs(10));
    drop(client);
    // Most idle connections were closed to make room.
    let mut closed = 0;
    for s in &mut idle {
        if closed_within(s, Duration::from_millis(10)).await {
            closed += 1;
        }
    }
    assert!(
        closed >= 300,
        "only {closed} of 400 idle connections were closed"
    );
}

#[tokio::test]
async fn silent_slow_and_idle_connections_are_closed_and_clients_reconnect() {
    let firn = Firn::start(
        None,
        &["--header-read-timeout", "1s", "--idle-timeout", "3s"],
    )
    .await;
    let wait = Duration::from_secs(6);
    // Nothing sent, on either port.
    let mut silent_rest = TcpStream::connect(&firn.rest).await.unwrap();
    let mut silent_grpc = TcpStream::connect(&firn.grpc).await.unwrap();
    // Half a request head, and half an HTTP/2 preface.
    let mut slow_head = TcpStream::connect(&firn.rest).await.unwrap();
    slow_head
        .write_all(b"GET /v1/config HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let mut slow_preface = TcpStream::connect(&firn.grpc).await.unwrap();
    slow_preface.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let start = Instant::now();
    for (what, s) in [
        ("silent REST", &mut silent_rest),
        ("silent gRPC", &mut silent_grpc),
        ("slow REST head", &mut slow_head),
        ("slow HTTP/2 preface", &mut slow_preface),
    ] {
        assert!(closed_within(s, wait).await, "{what} connection still open");
    }
    eprintln!(
        "silent and slow connections closed after {:?}",
        start.elapsed()
    );

    // A kept-alive REST connection outlives the header timeout while idle, then closes.
    let mut kept = TcpStream::connect(&firn.rest).await.unwrap();
    kept.write_all(&request("GET", "/v1/config", &[], b""))
        .await
        .unwrap();
    let r = read_response(&mut kept).await.unwrap();
    r.assert_status(200);
    assert_eq!(r.header("keep-alive"), Some("timeout=3"));
    tokio::time::sleep(Duration::from_millis(1800)).await;
    kept.write_all(&request("GET", "/v1/namespaces", &[], b""))
        .await
        .unwrap();
    read_response(&mut kept).await.unwrap().assert_status(200);
    let idle_from = Instant::now();
    assert!(
        closed_within(&mut kept, wait).await,
        "idle REST connection still open"
    );
    let idle_for = idle_from.elapsed();
    assert!(
        idle_for >= Duration::from_millis(2500),
        "closed after {idle_for:?}"
    );

    // A gRPC client whose connection was closed while idle reconnects on its next call.
    let client = firn_client::FirnClient::connect(&firn.endpoint())
        .await
        .unwrap();
    client.create_namespace("before").await.unwrap();
    tokio::time::sleep(Duration::from_millis(4000)).await;
    client.create_namespace("after").await.unwrap();
    assert_eq!(client.list_namespaces().await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_stalled_or_trickled_body_gets_408() {
    let firn = Firn::start(None, &["--body-read-timeout", "1s"]).await;
    let head = b"POST /v1/namespaces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n";
    // Headers, part of the body, then nothing.
    let mut stalled = TcpStream::connect(&firn.rest).await.unwrap();
    stalled.write_all(head).await.unwrap();
    stalled.write_all(b"{\"namespace\": ").await.unwrap();
    // One byte every 200 ms: the whole body would take 20 s.
    let mut trickled = TcpStream::connect(&firn.rest).await.unwrap();
    trickled.write_all(head).await.unwrap();
    let (mut reader, mut writer) = trickled.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..30 {
            if writer.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let start = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(5), read_response(&mut stalled))
        .await
        .expect("no answer to a stalled body within 5 s")
        .unwrap();
    r.assert_error_model(408, "body");
    assert!(closed_within(&mut stalled, Duration::from_secs(5)).await);
    let mut rest = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => rest.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(r.is_ok(), "no answer to a trickled body within 5 s");
    let text = String::from_utf8_lossy(&rest);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("RequestTimeoutException"), "{text}");
    eprintln!("408 after {:?}", start.elapsed());
    trickle.abort();
    // The server still serves.
    post_json(&firn.rest, "/v1/namespaces", &json!({"namespace": ["ok"]}))
        .await
        .assert_status(200);
}

#[tokio::test]
async fn rest_takes_only_json_answers_errors_as_error_models_and_sends_no_cors() {
    let firn = Firn::start(None, &[]).await;
    let rest = firn.rest.as_str();
    let mut responses = Vec::new();
    let r = post_json(rest, "/v1/namespaces", &json!({"namespace": ["web"]})).await;
    r.assert_status(200);
    responses.push(r);
    let schema = json!({"type": "struct", "schema-id": 0, "fields": [
        {"id": 1, "name": "id", "type": "long", "required": true}]});
    let r = post_json(
        rest,
        "/v1/namespaces/web/tables",
        &json!({"name": "t", "schema": schema}),
    )
    .await;
    r.assert_status(200);
    let before = r.json()["metadata-location"].clone();
    responses.push(r);

    // What a web page can send cross-origin without asking (a "simple" request): the
    // commit must not happen.
    let commit = json!({"requirements": [],
        "updates": [{"action": "set-properties", "updates": {"pwned": "yes"}}]})
    .to_string();
    let change = json!({"table-changes": [{"identifier": {"namespace": ["web"], "name": "t"},
        "requirements": [], "updates": [{"action": "set-properties", "updates": {"pwned": "yes"}}]}]})
    .to_string();
    for content_type in [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
    ] {
        let headers = [
            ("Content-Type", content_type),
            ("Origin", "https://evil.example"),
        ];
        let r = http(
            rest,
            "POST",
            "/v1/namespaces/web/tables/t",
            &headers,
            commit.as_bytes(),
        )
        .await;
        r.assert_error_model(415, "application/json");
        responses.push(r);
        let r = http(
            rest,
            "POST",
            "/v1/transactions/commit",
            &headers,
            change.as_bytes(),
        )
        .await;
        r.assert_error_model(415, "application/json");
        responses.push(r);
    }
    let r = http(rest, "GET", "/v1/namespaces/web/tables/t", &[], b"").await;
    assert_eq!(
        r.json()["metadata-location"],
        before,
        "a text/plain POST changed the table"
    );
    assert!(r.json()["metadata"]["properties"].get("pwned").is_none());
    responses.push(r);

    // Every error is an ErrorModel.
    let r = http(
        rest,
        "POST",
        "/v1/namespaces",
        &[("Content-Type", "application/json")],
        b"{\"namespace\": [",
    )
    .await;
    r.assert_error_model(400, "JSON");
    responses.push(r);
    let r = http(rest, "GET", "/v1/nowhere", &[], b"").await;
    r.assert_error_model(404, "/v1/nowhere");
    responses.push(r);
    let r = http(rest, "DELETE", "/v1/config", &[], b"").await;
    r.assert_error_model(405, "DELETE");
    responses.push(r);
    let r = http(rest, "GET", "/v1/namespaces?pageSize=x", &[], b"").await;
    r.assert_error_model(400, "pageSize");
    responses.push(r);
    // A body over the limit is refused from its declared length, before it is sent.
    let r = send(
        rest,
        b"POST /v1/namespaces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 3145728\r\nExpect: 100-continue\r\n\r\n".to_vec(),
    )
    .await;
    r.assert_error_model(413, "larger");
    responses.push(r);

    // No CORS: not on a preflight, not on a request with an Origin.
    let r = http(
        rest,
        "OPTIONS",
        "/v1/namespaces/web/tables/t",
        &[
            ("Origin", "https://evil.example"),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "content-type"),
        ],
        b"",
    )
    .await;
    assert!(r.status >= 400, "{r:?}");
    responses.push(r);
    let r = http(
        rest,
        "GET",
        "/v1/config",
        &[("Origin", "https://evil.example")],
        b"",
    )
    .await;
    r.assert_status(200);
    responses.push(r);
    for r in &responses {
        assert!(
            !r.headers
                .iter()
                .any(|(k, _)| k.starts_with("access-control-")),
            "CORS headers in {r:?}"
        );
        assert!(r.header("access-control-allow-origin").is_none());
    }
}
