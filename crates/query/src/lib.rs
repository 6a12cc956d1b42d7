//! SQL over Firn tables, on Apache DataFusion.
//!
//! - [`FirnSession`]: parses and runs statements: queries (with time travel), metadata
//!   tables, writes (CREATE TABLE [AS SELECT], INSERT [OVERWRITE], DELETE, DROP TABLE) and
//!   `CALL system.*` procedures. Every write commits through the Firn server, on the same
//!   commit path as gRPC writers.
//! - [`FirnCatalog`]: namespaces and tables as a DataFusion catalog.
//! - [`FirnTable`]: one snapshot of a table; scans are planned by the server (files pruned
//!   by partition values and column statistics) and read from object storage by
//!   DataFusion's Parquet reader, columns matched by Iceberg field id.
//! - [`travel`]: `VERSION AS OF`, `TIMESTAMP AS OF`, `FOR SYSTEM_TIME AS OF` — resolved
//!   exactly, or an error; never silently the current snapshot.

pub mod catalog;
mod ddl;
pub mod error;
mod filter;
pub mod meta;
mod procedures;
mod schema;
pub mod session;
pub mod table;
pub mod travel;

pub use catalog::FirnCatalog;
pub use error::{QueryError, Result};
pub use session::{FirnSession, Output};
pub use table::FirnTable;

/// The name of the DataFusion catalog holding Firn's namespaces.
pub const CATALOG: &str = "firn";
/// The schema unqualified table names resolve in.
pub const DEFAULT_SCHEMA: &str = "default";

/// Whether a server error means "no such object".
pub(crate) fn is_not_found(e: &firn_client::ClientError) -> bool {
    e.code() == Some(tonic::Code::NotFound)
}

/// The server's message of an error, without the status code.
pub(crate) fn error_message(e: &firn_client::ClientError) -> String {
    match e {
        firn_client::ClientError::Status(s) => s.message().to_string(),
        other => other.to_string(),
    }
}
