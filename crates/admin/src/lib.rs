//! The admin listener (`--admin-listen`, loopback by default): what operators and their
//! monitoring read, apart from the catalog APIs and without credentials.
//!
//! - `GET /metrics`: every metric of [`firn_core::metrics`], Prometheus text format.
//! - `GET /healthz`: 200 while the process serves (liveness).
//! - `GET /readyz`: 200 when the catalog database and the warehouse answer, else 503 with
//!   what does not (readiness); the gRPC health check reports the same.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use firn_core::Catalog;

/// The admin router over `catalog`.
pub fn router(catalog: Catalog) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(catalog)
}

async fn metrics(State(catalog): State<Catalog>) -> Response {
    let m = firn_core::metrics::global();
    m.write_behind_bytes
        .set(i64::try_from(catalog.write_behind_bytes()).unwrap_or(i64::MAX));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
        .into_response()
}

async fn readyz(State(catalog): State<Catalog>) -> Response {
    match catalog.ready().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

/// Serves the admin router on `listener` until `shutdown` resolves.
pub async fn serve(
    catalog: Catalog,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(catalog))
        .with_graceful_shutdown(shutdown)
        .await
}
