//! The Iceberg REST catalog transport of Firn (spec: apache/iceberg
//! `open-api/rest-catalog-open-api.yaml`): parses requests, calls the shared [`Catalog`],
//! and answers in the spec's shapes, errors in its `ErrorModel` ([`error`]).
//!
//! No catalog logic lives here. Served: configuration, namespaces (list with paging,
//! create, load, exists, drop, properties), tables (list with paging, create, load with
//! ETag, exists, drop with `purgeRequested`, rename, register, commit), plus the metrics
//! and view probes clients send, `stage-create` with `assert-create` commits, and
//! multi-table `/transactions/commit` (one database transaction), and a table's storage
//! access as `X-Iceberg-Access-Delegation` asks: vended credentials (and `.../credentials`
//! to refresh them) or remote signing (`.../sign`, the spec's S3 signer, one per table).
//! `GET /v1/config` lists exactly the catalog endpoints.
//!
//! Every error, including routing's (404, 405) and the extractors' ([`extract`]), is an
//! `ErrorModel`. POST bodies must be `application/json` (else 415: a web page can send
//! `text/plain` cross-origin without asking, never JSON), at most [`MAX_BODY_BYTES`] (413)
//! and arrive within [`RestConfig::body_read_timeout`] (408); no CORS headers are sent.
//! [`serve`] caps and times out connections with [`firn_net`].

pub mod error;
pub mod extract;
mod idempotency;
mod oauth;

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Extension, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use firn_core::storage::access::{StorageAccess, iceberg_properties};
use firn_core::{Caller, Catalog, Secret, TableChange, TableIdent};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use iceberg::spec::{Schema, UnboundPartitionSpec};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tower::ServiceExt;

pub use error::RestError;
use extract::{Json, Path, Query, RawPathParams};

type Res<T> = Result<T, RestError>;

/// Largest request body read (413 beyond it).
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// Settings of the REST transport.
#[derive(Clone)]
pub struct RestConfig {
    /// Serve HTTPS with this (see [`firn_net::tls::acceptor`]); `None`: plain HTTP.
    pub tls: Option<firn_net::tls::TlsAcceptor>,
    /// The listener's connection cap, header-read and idle timeouts.
    pub limits: firn_net::Limits,
    /// A request's body must have arrived this long after its head, else 408.
    pub body_read_timeout: Duration,
}

impl Default for RestConfig {
    fn default() -> Self {
        Self {
            tls: None,
            limits: firn_net::Limits::default(),
            body_read_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Clone)]
struct AppState {
    catalog: Catalog,
    config: RestConfig,
}

/// Most names one page lists when the client does not say.
const DEFAULT_PAGE: usize = 100;

/// The endpoints Firn serves, as `GET /v1/config` announces them.
const ENDPOINTS: &[&str] = &[
    "GET /v1/{prefix}/namespaces",
    "POST /v1/{prefix}/namespaces",
    "GET /v1/{prefix}/namespaces/{namespace}",
    "HEAD /v1/{prefix}/namespaces/{namespace}",
    "DELETE /v1/{prefix}/namespaces/{namespace}",
    "POST /v1/{prefix}/namespaces/{namespace}/properties",
    "GET /v1/{prefix}/namespaces/{namespace}/tables",
    "POST /v1/{prefix}/namespaces/{namespace}/tables",
    "GET /v1/{prefix}/namespaces/{namespace}/tables/{table}",
    "HEAD /v1/{prefix}/namespaces/{namespace}/tables/{table}",
    "DELETE /v1/{prefix}/namespaces/{namespace}/tables/{table}",
    "POST /v1/{prefix}/namespaces/{namespace}/tables/{table}",
    "POST /v1/{prefix}/namespaces/{namespace}/register",
    "POST /v1/{prefix}/tables/rename",
    "POST /v1/{prefix}/transactions/commit",
    "POST /v1/{prefix}/namespaces/{namespace}/tables/{table}/metrics",
    "GET /v1/{prefix}/namespaces/{namespace}/tables/{table}/credentials",
];

/// What a path segment percent-encodes: everything but RFC 3986's unreserved characters.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The route of a table (load, exists, drop, and POST: commit).
const TABLE_ROUTE: &str = "/namespaces/{ns}/tables/{table}";
/// The route of multi-table commits.
const TRANSACTION_ROUTE: &str = "/transactions/commit";

/// The path parameters of a namespace's routes (a `prefix` too, under `/v1/{prefix}`).
#[derive(Deserialize)]
struct NsPath {
    ns: String,
}

/// The path parameters of a table's routes.
#[derive(Deserialize)]
struct TablePath {
    ns: String,
    table: String,
}

/// The warehouse a request is scoped to: the one its `/v1/{prefix}/` names (the prefix
/// `GET /v1/config?warehouse=NAME` handed out), or the server's own for unprefixed routes.
/// Namespaces of other warehouses do not exist for it.
#[derive(Clone)]
struct Scope {
    warehouse: String,
    prefix: Option<String>,
}

impl Scope {
    /// `NotFound` unless `namespace` is in this scope's warehouse (or does not exist).
    async fn check(&self, s: &AppState, namespace: &str) -> Res<()> {
        Ok(s.catalog
            .check_scope(&self.warehouse, Some(namespace))
            .await?)
    }

    /// The route below `/v1/` of `rest` in this scope.
    fn route(&self, rest: &str) -> String {
        match &self.prefix {
            Some(p) => format!("v1/{}/{rest}", utf8_percent_encode(p, PATH_SEGMENT)),
            None => format!("v1/{rest}"),
        }
    }
}

/// Puts the request's [`Scope`] in its extensions, refusing an unknown warehouse and a
/// namespace (in the path) of another warehouse with 404.
async fn scope(
    State(s): State<AppState>,
    params: Result<RawPathParams, RestError>,
    mut req: Request,
    next: Next,
) -> Response {
    let params = match params {
        Ok(RawPathParams(p)) => p,
        Err(e) => return e.into_response(),
    };
    let mut prefix = None;
    let mut ns = None;
    for (k, v) in &params {
        match k {
            "prefix" => prefix = Some(v.to_string()),
            "ns" => ns = namespace(v).ok(),
            _ => {}
        }
    }
    let scope = Scope {
        warehouse: prefix
            .clone()
            .unwrap_or_else(|| firn_core::DEFAULT_WAREHOUSE.to_string()),
        prefix,
    };
    if let Err(e) = s.catalog.check_scope(&scope.warehouse, ns.as_deref()).await {
        return RestError::from(e).into_response();
    }
    req.extensions_mut().insert(scope);
    next.run(req).await
}

/// The router of the REST API over `catalog`.
pub fn router(catalog: Catalog, config: RestConfig) -> Router {
    let state = AppState { catalog, config };
    let v1 = || {
        Router::new()
            .route("/config", get(get_config))
            .route("/namespaces", get(list_namespaces).post(create_namespace))
            .route(
                "/namespaces/{ns}",
                get(load_namespace)
                    .head(namespace_exists)
                    .delete(drop_namespace),
            )
            .route("/namespaces/{ns}/properties", post(update_properties))
            .route("/namespaces/{ns}/register", post(register_table))
            .route(
                "/namespaces/{ns}/tables",
                get(list_tables).post(create_table),
            )
            .route(
                TABLE_ROUTE,
                get(load_table)
                    .head(table_exists)
                    .delete(drop_table)
                    .post(commit_table),
            )
            .route("/namespaces/{ns}/tables/{table}/metrics", post(metrics))
            .route(
                "/namespaces/{ns}/tables/{table}/credentials",
                get(load_credentials),
            )
            .route("/namespaces/{ns}/tables/{table}/sign", post(sign_request))
            .route("/namespaces/{ns}/views/{view}", get(no_view).head(no_view))
            .route("/tables/rename", post(rename_table))
            .route(TRANSACTION_ROUTE, post(commit_transaction))
            // Route layers wrap only requests that reached an endpoint (a 404 or 405 reads no
            // body); the one added last runs first: the request is scoped to its warehouse,
            // the body is read (JSON only, bounded in size and time), then a retried
            // Idempotency-Key gets its first answer.
            .route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                idempotency::replay,
            ))
            .route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                read_body,
            ))
            .route_layer(axum::middleware::from_fn_with_state(state.clone(), scope))
            .route_layer(axum::middleware::from_fn(note_route))
    };
    Router::new()
        .route(OAUTH_ROUTE, post(oauth::tokens))
        .nest("/v1", v1())
        .nest("/v1/{prefix}", v1())
        .fallback(no_endpoint)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth))
        .layer(axum::middleware::from_fn(error_model))
        .layer(axum::middleware::from_fn(observe))
        .with_state(state)
}

/// Serves the REST API on `listener` until `shutdown` resolves, with the connection
/// limits of `config`; then waits for the requests in flight.
pub async fn serve(
    catalog: Catalog,
    config: RestConfig,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener =
        firn_net::Listener::new(listener, config.limits, firn_net::Protocol::Http1, "REST");
    // Tells clients that honour it (Java's HttpClient) when an idle connection closes.
    let keep_alive = match config.limits.idle_timeout.as_secs() {
        0 => None,
        secs => HeaderValue::from_str(&format!("timeout={secs}")).ok(),
    };
    let closer = listener.closer();
    let tls = config.tls.clone();
    let handshake_deadline = config.limits.header_read_timeout;
    let app = router(catalog, config);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    // The header-read and idle deadlines are firn-net's: hyper's header-read timer also
    // runs while a kept-alive connection waits for its next request, so it would close
    // idle connections after the (short) header timeout.
    http.header_read_timeout(None);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let conn = tokio::select! {
            conn = listener.accept() => conn,
            () = &mut shutdown => break,
        };
        let handle = conn.handle();
        let app = app.clone();
        let keep_alive = keep_alive.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
            let request = handle.request();
            let app = app.clone();
            let keep_alive = keep_alive.clone();
            async move {
                let Ok(mut resp) = app.oneshot(req).await;
                if let Some(v) = keep_alive
                    && !resp.headers().contains_key(header::CONNECTION)
                {
                    resp.headers_mut().insert("keep-alive", v);
                }
                Ok::<_, Infallible>(resp.map(|body| firn_net::Guarded::new(body, Some(request))))
            }
        });
        let watcher = graceful.watcher();
        let http = http.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let served = match tls {
                None => {
                    watcher
                        .watch(http.serve_connection(hyper_util::rt::TokioIo::new(conn), service))
                        .await
                }
                Some(acceptor) => {
                    match firn_net::tls::handshake(&acceptor, conn, handshake_deadline).await {
                        Ok(tls) => {
                            watcher
                                .watch(
                                    http.serve_connection(
                                        hyper_util::rt::TokioIo::new(tls),
                                        service,
                                    ),
                                )
                                .await
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "REST TLS handshake failed");
                            return;
                        }
                    }
                }
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, "REST connection ended with an error");
            }
        });
    }
    // Stop accepting, close idle connections, finish the requests in flight.
    drop(listener);
    closer.close_idle();
    graceful.shutdown().await;
    Ok(())
}

/// Whether a `Content-Type` header says JSON (parameters such as `charset` allowed).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

/// Reads a routed request's body whole, within the size limit and the body timeout; POST
/// bodies must be JSON.
async fn read_body(State(s): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() == Method::POST && !is_json(req.headers()) {
        let given = req
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| format!("{:?}", String::from_utf8_lossy(v.as_bytes())))
            .unwrap_or_else(|| "no Content-Type".into());
        return RestError::from_status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("request bodies must be application/json, got {given}"),
        )
        .into_response();
    }
    let too_large = || {
        RestError::from_status(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
        )
        .into_response()
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return too_large();
    }
    let (parts, body) = req.into_parts();
    let timeout = s.config.body_read_timeout;
    match tokio::time::timeout(timeout, Limited::new(body, MAX_BODY_BYTES).collect()).await {
        Ok(Ok(body)) => {
            next.run(Request::from_parts(parts, Body::from(body.to_bytes())))
                .await
        }
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => too_large(),
        Ok(Err(e)) => {
            RestError::bad_request(format!("cannot read the request body: {e}")).into_response()
        }
        Err(_) => {
            let mut resp = RestError::from_status(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} ms",
                    timeout.as_millis()
                ),
            )
            .into_response();
            // The rest of the body may still come: the connection cannot be reused.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            resp
        }
    }
}

async fn no_endpoint(method: Method, uri: axum::http::Uri) -> RestError {
    RestError::from_status(
        StatusCode::NOT_FOUND,
        format!("no endpoint {method} {}", uri.path()),
    )
}

/// Turns any error response that is not JSON (axum's 405, or plain-text rejections of
/// extractors not wrapped in [`extract`]) into the `ErrorModel`, keeping its headers
/// (`Allow`, ...).
async fn error_model(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(resp.headers()) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            let allowed = parts
                .headers
                .get(header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .map(|a| format!(" (allowed: {a})"))
                .unwrap_or_default();
            format!("method {method} is not allowed on {path}{allowed}")
        }
        _ if !text.is_empty() => text,
        _ => format!(
            "{method} {path}: {}",
            status.canonical_reason().unwrap_or("error")
        ),
    };
    parts.headers.remove(header::CONTENT_TYPE);
    parts.headers.remove(header::CONTENT_LENGTH);
    let mut resp = RestError::from_status(status, message).into_response();
    resp.headers_mut().extend(parts.headers);
    resp
}

/// The route a request matched, handed out to [`observe`] with the response.
#[derive(Clone)]
struct Route(String);

async fn note_route(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| format!("{} {}", req.method(), m.as_str()));
    let mut resp = next.run(req).await;
    if let Some(r) = route {
        resp.extensions_mut().insert(Route(r));
    }
    resp
}

/// Every request: a span with its request id (echoed in `x-request-id`), the request
/// metrics by route and status, and one log line for each that failed.
async fn observe(req: Request, next: Next) -> Response {
    use tracing::Instrument;
    let id = firn_net::request_id(req.headers().get("x-request-id").map(|v| v.as_bytes()));
    let method = req.method().clone();
    let span = tracing::info_span!("request", request_id = %id, transport = "rest");
    let started = std::time::Instant::now();
    let mut resp = next.run(req).instrument(span.clone()).await;
    let took = started.elapsed();
    let route = resp
        .extensions()
        .get::<Route>()
        .map(|r| r.0.clone())
        .unwrap_or_else(|| format!("{method} (no route)"));
    let status = resp.status();
    firn_core::metrics::global().request("rest", &route, status.as_str(), took);
    if status.is_client_error() || status.is_server_error() {
        span.in_scope(|| {
            tracing::info!(
                route,
                status = status.as_u16(),
                took_ms = took.as_secs_f64() * 1e3,
                "request failed"
            )
        });
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// The OAuth2 token endpoint, the one route that needs no credential.
const OAUTH_ROUTE: &str = "/v1/oauth/tokens";

/// Authenticates every request but the OAuth2 token exchange (see
/// [`Catalog::authenticate`]) and hands the [`Caller`] to the handlers; a missing or bad
/// credential is 401 before any other work (idempotent replay included).
async fn auth(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    if req.uri().path() == OAUTH_ROUTE {
        return next.run(req).await;
    }
    let caller = match bearer(req.headers()) {
        Ok(credential) => state.catalog.authenticate(credential.as_ref()).await,
        Err(e) => Err(e),
    };
    match caller {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => RestError::from(e).into_response(),
    }
}

/// The bearer token of `Authorization`, if any; `Unauthenticated` when the header is there
/// but is not `Bearer <token>`.
fn bearer(headers: &HeaderMap) -> Result<Option<Secret>, firn_core::Error> {
    let Some(v) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let bad = || {
        firn_core::Error::Unauthenticated(
            "the Authorization header is not \"Bearer <token>\"".into(),
        )
    };
    let v = v.to_str().map_err(|_| bad())?;
    let (scheme, token) = v.trim().split_once(' ').ok_or_else(bad)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(bad());
    }
    Ok(Some(Secret::new(token.trim())))
}

// ---- helpers ---------------------------------------------------------------------------

/// A namespace from the path (levels separated by 0x1F); Firn namespaces have one level.
fn namespace(ns: &str) -> Res<String> {
    if ns.contains('\u{1f}') {
        return Err(RestError::bad_request(format!(
            "namespace {:?} has several levels; Firn namespaces have one",
            ns.replace('\u{1f}', ".")
        )));
    }
    Ok(ns.to_string())
}

/// A namespace that is looked up: one with several levels cannot exist in Firn, so it is
/// "not found" (404 NoSuchNamespaceException), as clients probing for one expect.
fn existing_namespace(ns: &str) -> Res<String> {
    namespace(ns).map_err(|_| {
        RestError::new(
            StatusCode::NOT_FOUND,
            "NoSuchNamespaceException",
            format!("namespace {} does not exist", ns.replace('\u{1f}', ".")),
        )
    })
}

/// A table that is looked up: under a multi-level namespace it cannot exist (404
/// NoSuchTableException). Spark probes `a.b.snapshots` as a table before treating it as
/// the metadata table `snapshots` of `a.b`, and falls back only on this exception.
fn existing_table(ns: &str, table: String) -> Res<TableIdent> {
    match namespace(ns) {
        Ok(ns) => Ok(TableIdent::new(ns, table)),
        Err(_) => Err(RestError::new(
            StatusCode::NOT_FOUND,
            "NoSuchTableException",
            format!("table {}.{table} does not exist", ns.replace('\u{1f}', ".")),
        )),
    }
}

fn one_level(levels: &[String]) -> Res<String> {
    match levels {
        [one] => Ok(one.clone()),
        _ => Err(RestError::bad_request(format!(
            "namespace {levels:?} must have exactly one level"
        ))),
    }
}

#[derive(Deserialize)]
struct Paging {
    #[serde(rename = "pageToken")]
    page_token: Option<String>,
    #[serde(rename = "pageSize")]
    page_size: Option<usize>,
    parent: Option<String>,
}

/// One page of sorted `names` after the token; returns the page and the next token.
fn page(mut names: Vec<String>, p: &Paging) -> Res<(Vec<String>, Option<String>)> {
    names.sort();
    let size = match p.page_size {
        Some(0) => return Err(RestError::bad_request("pageSize must be positive")),
        Some(n) => n,
        None => DEFAULT_PAGE.max(names.len()),
    };
    let start = match p.page_token.as_deref() {
        None | Some("") => 0,
        Some(t) => names.partition_point(|n| n.as_str() <= t),
    };
    let rest = &names[start.min(names.len())..];
    let page: Vec<String> = rest.iter().take(size).cloned().collect();
    let next = (rest.len() > size).then(|| page.last().cloned()).flatten();
    Ok((page, next))
}

// ---- config and namespaces -------------------------------------------------------------

/// How a client asked to reach a table's objects (`X-Iceberg-Access-Delegation`, a
/// comma-separated list of mechanisms it supports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delegation {
    /// No mechanism: the client has its own access (the config says where the store is).
    None,
    /// `vended-credentials`: credentials in `config` and `storage-credentials` (preferred
    /// when a client lists both: it then needs no round trip per request).
    Credentials,
    /// `remote-signing`: no credentials; the client has each request signed by Firn.
    RemoteSigning,
}

fn delegation(headers: &HeaderMap) -> Delegation {
    let listed = |mechanism: &str| {
        headers
            .get("x-iceberg-access-delegation")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|m| m.trim() == mechanism))
    };
    if listed("vended-credentials") {
        Delegation::Credentials
    } else if listed("remote-signing") {
        Delegation::RemoteSigning
    } else {
        Delegation::None
    }
}

/// The FileIO properties of a table's storage: where the store is, and with `secrets` the
/// credentials (see `firn_core::storage::access`: the warehouse's own, unscoped).
fn file_io_properties(access: &StorageAccess, secrets: bool) -> Value {
    json!(iceberg_properties(access, secrets))
}

/// The `config` of a loaded table `ident` for a client that asked for `delegation`; with
/// remote signing (S3 only), where the table's signer is: `s3.signer.endpoint` below the
/// catalog's URI (clients default `s3.signer.uri` to it), and PyIceberg's names for the
/// same (its signer needs the fsspec FileIO).
fn table_config(
    access: &StorageAccess,
    delegation: Delegation,
    ident: &TableIdent,
    scope: &Scope,
) -> Value {
    let mut config = file_io_properties(access, delegation == Delegation::Credentials);
    if delegation == Delegation::RemoteSigning && !access.options.is_empty() {
        let enc = |s: &str| utf8_percent_encode(s, PATH_SEGMENT).to_string();
        config["s3.remote-signing-enabled"] = json!("true");
        config["s3.signer.endpoint"] = json!(scope.route(&format!(
            "namespaces/{}/tables/{}/sign",
            enc(&ident.namespace),
            enc(&ident.name)
        )));
        config["s3.signer"] = json!("S3V4RestSigner");
        config["py-io-impl"] = json!("pyiceberg.io.fsspec.FsspecFileIO");
    }
    config
}

/// The `storage-credentials` of a table: its location as the prefix, with the credentials.
fn storage_credentials(access: &StorageAccess) -> Value {
    let config = iceberg_properties(access, true);
    if !config.keys().any(|k| k.starts_with("s3.access-key-id")) {
        return json!([]);
    }
    json!([{"prefix": access.location, "config": config}])
}

#[derive(Deserialize)]
struct ConfigParams {
    warehouse: Option<String>,
}

/// `GET /v1/config[?warehouse=W]`: the client's settings for warehouse `W` (a name or root
/// URL; none: the server's own). A named warehouse comes with the `prefix` that scopes the
/// client's later requests to it.
async fn get_config(State(s): State<AppState>, Query(p): Query<ConfigParams>) -> Res<Json<Value>> {
    let name = s
        .catalog
        .resolve_warehouse(p.warehouse.as_deref().unwrap_or_default())
        .await?;
    let (root, access) = s.catalog.warehouse_access(&name).await?;
    let mut overrides = json!({ "warehouse": root });
    if name != firn_core::DEFAULT_WAREHOUSE {
        overrides["prefix"] = json!(name);
    }
    Ok(Json(json!({
        "defaults": file_io_properties(&access, false),
        "overrides": overrides,
        "endpoints": ENDPOINTS,
        "idempotency-key-lifetime": firn_core::idempotency::KEY_LIFETIME_ISO,
    })))
}

async fn list_namespaces(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(scope): Extension<Scope>,
    Query(p): Query<Paging>,
) -> Res<Json<Value>> {
    if p.parent.as_deref().is_some_and(|x| !x.is_empty()) {
        // Namespaces have one level: nothing is nested.
        namespace(p.parent.as_deref().unwrap_or_default())?;
        return Ok(Json(json!({"namespaces": []})));
    }
    let names = s
        .catalog
        .list_namespaces(&caller, Some(&scope.warehouse))
        .await?
        .into_iter()
        .map(|n| n.name)
        .collect();
    let (names, next) = page(names, &p)?;
    let namespaces: Vec<Value> = names.into_iter().map(|n| json!([n])).collect();
    Ok(Json(
        json!({"namespaces": namespaces, "next-page-token": next}),
    ))
}

#[derive(Deserialize)]
struct CreateNamespaceBody {
    namespace: Vec<String>,
    #[serde(default)]
    properties: HashMap<String, String>,
}

async fn create_namespace(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(scope): Extension<Scope>,
    Json(b): Json<CreateNamespaceBody>,
) -> Res<Json<Value>> {
    let name = one_level(&b.namespace)?;
    let ns = s
        .catalog
        .create_namespace_in(&caller, &name, &scope.warehouse, b.properties)
        .await?;
    Ok(Json(
        json!({"namespace": [ns.name], "properties": ns.properties}),
    ))
}

async fn load_namespace(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(NsPath { ns }): Path<NsPath>,
) -> Res<Json<Value>> {
    let ns = s
        .catalog
        .get_namespace(&caller, &existing_namespace(&ns)?)
        .await?;
    Ok(Json(
        json!({"namespace": [ns.name], "properties": ns.properties}),
    ))
}

async fn namespace_exists(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(NsPath { ns }): Path<NsPath>,
) -> Res<StatusCode> {
    s.catalog
        .get_namespace(&caller, &existing_namespace(&ns)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn drop_namespace(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(NsPath { ns }): Path<NsPath>,
) -> Res<StatusCode> {
    match s.catalog.drop_namespace(&caller, &namespace(&ns)?).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(firn_core::Error::FailedPrecondition(m)) => Err(RestError::new(
            StatusCode::CONFLICT,
            "NamespaceNotEmptyException",
            m,
        )),
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
struct PropertiesBody {
    #[serde(default)]
    removals: Vec<String>,
    #[serde(default)]
    updates: HashMap<String, String>,
}

async fn update_properties(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(NsPath { ns }): Path<NsPath>,
    Json(b): Json<PropertiesBody>,
) -> Res<Json<Value>> {
    if let Some(k) = b.removals.iter().find(|k| b.updates.contains_key(*k)) {
        return Err(RestError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "UnprocessableEntityException",
            format!("property {k} is both updated and removed"),
        ));
    }
    let r = s
        .catalog
        .update_namespace_properties(&caller, &namespace(&ns)?, &b.removals, b.updates)
        .await?;
    Ok(Json(json!({
        "updated": r.updated,
        "removed": r.removed,
        "missing": r.missing,
    })))
}

// ---- tables ----------------------------------------------------------------------------

async fn list_tables(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(NsPath { ns }): Path<NsPath>,
    Query(p): Query<Paging>,
) -> Res<Json<Value>> {
    let ns = namespace(&ns)?;
    let names = s
        .catalog
        .list_tables(&caller, &ns)
        .await?
        .into_iter()
        .map(|t| t.name)
        .collect();
    let (names, next) = page(names, &p)?;
    let ids: Vec<Value> = names
        .into_iter()
        .map(|n| json!({"namespace": [ns], "name": n}))
        .collect();
    Ok(Json(json!({"identifiers": ids, "next-page-token": next})))
}

#[derive(Deserialize)]
struct CreateTableBody {
    name: String,
    location: Option<String>,
    schema: Schema,
    #[serde(rename = "partition-spec")]
    partition_spec: Option<UnboundPartitionSpec>,
    #[serde(rename = "stage-create", default)]
    stage_create: bool,
    #[serde(default)]
    properties: HashMap<String, String>,
}

async fn create_table(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(scope): Extension<Scope>,
    Path(NsPath { ns }): Path<NsPath>,
    headers: HeaderMap,
    Json(b): Json<CreateTableBody>,
) -> Res<Response> {
    let ident = TableIdent::new(namespace(&ns)?, b.name.clone());
    let spec = firn_core::create_table_spec(
        &b.schema,
        b.partition_spec.as_ref(),
        b.location.clone(),
        b.properties.clone(),
    )?;
    if b.stage_create {
        // Nothing is written: the client commits the table into existence (assert-create).
        let metadata: Value = serde_json::from_str(
            &s.catalog.stage_table(&caller, &ident, spec).await?,
        )
        .map_err(|e| RestError::from(firn_core::Error::internal_from("table metadata", e)))?;
        let location = metadata["location"].as_str().unwrap_or_default();
        let delegation = delegation(&headers);
        let access = storage_access(&s, &caller, &ident, location, delegation).await?;
        let mut body = json!({
            "metadata": metadata,
            "config": table_config(&access, delegation, &ident, &scope),
        });
        if delegation == Delegation::Credentials {
            body["storage-credentials"] = storage_credentials(&access);
        }
        return Ok(Json(body).into_response());
    }
    s.catalog.create_table(&caller, &ident, spec).await?;
    load(&s, &caller, &scope, &ident, &headers).await
}

/// Which snapshots a load returns (`?snapshots=all|refs`).
#[derive(Deserialize, Default)]
struct LoadParams {
    snapshots: Option<String>,
}

/// A `LoadTableResult`/`CommitTableResponse` body with the metadata JSON spliced in as
/// written (a 10,000-snapshot table's metadata is megabytes: no parse, no re-serialise).
fn spliced(
    location: &str,
    metadata: &str,
    config: Option<&Value>,
    credentials: Option<&Value>,
) -> Response {
    let config = config
        .map(|c| format!(r#","config":{c}"#))
        .unwrap_or_default();
    let credentials = credentials
        .map(|c| format!(r#","storage-credentials":{c}"#))
        .unwrap_or_default();
    let body = format!(
        r#"{{"metadata-location":{},"metadata":{metadata}{config}{credentials}}}"#,
        Value::from(location)
    );
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// The `LoadTableResult` of a table, with its ETag (the metadata file names the version).
async fn load(
    s: &AppState,
    caller: &Caller,
    scope: &Scope,
    ident: &TableIdent,
    headers: &HeaderMap,
) -> Res<Response> {
    load_with(s, caller, scope, ident, headers, &LoadParams::default()).await
}

async fn load_with(
    s: &AppState,
    caller: &Caller,
    scope: &Scope,
    ident: &TableIdent,
    headers: &HeaderMap,
    params: &LoadParams,
) -> Res<Response> {
    let refs_only = match params.snapshots.as_deref() {
        None | Some("all") => false,
        Some("refs") => true,
        Some(other) => {
            return Err(RestError::bad_request(format!(
                "snapshots={other}: expected all or refs"
            )));
        }
    };
    // The ETag check needs only the metadata location (the version): a 304 reads no file.
    let t = s.catalog.load_table(caller, ident, false).await?;
    let etag = format!(
        "\"{}{}\"",
        t.metadata_location,
        if refs_only { ";refs" } else { "" }
    );
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag)
    {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    let metadata = s
        .catalog
        .metadata_file(caller, ident, &t.metadata_location, refs_only)
        .await?;
    // The load checked read on the table: its storage access goes with it.
    let delegation = delegation(headers);
    let access = storage_access(s, caller, ident, &t.location, delegation).await?;
    let config = table_config(&access, delegation, ident, scope);
    let credentials = (delegation == Delegation::Credentials).then(|| storage_credentials(&access));
    let mut resp = spliced(
        &t.metadata_location,
        &metadata,
        Some(&config),
        credentials.as_ref(),
    );
    if let Ok(v) = HeaderValue::from_str(&etag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    Ok(resp)
}

/// The storage access a table's `config` describes: with vended credentials the caller's
/// (checked: read on the table), else only where the store is.
async fn storage_access(
    s: &AppState,
    caller: &Caller,
    ident: &TableIdent,
    location: &str,
    delegation: Delegation,
) -> Res<StorageAccess> {
    Ok(match delegation {
        Delegation::Credentials => s.catalog.storage_access_at(caller, ident, location).await?,
        Delegation::None | Delegation::RemoteSigning => s.catalog.client_access(location).await?,
    })
}

async fn load_table(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(scope): Extension<Scope>,
    Path(TablePath { ns, table }): Path<TablePath>,
    Query(params): Query<LoadParams>,
    headers: HeaderMap,
) -> Res<Response> {
    load_with(
        &s,
        &caller,
        &scope,
        &existing_table(&ns, table)?,
        &headers,
        &params,
    )
    .await
}

/// `GET .../tables/{table}/credentials`: fresh storage credentials for the table (needs
/// read on it).
async fn load_credentials(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(TablePath { ns, table }): Path<TablePath>,
) -> Res<Json<Value>> {
    let ident = existing_table(&ns, table)?;
    let access = s.catalog.storage_access(&caller, &ident).await?;
    Ok(Json(
        json!({"storage-credentials": storage_credentials(&access)}),
    ))
}

/// The body of a remote-signing request (the spec's `S3SignRequest`; `region`, `body`
/// and `properties` are accepted and not used: the store's region is the server's).
#[derive(Deserialize)]
struct SignBody {
    method: String,
    uri: String,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, Vec<String>>,
    #[serde(default, rename = "region")]
    _region: Option<String>,
}

/// `POST .../tables/{table}/sign`: signs one S3 request for the table's objects (read
/// needs read on the table; a write, write). The answer is the spec's `S3SignResponse`.
async fn sign_request(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(TablePath { ns, table }): Path<TablePath>,
    Json(b): Json<SignBody>,
) -> Res<Json<Value>> {
    let ident = existing_table(&ns, table)?;
    let request = firn_core::storage::sign::SignRequest {
        method: b.method,
        uri: b.uri,
        headers: b.headers,
    };
    let signed = s.catalog.sign_request(&caller, &ident, &request).await?;
    Ok(Json(json!({"uri": signed.uri, "headers": signed.headers})))
}

async fn table_exists(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(TablePath { ns, table }): Path<TablePath>,
) -> Res<StatusCode> {
    let ident = existing_table(&ns, table)?;
    s.catalog.load_table(&caller, &ident, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct DropParams {
    /// `true`/`false` in any case (PyIceberg sends `False`).
    #[serde(rename = "purgeRequested")]
    purge_requested: Option<String>,
}

async fn drop_table(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(TablePath { ns, table }): Path<TablePath>,
    Query(params): Query<DropParams>,
) -> Res<StatusCode> {
    let ident = existing_table(&ns, table)?;
    let purge = match params
        .purge_requested
        .as_deref()
        .map(str::to_ascii_lowercase)
    {
        None => false,
        Some(v) if v == "true" => true,
        Some(v) if v == "false" => false,
        Some(v) => {
            return Err(RestError::bad_request(format!(
                "purgeRequested={v}: expected true or false"
            )));
        }
    };
    // Without purgeRequested the files stay (the table may be registered again).
    if purge {
        s.catalog.drop_table_and_purge(&caller, &ident).await?;
    } else {
        s.catalog.drop_table(&caller, &ident).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct RegisterBody {
    name: String,
    #[serde(rename = "metadata-location")]
    metadata_location: String,
    #[serde(default)]
    overwrite: bool,
}

async fn register_table(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(scope): Extension<Scope>,
    Path(NsPath { ns }): Path<NsPath>,
    headers: HeaderMap,
    Json(b): Json<RegisterBody>,
) -> Res<Response> {
    if b.overwrite {
        return Err(RestError::bad_request(
            "register with overwrite=true is not supported: drop the table first",
        ));
    }
    let ident = TableIdent::new(namespace(&ns)?, b.name);
    s.catalog
        .register_table(&caller, &ident, &b.metadata_location, "rest")
        .await?;
    load_with(
        &s,
        &caller,
        &scope,
        &ident,
        &headers,
        &LoadParams::default(),
    )
    .await
}

#[derive(Deserialize)]
struct RestIdent {
    namespace: Vec<String>,
    name: String,
}

#[derive(Deserialize)]
struct RenameBody {
    source: RestIdent,
    destination: RestIdent,
}

async fn rename_table(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(scope): Extension<Scope>,
    Json(b): Json<RenameBody>,
) -> Res<StatusCode> {
    let from = TableIdent::new(one_level(&b.source.namespace)?, b.source.name);
    let to = TableIdent::new(one_level(&b.destination.namespace)?, b.destination.name);
    scope.check(&s, &from.namespace).await?;
    scope.check(&s, &to.namespace).await?;
    s.catalog.rename_table(&caller, &from, &to).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct CommitBody {
    #[serde(default)]
    requirements: Vec<iceberg::TableRequirement>,
    #[serde(default)]
    updates: Vec<iceberg::TableUpdate>,
}

/// The `Idempotency-Key` of a request: a retry with the same key is applied once.
fn idempotency_key(headers: &HeaderMap) -> Res<Option<&str>> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| RestError::bad_request("Idempotency-Key must be ASCII")),
    }
}

/// Who is calling, for the commit log.
fn client_of(headers: &HeaderMap) -> String {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|v| format!("rest:{}", v.chars().take(100).collect::<String>()))
        .unwrap_or_else(|| "rest".into())
}

async fn commit_table(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(TablePath { ns, table }): Path<TablePath>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Res<Response> {
    let b: CommitBody = serde_json::from_slice(&body)
        .map_err(|e| RestError::bad_request(format!("commit request: {e}")))?;
    let change = TableChange {
        ident: TableIdent::new(namespace(&ns)?, table),
        requirements: b.requirements,
        updates: b.updates,
    };
    let t = s
        .catalog
        .commit_metadata(
            &caller,
            change,
            &client_of(&headers),
            idempotency_key(&headers)?,
        )
        .await?;
    let metadata = t
        .metadata_json
        .as_deref()
        .ok_or_else(|| RestError::from(firn_core::Error::internal("commit without metadata")))?;
    Ok(spliced(&t.metadata_location, metadata, None, None))
}

#[derive(Deserialize)]
struct TransactionChange {
    identifier: RestIdent,
    #[serde(default)]
    requirements: Vec<iceberg::TableRequirement>,
    #[serde(default)]
    updates: Vec<iceberg::TableUpdate>,
}

#[derive(Deserialize)]
struct TransactionBody {
    #[serde(rename = "table-changes")]
    table_changes: Vec<TransactionChange>,
}

async fn commit_transaction(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(scope): Extension<Scope>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Res<StatusCode> {
    let b: TransactionBody = serde_json::from_slice(&body)
        .map_err(|e| RestError::bad_request(format!("transaction request: {e}")))?;
    let changes = b
        .table_changes
        .into_iter()
        .map(|c| {
            Ok(TableChange {
                ident: TableIdent::new(one_level(&c.identifier.namespace)?, c.identifier.name),
                requirements: c.requirements,
                updates: c.updates,
            })
        })
        .collect::<Res<Vec<_>>>()?;
    for c in &changes {
        scope.check(&s, &c.ident.namespace).await?;
    }
    s.catalog
        .commit_transaction(
            &caller,
            changes,
            &client_of(&headers),
            idempotency_key(&headers)?,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn metrics() -> StatusCode {
    StatusCode::NO_CONTENT
}

async fn no_view() -> RestError {
    RestError::new(
        StatusCode::NOT_FOUND,
        "NoSuchViewException",
        "Firn has no views",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Method, Request};
    use firn_core::{CatalogConfig, Env, WarehouseConfig};
    use http_body_util::BodyExt;
    use std::convert::Infallible;
    use tower::ServiceExt;

    async fn app() -> (Router, tempfile::TempDir) {
        app_with(RestConfig::default()).await
    }

    /// A catalog on `dir`'s database and warehouse (a second one sees the first's state).
    async fn open_catalog(dir: &std::path::Path) -> Catalog {
        Catalog::open(
            CatalogConfig {
                catalog_url: format!("sqlite://{}", dir.join("c.db").display()),
                warehouse: WarehouseConfig::new(format!("file://{}", dir.join("w").display())),
            },
            Env::default(),
        )
        .await
        .unwrap()
    }

    async fn app_with(config: RestConfig) -> (Router, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let catalog = open_catalog(dir.path()).await;
        (router(catalog, config), dir)
    }

    async fn call(
        app: &Router,
        method: Method,
        uri: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(match body {
                Some(b) => Body::from(b.to_string()),
                None => Body::empty(),
            })
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (status, v)
    }

    fn schema() -> Value {
        json!({"type": "struct", "schema-id": 0, "fields": [
            {"id": 1, "name": "id", "type": "long", "required": true},
            {"id": 2, "name": "ts", "type": "timestamp", "required": false}
        ]})
    }

    #[tokio::test]
    async fn namespaces_tables_and_the_error_model() {
        let (app, dir) = app().await;
        let (s, v) = call(&app, Method::GET, "/v1/config", None).await;
        assert_eq!(s, StatusCode::OK);
        assert!(
            v["endpoints"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e == "GET /v1/{prefix}/namespaces")
        );

        for ns in ["a", "b", "c"] {
            let (s, _) = call(
                &app,
                Method::POST,
                "/v1/namespaces",
                Some(json!({"namespace": [ns]})),
            )
            .await;
            assert_eq!(s, StatusCode::OK);
        }
        let (s, v) = call(
            &app,
            Method::POST,
            "/v1/namespaces",
            Some(json!({"namespace": ["a"]})),
        )
        .await;
        assert_eq!(s, StatusCode::CONFLICT);
        assert_eq!(v["error"]["type"], "AlreadyExistsException");
        assert_eq!(v["error"]["code"], 409);
        assert!(v["error"]["message"].as_str().unwrap().contains('a'));

        // Paging.
        let (_, v) = call(&app, Method::GET, "/v1/namespaces?pageSize=2", None).await;
        assert_eq!(v["namespaces"], json!([["a"], ["b"]]));
        let token = v["next-page-token"].as_str().unwrap().to_string();
        let (_, v) = call(
            &app,
            Method::GET,
            &format!("/v1/namespaces?pageSize=2&pageToken={token}"),
            None,
        )
        .await;
        assert_eq!(v["namespaces"], json!([["c"]]));
        assert!(v["next-page-token"].is_null());

        let (s, _) = call(&app, Method::HEAD, "/v1/namespaces/a", None).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        let (s, _) = call(&app, Method::HEAD, "/v1/namespaces/zz", None).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        // A multi-level namespace cannot exist: looked up, it is not found (clients probe
        // `a.b` for Spark's metadata tables and fall back only on a 404).
        let (s, v) = call(&app, Method::GET, "/v1/namespaces/a%1Fb", None).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert_eq!(v["error"]["type"], "NoSuchNamespaceException");
        let (s, v) = call(
            &app,
            Method::GET,
            "/v1/namespaces/a%1Fb/tables/snapshots",
            None,
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert_eq!(v["error"]["type"], "NoSuchTableException");
        // Creating one is a bad request.
        let (s, v) = call(
            &app,
            Method::POST,
            "/v1/namespaces",
            Some(json!({"namespace": ["a", "b"]})),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(v["error"]["type"], "BadRequestException");

        // Tables.
        let body = json!({"name": "t", "schema": schema(),
            "partition-spec": {"fields": [{"source-id": 2, "field-id": 1000, "name": "ts_day", "transform": "day"}]}});
        let (s, v) = call(
            &app,
            Method::POST,
            "/v1/namespaces/a/tables",
            Some(body.clone()),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert!(
            v["metadata-location"]
                .as_str()
                .unwrap()
                .ends_with(".metadata.json")
        );
        assert_eq!(
            v["metadata"]["partition-specs"][0]["fields"][0]["transform"],
            "day"
        );
        let (s, v) = call(&app, Method::POST, "/v1/namespaces/a/tables", Some(body)).await;
        assert_eq!(
            (s, v["error"]["type"].as_str()),
            (StatusCode::CONFLICT, Some("AlreadyExistsException"))
        );
        let (s, v) = call(&app, Method::GET, "/v1/namespaces/a/tables/nope", None).await;
        assert_eq!(
            (s, v["error"]["type"].as_str()),
            (StatusCode::NOT_FOUND, Some("NoSuchTableException"))
        );
        let (s, v) = call(&app, Method::GET, "/v1/namespaces/zz/tables/t", None).await;
        assert_eq!(
            (s, v["error"]["type"].as_str()),
            (StatusCode::NOT_FOUND, Some("NoSuchNamespaceException"))
        );
        let (_, v) = call(&app, Method::GET, "/v1/namespaces/a/tables", None).await;
        assert_eq!(v["identifiers"], json!([{"namespace": ["a"], "name": "t"}]));
        // ETag / If-None-Match, and the snapshots parameter.
        let get = |etag: Option<&str>| {
            let mut r = Request::builder().uri("/v1/namespaces/a/tables/t?snapshots=refs");
            if let Some(e) = etag {
                r = r.header("if-none-match", e);
            }
            app.clone().oneshot(r.body(Body::empty()).unwrap())
        };
        let first = get(None).await.unwrap();
        assert_eq!(first.status(), StatusCode::OK);
        let etag = first.headers()["etag"].to_str().unwrap().to_string();
        assert_eq!(
            get(Some(&etag)).await.unwrap().status(),
            StatusCode::NOT_MODIFIED
        );
        assert_eq!(
            get(Some("\"other\"")).await.unwrap().status(),
            StatusCode::OK
        );
        let (s, _) = call(
            &app,
            Method::GET,
            "/v1/namespaces/a/tables/t?snapshots=some",
            None,
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);

        // A requirement that does not hold: 409 CommitFailed, nothing applied. An update
        // the builder refuses: 400, nothing applied. Never 5xx for either.
        let before = call(&app, Method::GET, "/v1/namespaces/a/tables/t", None)
            .await
            .1;
        let (s, v) = call(
            &app,
            Method::POST,
            "/v1/namespaces/a/tables/t",
            Some(json!({
            "requirements": [{"type": "assert-ref-snapshot-id", "ref": "main", "snapshot-id": 42}],
            "updates": [{"action": "set-properties", "updates": {"x": "1"}}]})),
        )
        .await;
        assert_eq!(
            (s, v["error"]["type"].as_str()),
            (StatusCode::CONFLICT, Some("CommitFailedException")),
            "{v}"
        );
        let (s, v) = call(
            &app,
            Method::POST,
            "/v1/namespaces/a/tables/t",
            Some(json!({
            "requirements": [], "updates": [{"action": "set-current-schema", "schema-id": 7}]})),
        )
        .await;
        assert_eq!(
            (s, v["error"]["type"].as_str()),
            (StatusCode::BAD_REQUEST, Some("BadRequestException")),
            "{v}"
        );
        let after = call(&app, Method::GET, "/v1/namespaces/a/tables/t", None)
            .await
            .1;
        assert_eq!(before["metadata-location"], after["metadata-location"]);
        // A commit whose requirements hold applies.
        let uuid = after["metadata"]["table-uuid"].clone();
        let (s, v) = call(&app, Method::POST, "/v1/namespaces/a/tables/t", Some(json!({
            "requirements": [{"type": "assert-table-uuid", "uuid": uuid}, {"type": "assert-ref-snapshot-id", "ref": "main", "snapshot-id": null}],
            "updates": [{"action": "set-properties", "updates": {"owner": "ada"}}]}))).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["metadata"]["properties"]["owner"], "ada");
        assert_ne!(v["metadata-location"], after["metadata-location"]);
        // A retried commit (same Idempotency-Key) on this table without snapshots is
        // answered as applied, not re-applied: re-applying would fail its requirement (409,
        // which tells a client its commit did not happen).
        let evolve = json!({
            "requirements": [{"type": "assert-current-schema-id", "current-schema-id": 0}],
            "updates": [
                {"action": "add-schema", "schema": {"type": "struct", "schema-id": 1, "fields": [
                    {"id": 1, "name": "id", "type": "long", "required": true},
                    {"id": 2, "name": "ts", "type": "timestamp", "required": false},
                    {"id": 3, "name": "extra", "type": "string", "required": false}]}},
                {"action": "set-current-schema", "schema-id": -1}]});
        for attempt in 0..2 {
            let req = Request::builder()
                .method(Method::POST)
                .uri("/v1/namespaces/a/tables/t")
                .header("content-type", "application/json")
                .header("Idempotency-Key", "schema-change-1")
                .body(Body::from(evolve.to_string()))
                .unwrap();
            let resp = app.clone().oneshot(req).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "attempt {attempt}");
        }
        let (_, v) = call(&app, Method::GET, "/v1/namespaces/a/tables/t", None).await;
        assert_eq!(v["metadata"]["current-schema-id"], 1);
        assert_eq!(v["metadata"]["schemas"].as_array().unwrap().len(), 2);
        // A commit's key is its commit id: its answer (the whole metadata) is not stored as
        // well; another mutation's is, and a key no commit id could be is refused up front.
        let keyed = |key: String, ns: &str| {
            Request::builder()
                .method(Method::POST)
                .uri("/v1/namespaces")
                .header("content-type", "application/json")
                .header("Idempotency-Key", key)
                .body(Body::from(json!({"namespace": [ns]}).to_string()))
                .unwrap()
        };
        let resp = app
            .clone()
            .oneshot(keyed("ns-1".into(), "keyed"))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let resp = app
            .clone()
            .oneshot(keyed("k".repeat(200), "too-long-key"))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let observer = open_catalog(dir.path()).await;
        assert_eq!(
            observer.recorded_answer("schema-change-1").await.unwrap(),
            None,
            "a commit's answer was recorded"
        );
        assert_eq!(
            observer
                .recorded_answer("ns-1")
                .await
                .unwrap()
                .map(|a| a.status),
            Some(200)
        );
        let caller = observer.authenticate(None).await.unwrap();
        assert!(
            observer
                .get_namespace(&caller, "too-long-key")
                .await
                .is_err()
        );

        let (s, v) = call(&app, Method::DELETE, "/v1/namespaces/a", None).await;
        assert_eq!(
            (s, v["error"]["type"].as_str()),
            (StatusCode::CONFLICT, Some("NamespaceNotEmptyException"))
        );
        let (s, _) = call(&app, Method::POST, "/v1/tables/rename", Some(json!({
            "source": {"namespace": ["a"], "name": "t"}, "destination": {"namespace": ["b"], "name": "u"}}))).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        let (s, _) = call(&app, Method::HEAD, "/v1/namespaces/b/tables/u", None).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        let (s, _) = call(
            &app,
            Method::DELETE,
            "/v1/namespaces/b/tables/u?purgeRequested=true",
            None,
        )
        .await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        let (s, _) = call(&app, Method::DELETE, "/v1/namespaces/a", None).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
    }

    #[test]
    fn s3_warehouses_tell_clients_where_the_store_is_and_keys_only_when_asked() {
        let mut c = firn_core::WarehouseConfig::new("s3://bucket/wh");
        for (k, v) in [
            ("endpoint", "http://127.0.0.1:9000"),
            ("allow_http", "true"),
            ("region", "eu-1"),
            ("access_key_id", "AKID"),
            ("secret_access_key", "hush"),
        ] {
            c.options.insert(k.into(), v.into());
        }
        let w = firn_core::Warehouse::open(c).unwrap();
        let access = w.client_access("s3://bucket/wh/ns/t");
        let p = file_io_properties(&access, false);
        assert_eq!(p["s3.endpoint"], "http://127.0.0.1:9000");
        assert_eq!(p["s3.region"], "eu-1");
        assert_eq!(p["s3.path-style-access"], "true");
        assert!(!p.to_string().contains("hush"));
        assert_eq!(
            file_io_properties(&access, true)["s3.secret-access-key"],
            "hush"
        );
        let creds = storage_credentials(&access);
        assert_eq!(creds[0]["prefix"], "s3://bucket/wh/ns/t");
        assert_eq!(creds[0]["config"]["s3.access-key-id"], "AKID");
        let local =
            firn_core::Warehouse::open(firn_core::WarehouseConfig::new("memory:///")).unwrap();
        let local = local.client_access("memory:///ns/t");
        assert_eq!(file_io_properties(&local, true), json!({}));
        assert_eq!(storage_credentials(&local), json!([]));
        let mut h = HeaderMap::new();
        assert_eq!(delegation(&h), Delegation::None);
        h.insert(
            "X-Iceberg-Access-Delegation",
            HeaderValue::from_static("remote-signing, vended-credentials"),
        );
        assert_eq!(delegation(&h), Delegation::Credentials);
        h.insert(
            "X-Iceberg-Access-Delegation",
            HeaderValue::from_static("remote-signing"),
        );
        assert_eq!(delegation(&h), Delegation::RemoteSigning);
        // Remote signing: no credentials, and the table's own signer (names encoded).
        let ident = TableIdent::new("ns", "a b");
        let unprefixed = Scope {
            warehouse: firn_core::DEFAULT_WAREHOUSE.into(),
            prefix: None,
        };
        let c = table_config(&access, Delegation::RemoteSigning, &ident, &unprefixed);
        assert_eq!(c["s3.remote-signing-enabled"], "true");
        assert_eq!(
            c["s3.signer.endpoint"],
            "v1/namespaces/ns/tables/a%20b/sign"
        );
        assert!(c.get("s3.secret-access-key").is_none(), "{c}");
        // A client scoped to a named warehouse signs through its prefix.
        let lake = Scope {
            warehouse: "lake".into(),
            prefix: Some("lake".into()),
        };
        let c = table_config(&access, Delegation::RemoteSigning, &ident, &lake);
        assert_eq!(
            c["s3.signer.endpoint"],
            "v1/lake/namespaces/ns/tables/a%20b/sign"
        );
        // Nothing to sign on a local warehouse.
        let c = table_config(&local, Delegation::RemoteSigning, &ident, &unprefixed);
        assert_eq!(c, json!({}));
    }

    #[tokio::test]
    async fn a_transaction_commits_every_table_or_none() {
        let (app, _dir) = app().await;
        call(
            &app,
            Method::POST,
            "/v1/namespaces",
            Some(json!({"namespace": ["n"]})),
        )
        .await;
        for t in ["x", "y"] {
            let (s, _) = call(
                &app,
                Method::POST,
                "/v1/namespaces/n/tables",
                Some(json!({"name": t, "schema": schema()})),
            )
            .await;
            assert_eq!(s, StatusCode::OK);
        }
        let change = |t: &str, snapshot: Option<i64>| {
            json!({"identifier": {"namespace": ["n"], "name": t},
                   "requirements": [{"type": "assert-ref-snapshot-id", "ref": "main", "snapshot-id": snapshot}],
                   "updates": [{"action": "set-properties", "updates": {"batch": "1"}}]})
        };
        let props = |app: Router, t: &'static str| async move {
            call(
                &app,
                Method::GET,
                &format!("/v1/namespaces/n/tables/{t}"),
                None,
            )
            .await
            .1["metadata"]["properties"]
                .clone()
        };
        let (s, v) = call(
            &app,
            Method::POST,
            "/v1/transactions/commit",
            Some(json!({"table-changes": [change("x", None), change("y", Some(42))]})),
        )
        .await;
        assert_eq!(
            (s, v["error"]["type"].as_str()),
            (StatusCode::CONFLICT, Some("CommitFailedException")),
            "{v}"
        );
        assert!(
            props(app.clone(), "x").await.get("batch").is_none(),
            "x must be unchanged"
        );
        let (s, v) = call(
            &app,
            Method::POST,
            "/v1/transactions/commit",
            Some(json!({"table-changes": [change("x", None), change("y", None)]})),
        )
        .await;
        assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
        assert_eq!(props(app.clone(), "x").await["batch"], "1");
        assert_eq!(props(app.clone(), "y").await["batch"], "1");
        let (s, _) = call(
            &app,
            Method::POST,
            "/v1/transactions/commit",
            Some(json!({"table-changes": [change("x", None), change("x", None)]})),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
    }

    /// A form POST to the OAuth2 endpoint.
    async fn oauth(app: &Router, form: &str) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(Method::POST)
            .uri(OAUTH_ROUTE)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(form.to_string()))
            .unwrap();
        let (s, _, v) = send(app, req).await;
        (s, v)
    }

    async fn get_with(app: &Router, uri: &str, token: &str) -> StatusCode {
        let req = Request::builder()
            .uri(uri)
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        app.clone().oneshot(req).await.unwrap().status()
    }

    #[tokio::test]
    async fn with_authentication_on_requests_need_a_token_that_oauth_can_exchange() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = open_catalog(dir.path())
            .await
            .with_auth(firn_core::AuthConfig {
                required: true,
                ..Default::default()
            });
        let issued = catalog.bootstrap_admin(None).await.unwrap().unwrap();
        let admin = issued.token.clone();
        let app = router(catalog.clone(), RestConfig::default());
        let (s, v) = call(&app, Method::GET, "/v1/namespaces", None).await;
        assert_eq!(
            (s, v["error"]["type"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("NotAuthorizedException"))
        );
        for bad in [
            "Basic abc",
            "Bearer",
            "Bearer firn_0000000000000000000000000000000000",
        ] {
            let req = Request::builder()
                .uri("/v1/namespaces")
                .header("authorization", bad)
                .body(Body::empty())
                .unwrap();
            let (s, _, v) = send(&app, req).await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{bad}");
            assert!(
                !v.to_string().contains("firn_0000"),
                "the error repeats the token: {v}"
            );
        }
        assert_eq!(
            get_with(&app, "/v1/namespaces", admin.expose()).await,
            StatusCode::OK
        );

        // Client credentials: the principal's name and one of its tokens.
        let form = format!(
            "grant_type=client_credentials&client_id=admin&client_secret={}&scope=catalog",
            admin.expose()
        );
        let (s, v) = oauth(&app, &form).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["token_type"], "bearer");
        assert_eq!(v["expires_in"], 3600);
        let access = v["access_token"].as_str().unwrap().to_string();
        assert_ne!(access, admin.expose());
        assert_eq!(
            get_with(&app, "/v1/namespaces", &access).await,
            StatusCode::OK
        );
        // A refresh by token exchange gives another working token.
        let (s, v) = oauth(
            &app,
            &format!(
                "grant_type=urn:ietf:params:oauth:grant-type:token-exchange&subject_token={access}&subject_token_type=urn:ietf:params:oauth:token-type:access_token"
            ),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let refreshed = v["access_token"].as_str().unwrap().to_string();
        assert_eq!(
            get_with(&app, "/v1/namespaces", &refreshed).await,
            StatusCode::OK
        );
        // PyIceberg without a credential sends "Bearer None": refused, not taken as anonymous.
        assert_eq!(
            get_with(&app, "/v1/namespaces", "None").await,
            StatusCode::UNAUTHORIZED
        );

        // A secret of another principal, a wrong one, a missing one, another grant type.
        let (s, v) = oauth(
            &app,
            &format!(
                "grant_type=client_credentials&client_id=alice&client_secret={}",
                admin.expose()
            ),
        )
        .await;
        assert_eq!(
            (s, v["error"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("invalid_client"))
        );
        assert!(!v.to_string().contains(admin.expose()));
        let (s, v) = oauth(
            &app,
            "grant_type=client_credentials&client_id=admin&client_secret=nope",
        )
        .await;
        assert_eq!(
            (s, v["error"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("invalid_client"))
        );
        let (s, v) = oauth(&app, "grant_type=client_credentials&client_id=admin").await;
        assert_eq!(
            (s, v["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_request"))
        );
        let (s, v) = oauth(&app, "grant_type=password&username=a&password=b").await;
        assert_eq!(
            (s, v["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("unsupported_grant_type"))
        );
        // Revoking the original token revokes the whole refresh chain exchanged from it.
        let caller = catalog.authenticate(Some(&admin)).await.unwrap();
        catalog
            .revoke_token(&caller, &issued.info.token_id)
            .await
            .unwrap();
        for t in [admin.expose(), access.as_str(), refreshed.as_str()] {
            assert_eq!(
                get_with(&app, "/v1/namespaces", t).await,
                StatusCode::UNAUTHORIZED
            );
        }
    }

    /// Sends `req`; returns its status, headers and JSON body (Null when empty).
    async fn send(app: &Router, req: Request<Body>) -> (StatusCode, HeaderMap, Value) {
        let resp = app.clone().oneshot(req).await.unwrap();
        let (status, headers) = (resp.status(), resp.headers().clone());
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {bytes:?}"))
        };
        (status, headers, v)
    }

    fn post(uri: &str, content_type: Option<&str>, body: impl Into<Body>) -> Request<Body> {
        let mut r = Request::builder().method(Method::POST).uri(uri);
        if let Some(t) = content_type {
            r = r.header("content-type", t);
        }
        r.body(body.into()).unwrap()
    }

    /// Asserts `v` is the spec's ErrorModel for `status` and its message mentions `needle`.
    #[track_caller]
    fn assert_error_model(status: StatusCode, v: &Value, expected: StatusCode, needle: &str) {
        assert_eq!(status, expected, "{v}");
        let e = &v["error"];
        assert_eq!(e["code"], expected.as_u16(), "{v}");
        assert!(
            e["type"].as_str().is_some_and(|t| t.ends_with("Exception")),
            "{v}"
        );
        let message = e["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(needle),
            "{message:?} does not mention {needle:?}"
        );
    }

    #[tokio::test]
    async fn routing_extractor_and_body_errors_are_error_models() {
        let (app, _dir) = app().await;
        let get = |uri: &str| Request::builder().uri(uri).body(Body::empty()).unwrap();
        let (s, _, v) = send(&app, get("/v1/nope")).await;
        assert_error_model(s, &v, StatusCode::NOT_FOUND, "/v1/nope");
        let (s, _, v) = send(&app, get("/elsewhere")).await;
        assert_error_model(s, &v, StatusCode::NOT_FOUND, "GET /elsewhere");
        let (s, h, v) = send(&app, post("/v1/config", Some("application/json"), "{}")).await;
        assert_error_model(s, &v, StatusCode::METHOD_NOT_ALLOWED, "POST");
        assert!(
            h.get("allow")
                .is_some_and(|a| a.to_str().unwrap().contains("GET")),
            "{h:?}"
        );
        let (s, _, v) = send(&app, get("/v1/namespaces?pageSize=many")).await;
        assert_error_model(s, &v, StatusCode::BAD_REQUEST, "pageSize");
        let (s, _, v) = send(&app, get("/v1/namespaces/a%FF")).await;
        assert_error_model(s, &v, StatusCode::BAD_REQUEST, "path");
        // Unparsable and mistyped JSON: 400, naming the problem.
        let (s, _, v) = send(
            &app,
            post(
                "/v1/namespaces",
                Some("application/json"),
                "{\"namespace\":",
            ),
        )
        .await;
        assert_error_model(s, &v, StatusCode::BAD_REQUEST, "JSON");
        let (s, _, v) = send(
            &app,
            post(
                "/v1/namespaces",
                Some("application/json"),
                r#"{"namespace": "a"}"#,
            ),
        )
        .await;
        assert_error_model(s, &v, StatusCode::BAD_REQUEST, "namespace");
        let (s, _, v) = send(&app, post("/v1/namespaces", Some("application/json"), "{}")).await;
        assert_error_model(s, &v, StatusCode::BAD_REQUEST, "namespace");
        // Too large, declared or not.
        let big = vec![b' '; MAX_BODY_BYTES + 1];
        let (s, _, v) = send(
            &app,
            post("/v1/namespaces", Some("application/json"), big.clone()),
        )
        .await;
        assert_error_model(s, &v, StatusCode::PAYLOAD_TOO_LARGE, "larger");
        let chunks = unsized_body(big);
        let (s, _, v) = send(
            &app,
            post("/v1/namespaces", Some("application/json"), chunks),
        )
        .await;
        assert_error_model(s, &v, StatusCode::PAYLOAD_TOO_LARGE, "larger");
        // Errors of the handlers stay as they were.
        let (s, _, v) = send(&app, get("/v1/namespaces/zz")).await;
        assert_error_model(s, &v, StatusCode::NOT_FOUND, "zz");
        assert_eq!(v["error"]["type"], "NoSuchNamespaceException");
    }

    /// A body of `bytes` in 64 KiB frames, without a declared length.
    fn unsized_body(bytes: Vec<u8>) -> Body {
        struct Frames(Vec<axum::body::Bytes>);
        impl http_body::Body for Frames {
            type Data = axum::body::Bytes;
            type Error = Infallible;
            fn poll_frame(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Infallible>>>
            {
                std::task::Poll::Ready(self.0.pop().map(|b| Ok(http_body::Frame::data(b))))
            }
        }
        let mut frames: Vec<axum::body::Bytes> = bytes
            .chunks(64 * 1024)
            .map(axum::body::Bytes::copy_from_slice)
            .collect();
        frames.reverse();
        Body::new(Frames(frames))
    }

    #[tokio::test]
    async fn post_bodies_must_be_json_so_a_web_page_cannot_commit() {
        let (app, _dir) = app().await;
        call(
            &app,
            Method::POST,
            "/v1/namespaces",
            Some(json!({"namespace": ["n"]})),
        )
        .await;
        let (s, _) = call(
            &app,
            Method::POST,
            "/v1/namespaces/n/tables",
            Some(json!({"name": "t", "schema": schema()})),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        let location = || async {
            call(&app, Method::GET, "/v1/namespaces/n/tables/t", None)
                .await
                .1["metadata-location"]
                .clone()
        };
        let before = location().await;
        let commit = json!({"requirements": [],
            "updates": [{"action": "set-properties", "updates": {"x": "1"}}]})
        .to_string();
        let change = json!({"table-changes": [{"identifier": {"namespace": ["n"], "name": "t"},
            "requirements": [], "updates": [{"action": "set-properties", "updates": {"x": "1"}}]}]})
        .to_string();
        for content_type in [
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            None,
        ] {
            let (s, _, v) = send(
                &app,
                post("/v1/namespaces/n/tables/t", content_type, commit.clone()),
            )
            .await;
            assert_error_model(
                s,
                &v,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "application/json",
            );
            let (s, _, v) = send(
                &app,
                post("/v1/transactions/commit", content_type, change.clone()),
            )
            .await;
            assert_error_model(
                s,
                &v,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "application/json",
            );
        }
        assert_eq!(
            location().await,
            before,
            "a non-JSON POST changed the table"
        );
        // JSON with parameters, in any case, is JSON.
        let (s, _, v) = send(
            &app,
            post(
                "/v1/namespaces/n/tables/t",
                Some("Application/JSON; charset=UTF-8"),
                commit,
            ),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_ne!(location().await, before);
    }

    #[tokio::test]
    async fn a_body_that_does_not_arrive_in_time_is_408() {
        struct Stalled;
        impl http_body::Body for Stalled {
            type Data = axum::body::Bytes;
            type Error = Infallible;
            fn poll_frame(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Infallible>>>
            {
                std::task::Poll::Pending
            }
        }
        let (app, _dir) = app_with(RestConfig {
            body_read_timeout: Duration::from_millis(200),
            ..RestConfig::default()
        })
        .await;
        let req = post(
            "/v1/namespaces",
            Some("application/json"),
            Body::new(Stalled),
        );
        let (s, h, v) = tokio::time::timeout(Duration::from_secs(10), send(&app, req))
            .await
            .expect("answered");
        assert_error_model(s, &v, StatusCode::REQUEST_TIMEOUT, "200 ms");
        assert_eq!(h["connection"], "close");
    }

    #[tokio::test]
    async fn no_cors_headers_are_sent() {
        let (app, _dir) = app().await;
        let requests = [
            Request::builder()
                .method(Method::OPTIONS)
                .uri("/v1/namespaces")
                .header("origin", "https://evil.example")
                .header("access-control-request-method", "POST")
                .header("access-control-request-headers", "content-type")
                .body(Body::empty())
                .unwrap(),
            Request::builder()
                .uri("/v1/config")
                .header("origin", "https://evil.example")
                .body(Body::empty())
                .unwrap(),
            post("/v1/namespaces", Some("text/plain"), "{}"),
        ];
        for req in requests {
            let what = format!("{} {}", req.method(), req.uri());
            let (s, h, _) = send(&app, req).await;
            assert!(
                !h.keys().any(|k| k.as_str().starts_with("access-control-")),
                "{what} answered {s} with CORS headers: {h:?}"
            );
        }
    }
}
