//! The Iceberg REST `ErrorModel`, and the one mapping of core errors to HTTP codes.
//!
//! The codes carry the spec's promises to clients: 409 on a commit means nothing was
//! committed (the client may retry and clean up its files); 5xx means the outcome is
//! unknown (the client must not clean up).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use firn_core::{Error, ObjectKind};
use serde_json::json;

/// An error response.
#[derive(Debug)]
pub struct RestError {
    pub status: StatusCode,
    /// The exception type clients switch on, e.g. `NoSuchTableException`.
    pub kind: &'static str,
    pub message: String,
}

impl RestError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequestException", message)
    }

    /// An error raised outside the handlers (routing, extractors, body reading), its type
    /// named after its status.
    pub fn from_status(status: StatusCode, message: impl Into<String>) -> Self {
        let kind = match status {
            StatusCode::UNAUTHORIZED => "NotAuthorizedException",
            StatusCode::FORBIDDEN => "ForbiddenException",
            StatusCode::NOT_FOUND => "NotFoundException",
            StatusCode::METHOD_NOT_ALLOWED => "MethodNotAllowedException",
            StatusCode::NOT_ACCEPTABLE => "NotAcceptableException",
            StatusCode::REQUEST_TIMEOUT => "RequestTimeoutException",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "UnsupportedMediaTypeException",
            StatusCode::UNPROCESSABLE_ENTITY => "UnprocessableEntityException",
            StatusCode::SERVICE_UNAVAILABLE => "ServiceUnavailableException",
            s if s.is_server_error() => "InternalServerErrorException",
            // 400, 413 (as for Error::TooLarge) and any other client error.
            _ => "BadRequestException",
        };
        Self::new(status, kind, message)
    }
}

impl From<Error> for RestError {
    fn from(e: Error) -> Self {
        let (status, kind) = match &e {
            Error::NotFound { kind, .. } => (
                StatusCode::NOT_FOUND,
                match kind {
                    ObjectKind::Namespace => "NoSuchNamespaceException",
                    ObjectKind::Table => "NoSuchTableException",
                    ObjectKind::Snapshot | ObjectKind::Ref => "NoSuchSnapshotException",
                    ObjectKind::Warehouse => "NoSuchWarehouseException",
                    ObjectKind::File
                    | ObjectKind::Principal
                    | ObjectKind::Token
                    | ObjectKind::Grant => "NotFoundException",
                },
            ),
            Error::AlreadyExists { .. } => (StatusCode::CONFLICT, "AlreadyExistsException"),
            Error::InvalidArgument { .. } => (StatusCode::BAD_REQUEST, "BadRequestException"),
            Error::Conflict { .. } | Error::RequirementFailed { .. } => {
                (StatusCode::CONFLICT, "CommitFailedException")
            }
            Error::FailedPrecondition(_) => (StatusCode::BAD_REQUEST, "BadRequestException"),
            Error::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "BadRequestException"),
            Error::Unavailable { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailableException",
            ),
            // The message names the object; 500 tells a committing client the outcome is
            // not known to have failed, so it keeps its files (a corrupt read happens
            // before anything is written, but clients cannot tell that from the code).
            Error::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "NotAuthorizedException"),
            Error::PermissionDenied { .. } | Error::Forbidden(_) => {
                (StatusCode::FORBIDDEN, "ForbiddenException")
            }
            Error::Corrupt { .. } => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerErrorException",
            ),
            Error::Internal { .. } => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerErrorException",
            ),
        };
        if status.is_server_error() {
            tracing::warn!(error = ?e, "REST request failed");
        }
        Self::new(status, kind, e.to_string())
    }
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "code": self.status.as_u16(),
            }
        });
        (self.status, Json(body)).into_response()
    }
}
