//! An HTTP proxy in front of the test S3 server that counts requests by kind and injects
//! faults at the wire: `503 SlowDown` answers (the request never reaches the store), and
//! responses dropped after the store applied the request (the connection closes with no
//! answer, as when a response is lost), and latency. Faults are chosen by a seeded
//! generator, so a run replays from its seed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use rand::{Rng, SeedableRng, rngs::StdRng};

/// Which faults to inject, as shares of requests.
#[derive(Debug, Clone, Default)]
pub struct WireFaults {
    pub seed: u64,
    /// Answered `503 SlowDown` without reaching the store.
    pub slow_down_rate: f64,
    /// PUTs and POSTs applied by the store whose response is then dropped.
    pub drop_response_rate: f64,
    /// Added to every request.
    pub latency: Duration,
}

/// A running proxy; stops when dropped.
pub struct S3Proxy {
    /// Where clients send their requests, e.g. `http://127.0.0.1:PORT`.
    pub endpoint: String,
    counts: Arc<Mutex<BTreeMap<&'static str, u64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for S3Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Shared {
    upstream: String,
    http: reqwest::Client,
    faults: WireFaults,
    rng: Mutex<StdRng>,
    counts: Arc<Mutex<BTreeMap<&'static str, u64>>>,
}

/// The kind of an S3 request, from its method and query.
fn kind(method: &hyper::Method, query: &str) -> &'static str {
    let has = |k: &str| {
        query
            .split('&')
            .any(|p| p == k || p.starts_with(&format!("{k}=")))
    };
    match *method {
        hyper::Method::GET if has("list-type") || has("prefix") || has("delimiter") => "LIST",
        hyper::Method::GET if has("uploads") => "LIST",
        hyper::Method::GET => "GET",
        hyper::Method::HEAD => "HEAD",
        hyper::Method::PUT if has("partNumber") => "PUT part",
        hyper::Method::PUT => "PUT",
        hyper::Method::DELETE if has("uploadId") => "ABORT multipart",
        hyper::Method::DELETE => "DELETE",
        hyper::Method::POST if has("delete") => "DELETE many",
        hyper::Method::POST if has("uploads") => "CREATE multipart",
        hyper::Method::POST if has("uploadId") => "COMPLETE multipart",
        _ => "OTHER",
    }
}

impl S3Proxy {
    /// Starts a proxy on loopback in front of `upstream` (e.g. the test S3 server).
    pub async fn start(upstream: &str, faults: WireFaults) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let counts = Arc::new(Mutex::new(BTreeMap::new()));
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
            rng: Mutex::new(StdRng::seed_from_u64(faults.seed)),
            faults,
            counts: counts.clone(),
        });
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { shared.forward(req).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            endpoint,
            counts,
            task,
        }
    }

    /// Requests that reached the store, by kind (`PUT`, `GET`, `HEAD`, `LIST`, ...).
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        self.counts.lock().unwrap().clone()
    }

    /// Requests of `kind` that reached the store.
    pub fn count(&self, kind: &str) -> u64 {
        self.counts().get(kind).copied().unwrap_or(0)
    }
}

/// An error makes hyper close the connection without an answer (a dropped response, or
/// the store could not be reached).
#[derive(Debug)]
pub struct ProxyError(String);

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProxyError {}

fn failed(e: impl std::fmt::Display) -> ProxyError {
    ProxyError(e.to_string())
}

impl Shared {
    fn roll(&self, rate: f64) -> bool {
        rate > 0.0 && self.rng.lock().unwrap().gen_bool(rate.min(1.0))
    }

    async fn forward(&self, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, ProxyError> {
        if !self.faults.latency.is_zero() {
            tokio::time::sleep(self.faults.latency).await;
        }
        let method = req.method().clone();
        let query = req.uri().query().unwrap_or_default().to_string();
        let kind = kind(&method, &query);
        if self.roll(self.faults.slow_down_rate) {
            let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code>\
                        <Message>Please reduce your request rate.</Message></Error>";
            return Response::builder()
                .status(503)
                .header("content-type", "application/xml")
                .body(Full::new(Bytes::from(body)))
                .map_err(failed);
        }
        let path_and_query = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default();
        let headers = req.headers().clone();
        let body = req.into_body().collect().await.map_err(failed)?.to_bytes();
        let mut out = self
            .http
            .request(method.clone(), format!("{}{path_and_query}", self.upstream));
        for (k, v) in &headers {
            // The signature covers the Host the client sent: keep it.
            out = out.header(k, v);
        }
        let answer = out.body(body).send().await.map_err(failed)?;
        *self.counts.lock().unwrap().entry(kind).or_default() += 1;
        let applied = matches!(method, hyper::Method::PUT | hyper::Method::POST);
        if applied && answer.status().is_success() && self.roll(self.faults.drop_response_rate) {
            return Err(failed("response dropped by the fault proxy"));
        }
        let mut response = Response::builder().status(answer.status().as_u16());
        for (k, v) in answer.headers() {
            if k != "transfer-encoding" && k != "content-length" {
                response = response.header(k.as_str(), v.as_bytes());
            }
        }
        let bytes = answer.bytes().await.map_err(failed)?;
        response.body(Full::new(bytes)).map_err(failed)
    }
}
