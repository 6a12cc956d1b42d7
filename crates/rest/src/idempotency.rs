//! `Idempotency-Key` on mutating REST requests: a retry with the same key gets the answer
//! the first request got (see `firn_core::idempotency` for what is kept, and for how long).
//!
//! Table commits need no recorded answer when they succeed: the key is their commit id, and
//! the core answers a retry as applied. Every other final answer (a 4xx, or the success of
//! another mutation) is recorded with a digest of the request and replayed to a retry; a
//! request that reuses a key for something else gets 422.

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use firn_core::idempotency::RecordedAnswer;
use sha2::{Digest, Sha256};

use crate::{AppState, RestError};

/// Largest answer recorded (a table's metadata fits).
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// Whether the answer to `req` with `status` is final: the same request would get it again.
fn is_final(status: StatusCode, commit: bool) -> bool {
    (status.is_client_error()
        && status != StatusCode::REQUEST_TIMEOUT
        && status != StatusCode::TOO_MANY_REQUESTS)
        || (status.is_success() && !commit)
}

/// Table commits and multi-table transactions (by the route the request matched, so a
/// prefix the router is nested under does not matter): their commit id answers retries.
fn is_commit(method: &Method, route: &str) -> bool {
    method == Method::POST
        && [crate::TABLE_ROUTE, crate::TRANSACTION_ROUTE]
            .iter()
            .any(|r| route.ends_with(r))
}

pub(crate) async fn replay(State(s): State<AppState>, req: Request, next: Next) -> Response {
    if !matches!(*req.method(), Method::POST | Method::DELETE) {
        return next.run(req).await;
    }
    let key = match req.headers().get("idempotency-key").map(|v| v.to_str()) {
        None => return next.run(req).await,
        Some(Err(_)) => {
            return RestError::bad_request("Idempotency-Key must be ASCII").into_response();
        }
        Some(Ok(k)) => k.to_string(),
    };
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    // Read already (bounded in size and time) by the layer outside this one.
    let (parts, body) = req.into_parts();
    let Ok(bytes) = to_bytes(body, crate::MAX_BODY_BYTES).await else {
        return RestError::from_status(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is larger than {} bytes",
                crate::MAX_BODY_BYTES
            ),
        )
        .into_response();
    };
    let mut h = Sha256::new();
    h.update(parts.method.as_str());
    h.update([0]);
    h.update(parts.uri.to_string());
    h.update([0]);
    h.update(&bytes);
    let digest = format!("{:x}", h.finalize());
    match s.catalog.recorded_answer(&key).await {
        Ok(Some(a)) if a.request_digest == digest => {
            let status =
                StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return (status, [(header::CONTENT_TYPE, "application/json")], a.body).into_response();
        }
        Ok(Some(_)) => {
            return RestError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "UnprocessableEntityException",
                format!("Idempotency-Key {key} was used for a different request"),
            )
            .into_response();
        }
        Ok(None) => {}
        Err(e) => return RestError::from(e).into_response(),
    }
    let commit = is_commit(&parts.method, &route);
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let status = response.status();
    if !is_final(status, commit) {
        return response;
    }
    // Only an answer known to fit is recorded; any other goes out as it is (its request
    // has been applied: the answer must not turn into an error).
    let fits = axum::body::HttpBody::size_hint(response.body())
        .upper()
        .is_some_and(|n| n <= MAX_ANSWER_BYTES as u64);
    if !fits {
        return response;
    }
    let (parts, body) = response.into_parts();
    let body = match to_bytes(body, MAX_ANSWER_BYTES).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "could not read an answer to record it");
            return RestError::from(firn_core::Error::internal("the answer could not be read"))
                .into_response();
        }
    };
    let answer = RecordedAnswer {
        request_digest: digest,
        status: status.as_u16(),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    // The answer stands whether or not it could be recorded (a retry then runs again).
    if let Err(e) = s.catalog.record_answer(&key, &answer).await {
        tracing::warn!(error = %e, "could not record an idempotent answer");
    }
    Response::from_parts(parts, Body::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_and_final_answers_are_told_apart() {
        let table = format!("/v1{}", crate::TABLE_ROUTE);
        assert!(is_commit(&Method::POST, &table));
        assert!(is_commit(&Method::POST, crate::TABLE_ROUTE));
        assert!(is_commit(&Method::POST, "/v1/transactions/commit"));
        assert!(!is_commit(&Method::POST, "/v1/namespaces/{ns}/tables"));
        assert!(!is_commit(&Method::DELETE, &table));
        assert!(is_final(StatusCode::CONFLICT, true));
        assert!(is_final(StatusCode::OK, false) && !is_final(StatusCode::OK, true));
        assert!(!is_final(StatusCode::SERVICE_UNAVAILABLE, false));
        assert!(!is_final(StatusCode::TOO_MANY_REQUESTS, false));
    }
}
