//! Client errors.

/// Result alias of this crate.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// What went wrong on the client side, or the server's status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Could not reach the server.
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// The endpoint or connection options cannot be used.
    #[error("cannot connect to {endpoint}: {reason}")]
    InvalidEndpoint { endpoint: String, reason: String },
    /// The server answered with an error status (see the proto's docs for each code).
    #[error("{}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
    /// The data handed to the writer does not fit the table.
    #[error("{0}")]
    InvalidData(String),
    /// Writing Parquet or metadata failed.
    #[error("write failed: {0}")]
    Write(#[from] iceberg::Error),
    #[error("{0}")]
    Arrow(#[from] arrow::error::ArrowError),
}

impl ClientError {
    /// The gRPC status code, if the server answered.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            ClientError::Status(s) => Some(s.code()),
            _ => None,
        }
    }
}
