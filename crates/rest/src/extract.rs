//! Axum's `Json`, `Query` and `Path` extractors, rejecting in the spec's `ErrorModel`
//! (axum's own rejections are plain text) with axum's message naming what was wrong.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::RestError;

/// A rejection as an error: an unparsable or mistyped body is 400 (axum says 422 for the
/// latter), as the spec's `BadRequestErrorResponse` and Firn's commit endpoints answer.
fn rejected(status: StatusCode, what: &str, text: String) -> RestError {
    let status = match status {
        StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
        s => s,
    };
    RestError::from_status(status, format!("{what}: {text}"))
}

/// A JSON request body; also a JSON response.
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = RestError;

    async fn from_request(req: Request, state: &S) -> Result<Self, RestError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(r @ JsonRejection::MissingJsonContentType(_)) => Err(rejected(
                r.status(),
                "request body",
                "Content-Type must be application/json".into(),
            )),
            Err(r) => Err(rejected(r.status(), "request body", r.body_text())),
        }
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Query parameters.
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = RestError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, RestError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Self(v))
            .map_err(|r: QueryRejection| rejected(r.status(), "query", r.body_text()))
    }
}

/// Path parameters.
pub struct Path<T>(pub T);

/// All path parameters by name, undeserialized (for middleware that serves many routes).
pub struct RawPathParams(pub axum::extract::RawPathParams);

impl<S: Send + Sync> FromRequestParts<S> for RawPathParams {
    type Rejection = RestError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, RestError> {
        axum::extract::RawPathParams::from_request_parts(parts, state)
            .await
            .map(Self)
            .map_err(|r| rejected(r.status(), "path", r.body_text()))
    }
}

impl<S, T> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = RestError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, RestError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Self(v))
            .map_err(|r: PathRejection| rejected(r.status(), "path", r.body_text()))
    }
}
