//! Errors of SQL sessions.

use datafusion::error::DataFusionError;
use firn_client::ClientError;

/// Why a statement failed. Nothing is applied to any table by a statement that fails,
/// except where the message says the outcome is unknown (a commit interrupted mid-way).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// The SQL text does not parse.
    #[error("syntax error: {0}")]
    Syntax(String),
    /// The statement is valid SQL that Firn does not support (yet); nothing was done.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// The statement is wrong for the tables it names (unknown column, bad argument, ...).
    #[error("{0}")]
    Invalid(String),
    /// The Firn server refused or failed the request.
    #[error("{0}")]
    Server(#[from] ClientError),
    /// Planning or execution failed.
    #[error("{0}")]
    Execution(DataFusionError),
    /// The query was cancelled.
    #[error("cancelled")]
    Cancelled,
}

impl From<DataFusionError> for QueryError {
    fn from(e: DataFusionError) -> Self {
        // Errors raised inside our providers travel through DataFusion: unwrap them.
        match e {
            DataFusionError::External(inner) => match inner.downcast::<QueryError>() {
                Ok(q) => *q,
                Err(inner) => match inner.downcast::<ClientError>() {
                    Ok(c) => QueryError::Server(*c),
                    Err(inner) => QueryError::Execution(DataFusionError::External(inner)),
                },
            },
            DataFusionError::Context(ctx, inner) => match QueryError::from(*inner) {
                QueryError::Execution(inner) => {
                    QueryError::Execution(DataFusionError::Context(ctx, Box::new(inner)))
                }
                other => other,
            },
            DataFusionError::SQL(e, _) => QueryError::Syntax(e.to_string()),
            e => QueryError::Execution(e),
        }
    }
}

impl From<datafusion::arrow::error::ArrowError> for QueryError {
    fn from(e: datafusion::arrow::error::ArrowError) -> Self {
        QueryError::Execution(DataFusionError::ArrowError(Box::new(e), None))
    }
}

impl From<sqlparser_error::ParserError> for QueryError {
    fn from(e: sqlparser_error::ParserError) -> Self {
        QueryError::Syntax(
            e.to_string()
                .trim_start_matches("sql parser error: ")
                .to_string(),
        )
    }
}

mod sqlparser_error {
    pub use datafusion::sql::sqlparser::parser::ParserError;
}

/// Wraps an error for travel through DataFusion (unwrapped again by `From`).
pub(crate) fn external(e: impl Into<QueryError>) -> DataFusionError {
    DataFusionError::External(Box::new(e.into()))
}

pub type Result<T, E = QueryError> = std::result::Result<T, E>;
