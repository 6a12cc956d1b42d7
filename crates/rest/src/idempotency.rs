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

/// Table commits and multi-table transactions: their commit id answers retries.
fn is_commit(method: &Method, path: &str) -> bool {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    method == Method::POST
        && (matches!(parts.as_slice(), ["v1", "namespaces", _, "tables", _])
            || path.ends_with("/transactions/commit"))
}

pub(crate) async fn replay(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let key = match req.headers().get("idempotency-key").map(|v| v.to_str()) {
        None => return next.run(req).await,
        Some(Err(_)) => {
            return RestError::bad_request("Idempotency-Key must be ASCII").into_response();
        }
        Some(Ok(k)) => k.to_string(),
    };
    if !matches!(*req.method(), Method::POST | Method::DELETE) {
        return next.run(req).await;
    }
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
    let path = parts.uri.path().to_string();
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
    let commit = is_commit(&parts.method, &path);
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let status = response.status();
    if !is_final(status, commit) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(body) = to_bytes(body, MAX_ANSWER_BYTES).await else {
        return RestError::from(firn_core::Error::internal("answer too large to record"))
            .into_response();
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
        assert!(is_commit(&Method::POST, "/v1/namespaces/ns/tables/t"));
        assert!(is_commit(&Method::POST, "/v1/transactions/commit"));
        assert!(!is_commit(&Method::POST, "/v1/namespaces/ns/tables"));
        assert!(!is_commit(&Method::DELETE, "/v1/namespaces/ns/tables/t"));
        assert!(is_final(StatusCode::CONFLICT, true));
        assert!(is_final(StatusCode::OK, false) && !is_final(StatusCode::OK, true));
        assert!(!is_final(StatusCode::SERVICE_UNAVAILABLE, false));
        assert!(!is_final(StatusCode::TOO_MANY_REQUESTS, false));
    }
}
