//! Firn core: namespaces, tables and atomic commits of Apache Iceberg (v2) tables.
//!
//! This crate knows nothing of gRPC or HTTP: transports call [`Catalog`] and map its
//! [`Error`] to their status codes.
//!
//! Modules, each depending only on those listed before it (tests aside):
//!
//! - foundations: [`metrics`] (the process's Prometheus registry), [`error`] (what each error means and whether to retry), [`env`] (clock
//!   and ids, injected), [`ident`], [`model`], [`validate`] (names, types and transforms as
//!   the Iceberg spec allows them), [`notation`].
//! - [`storage`]: the warehouse on `object_store`; [`storage::path`], the checked path types
//!   every read, write and delete goes through; staging (write-behind); iceberg-rust's
//!   `Storage` over it; [`storage::manifests`], reading any engine's manifests with the
//!   table's schema and spec; `storage::fault`, fault injection (feature `fault`, tests only).
//! - [`db`]: the catalog database (SQLite or PostgreSQL): connection, migrations, reads, and
//!   the records of objects awaiting deletion.
//! - [`table`]: table state: [`table::pointer`] (the one owner of the pointer swap and the
//!   rows that move with it), [`table::refs`], metadata rendering, locations (tables never
//!   overlap; what a table owns), register.
//! - [`commit`]: the commit pipeline: prepare, plan, transaction, write-behind, failed-commit
//!   garbage; [`commit::files`] (checking data files) and [`commit::metacommit`] (REST
//!   metadata commits, checked like appends).
//! - [`scan`]: resolving snapshot selectors and planning scans.
//! - [`maintenance`]: expiry, orphan removal, compaction and scheduling.
//! - [`auth`]: principals, tokens and grants, and the [`auth::Caller`] every operation checks.
//! - [`idempotency`]: final answers kept for retried idempotency keys.
//! - [`catalog`]: the service API over all of them.

pub mod auth;
pub mod catalog;
pub mod commit;
pub mod db;
pub mod env;
pub mod error;
pub mod idempotency;
pub mod ident;
pub mod maintenance;
pub mod metrics;
pub mod model;
pub mod notation;
pub mod scan;
pub mod storage;
pub mod table;
#[cfg(test)]
mod testing;
pub mod validate;

pub use auth::{
    AuthConfig, Caller, Grant, IdentityProvider, Privilege, Resource, Secret, Verified,
};
pub use catalog::{Catalog, CatalogConfig, create_table_spec};
pub use commit::metacommit::TableChange;
pub use env::{Clock, Env, Ids, RandomIds, SystemClock};
pub use error::{Error, ObjectKind, Result};
pub use ident::TableIdent;
pub use maintenance::compact::{CompactOptions, CompactReport};
pub use maintenance::expire::{ExpireOptions, ExpireReport, FileCounts};
pub use maintenance::orphans::{OrphanOptions, OrphanReport};
pub use model::*;
pub use scan::{
    CompareOp, ResolvedSnapshot, ScanDeleteFile, ScanFile, ScanFilter, ScanPlan, SnapshotSelector,
};
pub use storage::{FirnStorageFactory, Published, Warehouse, WarehouseConfig, Warehouses};
pub use table::refs::{ChangeOutcome, RefInfo, SnapshotChange};
pub use validate::parse_type;
