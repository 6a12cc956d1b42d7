//! Firn core: namespaces, tables and atomic commits of Apache Iceberg (v2) tables.
//!
//! This crate knows nothing of gRPC or HTTP: transports call [`Catalog`] and map its
//! [`Error`] to their status codes.
//!
//! - [`catalog`]: the service API.
//! - [`commit`]: how a commit becomes a snapshot, and what it guarantees.
//! - [`storage`]: the warehouse on `object_store` (and iceberg-rust's `Storage` over it);
//!   [`storage::path`]: the checked path types every read, write and delete goes through.
//! - `locations`: tables never overlap; what a table owns (and so may delete).
//! - [`validate`]: names, types and transforms as the Iceberg spec allows them.
//! - `snapshot_check`: snapshots other engines add, checked like Firn's own commits.
//! - [`manifests`]: reading any engine's manifests with the table's schema and spec.
//! - [`idempotency`]: final answers kept for retried idempotency keys.
//! - [`db`]: the catalog database (SQLite or PostgreSQL).
//! - [`scan`]: resolving snapshot selectors and planning scans.
//! - [`refs`]: rollback, tags and branches.
//! - [`compact`]: rewriting small files into larger ones (a `replace` commit).
//! - [`expire`]: snapshot expiry and the deletion of files no snapshot needs.
//! - [`orphans`]: data file paths handed to writers, and removing files no commit made.
//! - [`files`]: checking data files and deriving their statistics.
//! - [`error`]: what each error means and whether to retry.

pub mod catalog;
pub mod commit;
pub mod compact;
pub mod db;
pub mod env;
pub mod error;
pub mod expire;
pub mod fault;
pub mod files;
pub mod idempotency;
pub mod ident;
mod locations;
pub mod manifests;
pub mod metacommit;
mod metadata;
pub mod model;
pub mod notation;
mod objects;
pub mod orphans;
pub mod refs;
mod register;
pub mod scan;
pub mod schedule;
mod snapshot_check;
pub mod storage;
#[cfg(test)]
mod testing;
pub mod validate;

pub use catalog::{Catalog, CatalogConfig, create_table_spec, parse_type};
pub use compact::{CompactOptions, CompactReport};
pub use env::{Clock, Env, Ids, RandomIds, SystemClock};
pub use error::{Error, ObjectKind, Result};
pub use expire::{ExpireOptions, ExpireReport, FileCounts};
pub use ident::TableIdent;
pub use metacommit::TableChange;
pub use model::*;
pub use orphans::{OrphanOptions, OrphanReport};
pub use refs::{ChangeOutcome, RefInfo, SnapshotChange};
pub use scan::{
    CompareOp, ResolvedSnapshot, ScanDeleteFile, ScanFile, ScanFilter, ScanPlan, SnapshotSelector,
};
pub use storage::{FirnStorageFactory, Published, Warehouse, WarehouseConfig};
