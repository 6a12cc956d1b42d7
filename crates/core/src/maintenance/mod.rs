//! Maintenance: the jobs that keep a table's history and storage bounded.
//!
//! - [`expire`]: forgetting old snapshots and deleting the objects only they needed.
//! - [`orphans`]: data file paths handed to writers, and removing objects no commit made.
//! - [`compact`]: rewriting small files into larger ones (one `replace` commit).
//! - [`schedule`]: running expiry on every table on a timer.
//! - `unreferenced`: which objects only expired snapshots reference (expiry's plan).
//!
//! Each job changes a table only through the commit pipeline or the table pointer
//! ([`crate::table::pointer`]), and deletes only objects the table owns
//! ([`crate::storage::Owned`]).

pub mod compact;
pub mod expire;
pub mod orphans;
pub mod schedule;
mod unreferenced;
