//! The Rust client of Firn.
//!
//! - [`FirnClient`]: a typed client of the gRPC API (`proto/firn/catalog/v1`).
//! - [`TableWriter`]: takes Arrow record batches, writes Parquet files with Iceberg field
//!   ids and statistics under the table's location (one or more files per partition,
//!   rolling at a target size, uniquely named), then commits them in one snapshot.
//!
//! Commits are retried safely: every commit carries a client-chosen commit id, and the
//! client retries `UNAVAILABLE` (outcome unknown) and `ABORTED` (conflict) with the same id,
//! so a commit is applied at most once.

mod client;
mod error;
pub mod failover;
pub mod storage;
mod writer;

pub use client::{
    CallMetadata, ConnectOptions, FirnClient, RawAccessClient, RawClient, RetryPolicy,
    ident as proto_ident,
};
pub use error::{ClientError, Result};
pub use firn_core::TableIdent;
pub use firn_proto::v1 as proto;
pub use writer::{TableWriter, WriteMode, WriterOptions, align_batch};
