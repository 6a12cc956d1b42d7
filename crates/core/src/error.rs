//! Errors of the catalog core.
//!
//! Every public operation returns [`Error`]. Its variants tell the caller what to do; the
//! transports map them exhaustively to gRPC status codes and REST error models (no wildcard
//! arm), so a new variant fails to compile there until it is mapped.
//!
//! | variant | meaning | may the caller retry? |
//! | --- | --- | --- |
//! | `NotFound` | the namespace, table or snapshot does not exist | no |
//! | `AlreadyExists` | the namespace or table exists already | no |
//! | `InvalidArgument` | the request is wrong; `field` names what, `reason` says why | no |
//! | `Conflict` | a concurrent commit moved the table; nothing was applied | yes, after re-reading the table |
//! | `RequirementFailed` | a metadata commit's requirement does not hold on the current table; nothing was applied | yes, after re-reading the table |
//! | `FailedPrecondition` | valid request, but the current state forbids it | not unchanged |
//! | `TooLarge` | the request exceeds a server limit | no |
//! | `Unauthenticated` | no credential, or one that is unknown, expired or revoked; nothing was done | with a valid credential |
//! | `PermissionDenied` | the caller's grants do not allow the operation; nothing was done | after a grant |
//! | `Corrupt` | an object in storage (a manifest, manifest list, metadata or data file) cannot be read as what it should be; `path` names it | no: the object must be repaired or the snapshot rolled back |
//! | `Unavailable` | storage or database unavailable; for a commit the outcome is unknown | yes, with the same commit id |
//! | `Internal` | a bug or unexpected failure; for a commit the outcome is unknown | with the same commit id |
//!
//! A commit whose outcome Firn cannot know is never reported as a `Conflict`.

use std::fmt;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Boxed source error.
pub type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error of the catalog core. See the module docs for what each variant asks of the caller.
///
/// Deliberately exhaustive: each transport maps every variant with no wildcard arm, so a new
/// kind cannot compile until gRPC and REST say what it means to their clients.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The named object does not exist.
    #[error("{kind} {name} does not exist")]
    NotFound { kind: ObjectKind, name: String },

    /// The named object exists already.
    #[error("{kind} {name} already exists")]
    AlreadyExists { kind: ObjectKind, name: String },

    /// The request is malformed or refers to something it may not.
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: String, reason: String },

    /// The table moved on since the snapshot the operation was based on, and the operation
    /// does not commute with what happened. Nothing was applied.
    #[error(
        "commit conflict on {table}: the operation was based on snapshot {}, but the current snapshot is {}; re-read the table and retry",
        fmt_snapshot(*.expected), fmt_snapshot(*.current)
    )]
    Conflict {
        table: String,
        expected: Option<i64>,
        current: Option<i64>,
    },

    /// A requirement of a metadata commit (e.g. "main is at snapshot S") does not hold on
    /// the current table. Nothing was applied.
    #[error(
        "commit conflict on {table}: {reason}; nothing was applied, re-read the table and retry"
    )]
    RequirementFailed { table: String, reason: String },

    /// The request is valid but the state of the catalog forbids it.
    #[error("{0}")]
    FailedPrecondition(String),

    /// The request is larger than the server accepts.
    #[error("request too large: {0}")]
    TooLarge(String),

    /// The request carries no credential where one is required, or one Firn does not
    /// accept (unknown, expired, revoked). The reason never repeats the credential.
    #[error("not authenticated: {0}")]
    Unauthenticated(String),

    /// The caller is known but its grants do not allow the operation. Nothing was done.
    #[error("{principal} may not do this: it needs the {privilege} privilege on {on}")]
    PermissionDenied {
        principal: String,
        privilege: String,
        on: String,
    },

    /// A request no grant allows: Firn's policy refuses it for everyone (e.g. the S3
    /// signer asked to sign a LIST or a request outside the table). Nothing was done;
    /// retrying does not help.
    #[error("refused: {0}")]
    Forbidden(String),

    /// An object in storage is not what the metadata says it is (a torn or foreign file).
    /// Nothing was changed; retrying does not help.
    #[error("corrupt object {path}: {reason}")]
    Corrupt { path: String, reason: String },

    /// The database or object store is unavailable. For a commit the outcome is unknown:
    /// retry with the same commit id.
    #[error("{what} unavailable: {source}")]
    Unavailable {
        what: &'static str,
        #[source]
        source: Source,
    },

    /// An unexpected failure (a bug, corrupt metadata). For a commit the outcome is unknown.
    #[error("internal error: {message}")]
    Internal {
        message: String,
        #[source]
        source: Option<Source>,
    },
}

fn fmt_snapshot(id: Option<i64>) -> String {
    id.map_or_else(|| "<none: empty table>".to_string(), |id| id.to_string())
}

/// What kind of object an error is about (exhaustive, like [`Error`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    Namespace,
    Table,
    Snapshot,
    File,
    /// A tag or branch.
    Ref,
    /// A person or service account (see [`crate::auth`]).
    Principal,
    /// A principal's token.
    Token,
    /// A grant of a privilege.
    Grant,
    /// A named warehouse (see [`crate::storage::registry`]).
    Warehouse,
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ObjectKind::Namespace => "namespace",
            ObjectKind::Table => "table",
            ObjectKind::Snapshot => "snapshot",
            ObjectKind::Ref => "ref",
            ObjectKind::File => "file",
            ObjectKind::Principal => "principal",
            ObjectKind::Token => "token",
            ObjectKind::Grant => "grant",
            ObjectKind::Warehouse => "warehouse",
        })
    }
}

impl Error {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub fn corrupt(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub fn not_found(kind: ObjectKind, name: impl Into<String>) -> Self {
        Error::NotFound {
            kind,
            name: name.into(),
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Error::Internal {
            message: message.into(),
            source: None,
        }
    }

    pub fn internal_from(message: impl Into<String>, source: impl Into<Source>) -> Self {
        Error::Internal {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// A database error, by what the caller can do about it: the database unreachable,
    /// busy or failing over is `Unavailable` (retry); a constraint the catalog's own checks
    /// should have caught, or rows that do not decode, is `Internal` (a bug or a damaged
    /// catalog: retrying the same request fails the same way).
    pub fn database(source: sqlx::Error) -> Self {
        use sqlx::error::ErrorKind;
        let deterministic = match &source {
            sqlx::Error::Database(d) => matches!(
                d.kind(),
                ErrorKind::UniqueViolation
                    | ErrorKind::ForeignKeyViolation
                    | ErrorKind::NotNullViolation
                    | ErrorKind::CheckViolation
            ),
            sqlx::Error::RowNotFound
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::ColumnIndexOutOfBounds { .. }
            | sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::Decode(_)
            | sqlx::Error::TypeNotFound { .. }
            | sqlx::Error::Configuration(_)
            | sqlx::Error::Migrate(_) => true,
            _ => false,
        };
        let kind = match (&source, deterministic) {
            (sqlx::Error::Database(_), true) => "constraint",
            (_, true) => "decode",
            (sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed, false) => "pool",
            (sqlx::Error::Io(_) | sqlx::Error::Tls(_), false) => "io",
            (sqlx::Error::Database(_), false) => "busy",
            _ => "other",
        };
        crate::metrics::global()
            .db_errors
            .get_or_create(&crate::metrics::ErrorLabels {
                op: "query".into(),
                kind: kind.into(),
            })
            .inc();
        if deterministic {
            Error::internal_from("catalog database", source)
        } else {
            Error::Unavailable {
                what: "catalog database",
                source: Box::new(source),
            }
        }
    }

    pub fn storage(source: impl Into<Source>) -> Self {
        Error::Unavailable {
            what: "object store",
            source: source.into(),
        }
    }

    /// Whether retrying the same request (same commit id) may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Conflict { .. } | Error::Unavailable { .. } | Error::Internal { .. }
        )
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::database(e)
    }
}

impl From<iceberg::Error> for Error {
    fn from(e: iceberg::Error) -> Self {
        Error::internal_from("iceberg", e)
    }
}
