//! `POST /v1/oauth/tokens`: the OAuth2 token endpoint of the Iceberg REST spec, as Spark,
//! PyIceberg and Trino use it with `credential=CLIENT_ID:CLIENT_SECRET`.
//!
//! - `grant_type=client_credentials`: `client_id` is a principal's name and `client_secret`
//!   one of its tokens (`firn token create`), in the form body or HTTP Basic
//!   `Authorization`; the answer is a new bearer token valid for an hour.
//! - `grant_type=urn:ietf:params:oauth:grant-type:token-exchange` with a valid
//!   `subject_token`: a fresh token for the same principal (clients refresh this way).
//!
//! Errors are OAuth2's (RFC 6749 §5.2): 400 `invalid_request` / `unsupported_grant_type`,
//! 401 `invalid_client`; secrets never appear in them or in logs.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use firn_core::auth::IssuedToken;
use firn_core::{Error, Secret};
use serde_json::json;

use crate::AppState;

const CLIENT_CREDENTIALS: &str = "client_credentials";
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

fn oauth_error(status: StatusCode, error: &str, description: impl Into<String>) -> Response {
    let mut resp = (
        status,
        axum::Json(json!({"error": error, "error_description": description.into()})),
    )
        .into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    resp
}

/// Client id and secret from HTTP Basic authentication, if sent that way.
fn basic(headers: &HeaderMap) -> Option<(String, Secret)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = v.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = decode_base64(encoded.trim())?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    let id = url::form_urlencoded::parse(format!("a={id}").as_bytes())
        .next()?
        .1
        .into_owned();
    Some((id, Secret::new(secret)))
}

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

pub(crate) async fn tokens(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let issued = match field("grant_type") {
        Some(CLIENT_CREDENTIALS) => {
            let (id, secret) = match (field("client_id"), field("client_secret")) {
                (Some(id), Some(secret)) => (id.to_string(), Secret::new(secret)),
                _ => match basic(&headers) {
                    Some(pair) => pair,
                    None => {
                        return oauth_error(
                            StatusCode::BAD_REQUEST,
                            "invalid_request",
                            "client_credentials needs client_id and client_secret",
                        );
                    }
                },
            };
            s.catalog.exchange_client_credentials(&id, &secret).await
        }
        Some(TOKEN_EXCHANGE) => match field("subject_token") {
            Some(t) => s.catalog.exchange_token(&Secret::new(t)).await,
            None => {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "token-exchange needs a subject_token",
                );
            }
        },
        Some(other) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                format!(
                    "grant_type {other:?} is not supported: use {CLIENT_CREDENTIALS} or {TOKEN_EXCHANGE}"
                ),
            );
        }
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the form body needs a grant_type",
            );
        }
    };
    match issued {
        Ok(IssuedToken { token, info }) => {
            let expires_in = info
                .expires_at_ms
                .map(|at| (at - info.created_at_ms) / 1000);
            let mut resp = axum::Json(json!({
                "access_token": token.expose(),
                "token_type": "bearer",
                "expires_in": expires_in,
                "issued_token_type": ACCESS_TOKEN_TYPE,
            }))
            .into_response();
            resp.headers_mut().insert(
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("no-store"),
            );
            resp
        }
        Err(Error::Unauthenticated(reason)) => {
            oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", reason)
        }
        Err(e) => crate::RestError::from(e).into_response(),
    }
}
