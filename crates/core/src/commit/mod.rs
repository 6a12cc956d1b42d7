//! The commit pipeline: how a commit becomes a snapshot, atomically.
//!
//! ```text
//!  request ──► prepare (per request, concurrent)   [prepare, files] ──► Prepared
//!              · table row + schema/spec from the catalog
//!              · each added file: HEAD (exists, size), stats from request or Parquet footer
//!              · the new files' manifest, built in memory
//!
//!  Prepared ──► committer (one task per process, batches whatever is queued)  [plan, snapshot]
//!              · per table: load state (cached), replay recorded commit ids,
//!                check the base snapshot (appends are rebased, others conflict),
//!                plan the snapshot: manifests kept / rewritten / merged, manifest list
//!              · new objects: put to the store (S3), or staged in the warehouse (local
//!                disk: write-behind, no file is created on the commit path)
//!              · ONE database transaction for the whole batch:           [transaction]
//!                  per table, the pointer swap (crate::table::pointer):
//!                  version v → v+n WHERE version = v AND current snapshot = the base
//!                  + snapshot, snapshot-log, ref, commit-log, file-index rows
//!                  + the objects' bytes while they are not yet durable in the store
//!              · COMMIT (fsync) ─► reply to every request of the batch
//!              · a table whose swap lost a race (another replica) is reloaded and its
//!                commits re-planned in the next batch; the objects its plan wrote are
//!                garbage, deleted best-effort                          [garbage]
//!
//!  materializer (one task) · writes staged objects in batches once commits pause,  [materialize]
//!                            each atomically, fsyncs them; their catalog copies then go
//! ```
//!
//! A staged object is readable through this process's warehouse at once. Anything that
//! hands a table's metadata to a reader outside the process (a metadata file, a snapshot's
//! manifest-list path) first calls [`Shared::publish_table`], which also writes objects
//! another replica committed and has not written yet, from their catalog copies. A crash
//! loses no staged object: start-up recovery writes them from the catalog.
//!
//! Guarantees:
//! - Until the transaction commits no reader can see any of a commit; after, every reader
//!   sees all of it. Objects of a commit that fails are garbage (deleted best-effort).
//! - A commit id recorded in the commit log returns the recorded outcome: a retry never
//!   applies twice.
//! - Appends never conflict: they are rebased onto the current snapshot. Overwrites and
//!   deletes fail with `Error::Conflict` when the table moved past their base snapshot.
//! - An error whose outcome is unknown (the transaction's fate) is reported as
//!   `Error::Unavailable`, never as a conflict.
//! - Commit cost does not grow with history: the manifest list is bounded by merging
//!   manifests in tiers of [`MERGE_FAN_IN`], and Iceberg `metadata.json` files (which list
//!   every snapshot) are materialised on load, not on commit.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use iceberg::spec::{DataFile, ManifestFile, Struct};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::error::{Error, Result};
use crate::model::{CommitOutcome, CommitRequest};
use crate::storage::objects::MetaObject;
use crate::table::Shared;

pub mod files;
mod garbage;
mod materialize;
pub mod metacommit;
mod plan;
pub(crate) mod prepare;
mod snapshot;
pub(crate) mod snapshot_check;
mod state;
mod transaction;

use materialize::materializer;
pub(crate) use materialize::recover_pending;
use plan::plan_batch;
pub(crate) use snapshot::{manifest_writer, resolved_seq};
use state::TableState;
use transaction::finish;

/// How many manifests of one size tier are merged into one.
pub const MERGE_FAN_IN: usize = 16;
/// Most commits one database transaction carries.
const MAX_BATCH: usize = 512;
/// How often a commit is re-planned after losing the pointer swap to another replica.
const MAX_ATTEMPTS: u32 = 50;

/// Which live files a commit removes.
#[derive(Debug, Clone)]
pub(crate) enum RemoveSelector {
    Nothing,
    All,
    /// These paths; each must be live.
    Paths(HashSet<String>),
    Partitions(HashSet<Struct>),
}

/// A commit checked outside the pipeline, ready to be planned.
pub(crate) struct Prepared {
    pub table_id: i64,
    pub req: CommitRequest,
    /// `req.digest()`, recorded with the commit id.
    pub digest: String,
    /// Who asked, for the commit log.
    pub by: crate::model::Actor,
    pub snapshot_id: i64,
    pub added: Vec<DataFile>,
    pub added_manifest: Option<(ManifestFile, MetaObject)>,
    pub remove: RemoveSelector,
    pub attempts: u32,
}

pub(crate) struct Job {
    pub(crate) prepared: Prepared,
    pub(crate) reply: oneshot::Sender<Result<CommitOutcome>>,
}

/// Handle to the committer task.
#[derive(Clone)]
pub(crate) struct Committer {
    tx: mpsc::Sender<Job>,
}

impl Committer {
    /// Starts the committer and the materializer (`to_sync` is the receiver of
    /// `shared.to_sync`).
    pub(crate) fn start(
        shared: Arc<Shared>,
        to_sync: mpsc::UnboundedReceiver<Vec<String>>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(materializer(shared.clone(), to_sync));
        tokio::spawn(run(shared, rx));
        Self { tx }
    }

    pub(crate) async fn submit(&self, prepared: Prepared) -> Result<CommitOutcome> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job { prepared, reply })
            .await
            .map_err(|_| Error::internal("the committer has stopped"))?;
        rx.await.map_err(|_| Error::Unavailable {
            what: "committer",
            source: "the committer failed or stopped while the commit was in flight; its \
                     outcome is unknown: retry with the same commit id"
                .into(),
        })?
    }
}

async fn run(shared: Arc<Shared>, mut rx: mpsc::Receiver<Job>) {
    let mut cache: HashMap<i64, TableState> = HashMap::new();
    let mut retry: Vec<Job> = Vec::new();
    // The transaction of the previous batch, still running while the next one is planned.
    let mut inflight: Option<tokio::task::JoinHandle<Finished>> = None;
    loop {
        let mut batch = std::mem::take(&mut retry);
        if batch.is_empty() {
            let next = match inflight.as_mut() {
                Some(h) => tokio::select! {
                    j = rx.recv() => Some(j),
                    f = h => {
                        inflight = None;
                        absorb(f, &mut cache, &mut retry);
                        None
                    }
                },
                None => Some(rx.recv().await),
            };
            match next {
                None => continue,
                Some(Some(j)) => batch.push(j),
                Some(None) => {
                    if let Some(h) = inflight.take() {
                        let _ = h.await;
                    }
                    return;
                }
            }
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let metrics = crate::metrics::global();
        metrics.batch_size.observe(batch.len() as f64);
        metrics.queue_depth.set(rx.len() as i64);
        let queued_before = retry.len();
        // Plan on top of the in-flight batch's (optimistic) state. If that batch does not
        // commit for a table, this batch's plans for the table are withdrawn and planned
        // again (and the swap, which compares version and snapshot id, could not pass).
        let mut deferred = Vec::new();
        // Supervised: a panic while planning (a bug, or input no check caught) fails the
        // commits of this batch only, each told its outcome is unknown (their replies are
        // dropped; none reached a transaction), and the committer goes on with a fresh cache.
        let planning =
            std::panic::AssertUnwindSafe(plan_batch(&shared, &mut cache, batch, &mut deferred));
        let mut planned = match futures::FutureExt::catch_unwind(planning).await {
            Ok(p) => p,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(panic = what, "the committer panicked planning a batch");
                cache.clear();
                None
            }
        };
        retry.append(&mut deferred);
        if let Some(h) = inflight.take() {
            let stale = absorb(h.await, &mut cache, &mut retry);
            if let Some(p) = planned.as_mut() {
                p.withdraw(&stale, &shared, &mut retry);
                if p.plans.is_empty() {
                    planned = None;
                }
            }
        }
        // Everything put back since the batch was formed is planned again on newer state.
        metrics
            .rebases
            .inc_by(retry.len().saturating_sub(queued_before) as u64);
        if let Some(p) = planned {
            inflight = Some(tokio::spawn(finish(shared.clone(), p)));
        }
    }
}

/// What a finished transaction tells the committer.
#[derive(Default)]
struct Finished {
    /// Commits to plan again (their table moved under them).
    requeue: Vec<Job>,
    /// Tables whose cached state is not what the database holds.
    stale: Vec<i64>,
    /// Paths and commit ids now recorded in the database, per table.
    committed: Vec<(i64, Vec<String>, Vec<String>)>,
}

/// Applies a finished batch to the committer's state; returns the tables whose cached
/// state turned out not to be the database's.
fn absorb(
    f: std::result::Result<Finished, tokio::task::JoinError>,
    cache: &mut HashMap<i64, TableState>,
    retry: &mut Vec<Job>,
) -> HashSet<i64> {
    let f = match f {
        Ok(f) => f,
        Err(e) => {
            // A panic in the transaction task: forget everything cached.
            warn!(error = %e, "commit transaction task failed");
            let all = cache.keys().copied().collect();
            cache.clear();
            return all;
        }
    };
    for t in &f.stale {
        cache.remove(t);
    }
    for (t, paths, ids) in f.committed {
        if let Some(st) = cache.get_mut(&t) {
            for p in paths {
                st.inflight_paths.remove(&p);
            }
            for id in ids {
                st.inflight_commits.remove(&id);
            }
        }
    }
    retry.extend(f.requeue);
    f.stale.into_iter().collect()
}

/// The same error again, for each of several requests it answers.
fn same_error(e: &Error) -> Error {
    match e {
        Error::Internal { message, .. } => Error::internal(message.clone()),
        Error::NotFound { kind, name } => Error::not_found(*kind, name.clone()),
        other => Error::Unavailable {
            what: "catalog",
            source: other.to_string().into(),
        },
    }
}

fn reply(job: Job, r: Result<CommitOutcome>) {
    let _ = job.reply.send(r);
}

fn unknown_outcome(e: &Error) -> Error {
    Error::Unavailable {
        what: "catalog database",
        source: format!("the commit's outcome is unknown ({e}); retry with the same commit id")
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Db;
    use crate::storage::{Warehouse, WarehouseConfig};

    /// Makes the committer's next planning panic (a fault injected on purpose).
    pub(super) static PANIC_NEXT_PLAN: std::sync::atomic::AtomicBool =
        std::sync::atomic::AtomicBool::new(false);

    #[tokio::test]
    async fn a_panic_while_planning_fails_only_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let (catalog, ident, t) = crate::testing::catalog_with_table(dir.path()).await;
        let append = |i| crate::testing::append_one(&ident, &t, i, false);
        PANIC_NEXT_PLAN.store(true, std::sync::atomic::Ordering::SeqCst);
        let e = catalog
            .commit(&crate::auth::Caller::unrestricted(), append(1))
            .await
            .unwrap_err();
        assert!(
            matches!(e, Error::Unavailable { .. }) && e.to_string().contains("outcome is unknown"),
            "{e}"
        );
        // The committer goes on: the next commit lands, and a retry of the failed one too.
        let second = catalog
            .commit(&crate::auth::Caller::unrestricted(), append(2))
            .await
            .unwrap();
        assert!(!second.replayed);
        let retried = catalog
            .commit(&crate::auth::Caller::unrestricted(), append(1))
            .await
            .unwrap();
        assert_eq!(retried.parent_snapshot_id, Some(second.snapshot_id));
    }

    #[tokio::test]
    async fn recovery_rewrites_objects_left_only_in_the_catalog() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!("sqlite://{}", dir.path().join("c.db").display()))
            .await
            .unwrap();
        let root = format!("file://{}", dir.path().join("w").display());
        let root2 = format!("file://{}", dir.path().join("w2").display());
        let warehouses = crate::storage::Warehouses::new(Arc::new(
            Warehouse::open(WarehouseConfig::new(&root)).unwrap(),
        ));
        let second = Arc::new(Warehouse::open(WarehouseConfig::new(&root2)).unwrap());
        warehouses
            .insert(
                "second",
                second.clone(),
                crate::storage::registry::Source::Catalog,
            )
            .unwrap();
        let warehouse = warehouses.default_warehouse().clone();
        // A crash after the commit transaction, before the objects reached the disk: one
        // object missing, one torn (right size, wrong bytes), one missing in the second
        // warehouse (written there, not in the first).
        let missing = format!("{root}/t/metadata/a.avro");
        let torn = format!("{root}/t/metadata/b.avro");
        let elsewhere = format!("{root2}/u/metadata/c.avro");
        let (missing_p, torn_p, elsewhere_p) = (
            warehouse.object(&missing).unwrap(),
            warehouse.object(&torn).unwrap(),
            second.object(&elsewhere).unwrap(),
        );
        warehouse
            .put(&torn_p, bytes::Bytes::from_static(b"\0\0\0\0\0"))
            .await
            .unwrap();
        for (path, bytes) in [
            (&missing, &b"manifest"[..]),
            (&torn, &b"hello"[..]),
            (&elsewhere, &b"there"[..]),
        ] {
            sqlx::query("INSERT INTO pending_objects (path, bytes) VALUES ($1, $2)")
                .bind(path)
                .bind(bytes.to_vec())
                .execute(&db.pool)
                .await
                .unwrap();
        }
        assert_eq!(recover_pending(&db, &warehouses).await.unwrap(), 3);
        assert_eq!(&warehouse.get(&missing_p).await.unwrap()[..], b"manifest");
        assert_eq!(&warehouse.get(&torn_p).await.unwrap()[..], b"hello");
        assert_eq!(&second.get(&elsewhere_p).await.unwrap()[..], b"there");
        assert!(db.pending_objects().await.unwrap().is_empty());
        assert_eq!(recover_pending(&db, &warehouses).await.unwrap(), 0);
    }
}
