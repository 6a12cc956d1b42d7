//! The commit pipeline: how a commit becomes a snapshot, atomically.
//!
//! ```text
//!  request ──► prepare (per request, concurrent)          ──► Prepared
//!              · table row + schema/spec from the catalog
//!              · each added file: HEAD (exists, size), stats from request or Parquet footer
//!              · the new files' manifest, built in memory
//!
//!  Prepared ──► committer (one task per process, batches whatever is queued)
//!              · per table: load state (cached), replay recorded commit ids,
//!                check the base snapshot (appends are rebased, others conflict),
//!                plan the snapshot: manifests kept / rewritten / merged, manifest list
//!              · new objects: put to the store (S3), or staged in the warehouse (local
//!                disk: write-behind, no file is created on the commit path)
//!              · ONE database transaction for the whole batch:
//!                  UPDATE tables SET version = v+n ... WHERE table_id = ? AND version = v
//!                  + snapshot, snapshot-log, ref, commit-log, file-index rows
//!                  + the objects' bytes while they are not yet durable in the store
//!              · COMMIT (fsync) ─► reply to every request of the batch
//!              · a table whose swap lost a race (another replica) is reloaded and its
//!                commits re-planned in the next batch
//!
//!  materializer (one task) · writes staged objects in batches once commits pause,
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
use std::sync::{Arc, Mutex};

use iceberg::spec::{
    DataFile, ManifestContentType, ManifestEntry, ManifestFile, ManifestListWriter, ManifestStatus,
    ManifestWriter, ManifestWriterBuilder, Struct, TableMetadata, UNASSIGNED_SEQUENCE_NUMBER,
};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::db::{Db, TableRow};
use crate::env::Env;
use crate::error::{Error, ObjectKind, Result};
use crate::files::FileContext;
use crate::manifests::{ManifestCache, read_manifest_list};
use crate::model::{CommitOutcome, CommitRequest};
use crate::objects::{CaptureStorage, MetaObject};
use crate::storage::{ObjectPath, Owned, TableScope, Warehouse};

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
    pub snapshot_id: i64,
    pub added: Vec<DataFile>,
    pub added_manifest: Option<(ManifestFile, MetaObject)>,
    pub remove: RemoveSelector,
    pub attempts: u32,
}

struct Job {
    prepared: Prepared,
    reply: oneshot::Sender<Result<CommitOutcome>>,
}

/// Parses the stored base metadata of a table.
pub(crate) fn parse_base(row: &TableRow) -> Result<(TableMetadata, FileContext)> {
    let meta: TableMetadata = serde_json::from_str(&row.base_metadata)
        .map_err(|e| Error::internal_from(format!("corrupt metadata of table {}", row.ident), e))?;
    let ctx = FileContext {
        location: row.location.clone(),
        schema: meta.current_schema().clone(),
        spec: meta.default_partition_spec().clone(),
        partition_type: meta.default_partition_type().clone(),
    };
    Ok((meta, ctx))
}

#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    records: u64,
    files: u64,
    size: u64,
}

/// What the committer knows of a table: its row as of `row.version` and the manifests of its
/// current snapshot.
#[derive(Clone)]
struct TableState {
    row: TableRow,
    /// The row's base metadata (schemas and specs, to read manifests with).
    meta: Arc<TableMetadata>,
    ctx: FileContext,
    schema_id: i32,
    manifests: Arc<Vec<ManifestFile>>,
    totals: Totals,
    /// Paths added by planned commits not yet known to be in the database.
    inflight_paths: HashSet<String>,
    /// Commit ids of planned commits not yet known to be in the database.
    inflight_commits: HashSet<String>,
}

impl TableState {
    async fn load(shared: &Shared, table_id: i64) -> Result<Option<Self>> {
        // A row read just before an expiry removed its (then no longer) current snapshot is
        // stale: read it again.
        for _ in 0..crate::metadata::MAX_STALE_READS {
            let Some(row) = shared.db.table_by_id(table_id).await? else {
                return Ok(None);
            };
            if let Some(state) = Self::load_row(shared, row).await? {
                return Ok(Some(state));
            }
        }
        Err(Error::Unavailable {
            what: "table",
            source: "the table kept changing while its state was read; try again".into(),
        })
    }

    /// The state as of `row`; `None` when the row is stale.
    async fn load_row(shared: &Shared, row: TableRow) -> Result<Option<Self>> {
        let table_id = row.table_id;
        // Another replica's last commits may not be in the store yet.
        shared.publish_table(&row.location).await?;
        let (meta, ctx) = parse_base(&row)?;
        let (manifests, totals) = match row.current_snapshot_id {
            None => (Vec::new(), Totals::default()),
            Some(id) => {
                let Some(snap) = shared.db.snapshot(table_id, id).await? else {
                    return Ok(None);
                };
                let list = read_manifest_list(&shared.warehouse, &snap.manifest_list).await?;
                let num = |k: &str| {
                    snap.summary
                        .get(k)
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0)
                };
                let totals = Totals {
                    records: num("total-records"),
                    files: num("total-data-files"),
                    size: num("total-files-size"),
                };
                (list.consume_entries().into_iter().collect(), totals)
            }
        };
        Ok(Some(Self {
            schema_id: meta.current_schema_id(),
            meta: Arc::new(meta),
            row,
            ctx,
            manifests: Arc::new(manifests),
            totals,
            inflight_paths: HashSet::new(),
            inflight_commits: HashSet::new(),
        }))
    }
}

/// What the committer shares with the catalog.
pub(crate) struct Shared {
    pub db: Db,
    pub warehouse: Arc<Warehouse>,
    pub env: Env,
    pub manifests: ManifestCache,
    /// Objects written durably whose catalog copies the materializer has yet to drop.
    pub synced: Mutex<Vec<String>>,
    /// Committed staged objects, for the materializer task.
    pub to_sync: mpsc::UnboundedSender<Vec<String>>,
}

impl Shared {
    /// Makes every committed object below a table's location readable in the store: this
    /// process's staged objects, and those another replica committed but has not written
    /// yet (from their copies in the catalog). Call before handing the table's metadata to
    /// a reader outside this process. Errors are storage errors: retry.
    pub(crate) async fn publish_table(&self, location: &str) -> Result<()> {
        if !self.warehouse.needs_sync() {
            return Ok(());
        }
        let mut attempt = 0;
        loop {
            match self.publish_table_once(location).await {
                Err(e) if e.is_retryable() && attempt < PUBLISH_ATTEMPTS => {
                    attempt += 1;
                    debug!(error = %e, attempt, "publishing a table's objects failed; retrying");
                    tokio::time::sleep(WRITE_RETRY / 4 * attempt).await;
                }
                r => return r,
            }
        }
    }

    async fn publish_table_once(&self, location: &str) -> Result<()> {
        let dir = self.warehouse.location("location", location)?;
        let local = self.warehouse.staged_under(&dir);
        self.record_published(self.warehouse.publish(&local).await)?;
        let mut others = Vec::new();
        let rows = self.db.pending_paths_under(location).await?;
        // Rows of objects this process wrote go at the materializer's next round.
        let written: HashSet<String> = {
            let synced = self.synced.lock().expect("poisoned");
            let rows: HashSet<&String> = rows.iter().collect();
            synced
                .iter()
                .filter(|p| rows.contains(p))
                .cloned()
                .collect()
        };
        for path in rows {
            if written.contains(&path) || self.warehouse.is_staged(&path) {
                continue;
            }
            let object = self.warehouse.object(&path)?;
            match self.warehouse.head(&object).await {
                Ok(_) => continue,
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
            if let Some(bytes) = self.db.pending_object(&path).await? {
                self.warehouse.put(&object, bytes.into()).await?;
                others.push(object);
            }
        }
        self.warehouse.sync(&others).await
    }

    /// The objects among `paths` that the table at `location` owns (each as a deletable
    /// path); any other is logged and left alone.
    pub(crate) fn owned(
        &self,
        table_id: i64,
        location: &str,
        paths: Vec<String>,
    ) -> Vec<(i64, Owned)> {
        let Ok(dir) = self.warehouse.location("location", location) else {
            warn!(
                location,
                "a table's location does not parse; deleting nothing of it"
            );
            return Vec::new();
        };
        let scope = TableScope::new(dir, []);
        paths
            .into_iter()
            .filter_map(|p| {
                let owned = self.warehouse.object(&p).ok().and_then(|o| scope.own(&o));
                if owned.is_none() {
                    warn!(
                        path = p,
                        location, "not deleting an object outside the table"
                    );
                }
                owned.map(|o| (table_id, o))
            })
            .collect()
    }

    /// What the table of `row` owns (see [`crate::locations`]).
    pub(crate) async fn scope(&self, row: &TableRow) -> Result<TableScope> {
        let (props, extra) = crate::locations::row_properties(row);
        let others: Vec<String> = if extra {
            let all = self.db.table_locations().await?;
            all.into_iter()
                .filter(|(id, _)| *id != row.table_id)
                .map(|(_, l)| l)
                .collect()
        } else {
            Vec::new()
        };
        crate::locations::scope(&self.warehouse, &row.location, props.as_ref(), &others)
    }

    /// Writes every staged object.
    pub(crate) async fn publish_all(&self) -> Result<()> {
        let all = self.warehouse.staged_all();
        self.record_published(self.warehouse.publish(&all).await)
    }

    /// Drops the catalog copies of objects now durable in the store (or deleted).
    pub(crate) async fn forget_written(&self) -> Result<()> {
        let mut done = std::mem::take(&mut *self.synced.lock().expect("poisoned"));
        done.extend(self.warehouse.take_released());
        if let Err(e) = self.db.clear_pending_objects(&done).await {
            self.synced.lock().expect("poisoned").extend(done);
            return Err(e);
        }
        Ok(())
    }

    /// Notes what a publish wrote (its catalog copies go at the materializer's next round).
    fn record_published(&self, p: crate::storage::Published) -> Result<()> {
        self.synced.lock().expect("poisoned").extend(p.written);
        p.error.map_or(Ok(()), Err)
    }
}

/// How often [`Shared::publish_table`] tries again after a transient storage error.
const PUBLISH_ATTEMPTS: u32 = 5;

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

struct Planned {
    plans: Vec<GroupPlan>,
    started: std::time::Instant,
}

impl Planned {
    /// Takes back the groups of tables whose previous batch did not commit as planned: their
    /// plans stand on a state that never was. Their commits are planned again (no attempt
    /// is charged); their new objects, but for the kept added manifests, are garbage.
    fn withdraw(&mut self, stale: &HashSet<i64>, shared: &Shared, retry: &mut Vec<Job>) {
        if stale.is_empty() {
            return;
        }
        let (gone, kept): (Vec<GroupPlan>, Vec<GroupPlan>) = std::mem::take(&mut self.plans)
            .into_iter()
            .partition(|p| stale.contains(&p.table_id));
        self.plans = kept;
        let mut garbage = Vec::new();
        for p in gone {
            for s in p.steps {
                garbage.extend(shared.owned(
                    p.table_id,
                    &p.state.row.location,
                    s.replanned_garbage(),
                ));
                retry.push(s.job);
                retry.extend(s.duplicates);
            }
        }
        delete_best_effort(shared, garbage);
    }
}

/// One planned snapshot and the request(s) it answers.
struct Step {
    job: Job,
    /// Jobs in the batch with the same commit id: they get this outcome, replayed.
    duplicates: Vec<Job>,
    plan: StepPlan,
}

impl Step {
    /// The objects this step wrote that a re-plan will not reuse (all but the manifest of
    /// the added files, which does not depend on the parent snapshot).
    fn replanned_garbage(&self) -> Vec<String> {
        let keep = self
            .job
            .prepared
            .added_manifest
            .as_ref()
            .map(|(_, o)| o.path.as_str());
        self.plan
            .objects
            .iter()
            .map(|o| o.path.as_str())
            .filter(|p| Some(*p) != keep)
            .map(str::to_string)
            .collect()
    }
}

/// One planned snapshot.
struct StepPlan {
    outcome: CommitOutcome,
    timestamp_ms: i64,
    summary: HashMap<String, String>,
    manifest_list: String,
    schema_id: i32,
    /// New objects this step writes (the added manifest, rewritten/merged ones, the list).
    objects: Vec<MetaObject>,
}

struct GroupPlan {
    table_id: i64,
    base_version: i64,
    /// The current snapshot the plan was built on: compared with the version, so a plan on
    /// top of a batch that did not commit can never pass (snapshot ids are random).
    base_snapshot_id: Option<i64>,
    state: TableState,
    steps: Vec<Step>,
    /// Retries of commits still in flight: planned again once that batch has finished.
    deferred: Vec<Job>,
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

/// Plans a batch on the cached states (which it advances) and writes the new objects.
/// Returns `None` when nothing is left to commit (every job answered).
async fn plan_batch(
    shared: &Arc<Shared>,
    cache: &mut HashMap<i64, TableState>,
    batch: Vec<Job>,
    deferred: &mut Vec<Job>,
) -> Option<Planned> {
    #[cfg(test)]
    if tests::PANIC_NEXT_PLAN.swap(false, std::sync::atomic::Ordering::SeqCst) {
        panic!("injected: planning panics");
    }
    let started = std::time::Instant::now();
    // Group by table, keeping arrival order.
    let mut order: Vec<i64> = Vec::new();
    let mut by_table: HashMap<i64, Vec<Job>> = HashMap::new();
    for j in batch {
        let t = j.prepared.table_id;
        by_table.entry(t).or_insert_with(|| {
            order.push(t);
            Vec::new()
        });
        by_table.get_mut(&t).expect("just inserted").push(j);
    }

    let seen = match Seen::lookup(&shared.db, &by_table).await {
        Ok(s) => s,
        Err(e) => {
            for j in by_table.into_values().flatten() {
                reply(
                    j,
                    Err(Error::Unavailable {
                        what: "catalog database",
                        source: e.to_string().into(),
                    }),
                );
            }
            return None;
        }
    };
    let mut plans: Vec<GroupPlan> = Vec::new();
    for table_id in order {
        let jobs = by_table.remove(&table_id).expect("grouped");
        match plan_group(shared, cache.remove(&table_id), table_id, jobs, &seen).await {
            Ok(Some(mut p)) => {
                deferred.append(&mut p.deferred);
                cache.insert(p.table_id, p.state.clone());
                if !p.steps.is_empty() {
                    plans.push(p);
                }
            }
            Ok(None) => {}
            Err((e, jobs)) => {
                for j in jobs {
                    reply(j, Err(same_error(&e)));
                }
            }
        }
    }
    if plans.is_empty() {
        return None;
    }
    // The transaction locks tables in id order, so replicas cannot deadlock on each other.
    plans.sort_by_key(|p| p.table_id);

    // Put or stage every new object. Nothing references them until the transaction commits.
    let objects: Result<Vec<(ObjectPath, bytes::Bytes)>> = plans
        .iter()
        .flat_map(|p| p.steps.iter().flat_map(|s| s.plan.objects.iter()))
        .map(|o| Ok((shared.warehouse.object(&o.path)?, o.bytes.clone())))
        .collect();
    let stored = match objects {
        Err(e) => Err(e),
        Ok(objects) if shared.warehouse.needs_sync() => {
            if shared.warehouse.staged_size() >= STAGED_LIMIT {
                // Backpressure: the disk is behind; wait for it rather than grow unbounded.
                if let Err(e) = shared.publish_all().await {
                    warn!(error = %e, "writing staged commit metadata failed");
                }
            }
            shared.warehouse.stage(&objects);
            Ok(())
        }
        Ok(objects) => shared.warehouse.put_new(&objects).await,
    };
    if let Err(e) = stored {
        warn!(error = %e, "writing commit metadata failed; the batch is not committed");
        delete_best_effort(
            shared,
            plans
                .iter()
                .flat_map(|p| {
                    let paths = p
                        .steps
                        .iter()
                        .flat_map(|s| s.plan.objects.iter().map(|o| o.path.clone()))
                        .collect();
                    shared.owned(p.table_id, &p.state.row.location, paths)
                })
                .collect(),
        );
        for p in plans {
            cache.remove(&p.table_id);
            for s in p.steps {
                for d in s.duplicates {
                    reply(d, Err(Error::storage(e.to_string())));
                }
                reply(s.job, Err(Error::storage(e.to_string())));
            }
        }
        return None;
    }
    Some(Planned { plans, started })
}

/// Runs a planned batch's transaction and answers its commits.
async fn finish(shared: Arc<Shared>, planned: Planned) -> Finished {
    let Planned { plans, started } = planned;
    let tx_start = std::time::Instant::now();
    let res = write_transaction(&shared, &plans).await;
    debug!(
        commits = plans.iter().map(|p| p.steps.len()).sum::<usize>(),
        plan_and_put = ?(tx_start - started),
        transaction = ?tx_start.elapsed(),
        "batch"
    );
    let mut out = Finished::default();
    match res {
        Err(e) => {
            // The transaction may or may not have committed: outcome unknown. The cached
            // states are dropped, so the next batch re-reads the tables.
            warn!(error = %e, "commit transaction failed");
            // If it did commit, its objects must reach the store: materialize them anyway.
            spawn_sync(
                &shared,
                plans
                    .iter()
                    .flat_map(|p| p.steps.iter().flat_map(|s| &s.plan.objects))
                    .map(|o| o.path.clone())
                    .collect(),
            );
            for p in plans {
                out.stale.push(p.table_id);
                for s in p.steps {
                    for d in s.duplicates {
                        reply(d, Err(unknown_outcome(&e)));
                    }
                    reply(s.job, Err(unknown_outcome(&e)));
                }
            }
        }
        Ok(won) => {
            let mut to_sync = Vec::new();
            for (p, won) in plans.into_iter().zip(won) {
                if won {
                    let mut paths = Vec::new();
                    let mut ids = Vec::new();
                    for s in p.steps {
                        ids.push(s.job.prepared.req.commit_id.clone());
                        to_sync.extend(s.plan.objects.iter().map(|o| o.path.clone()));
                        paths.extend(
                            s.job
                                .prepared
                                .added
                                .iter()
                                .map(|f| f.file_path().to_string()),
                        );
                        for d in s.duplicates {
                            reply(
                                d,
                                Ok(CommitOutcome {
                                    replayed: true,
                                    ..s.plan.outcome.clone()
                                }),
                            );
                        }
                        reply(s.job, Ok(s.plan.outcome));
                    }
                    out.committed.push((p.table_id, paths, ids));
                } else {
                    debug!(table_id = p.table_id, "lost the pointer swap; re-planning");
                    out.stale.push(p.table_id);
                    let mut garbage = Vec::new();
                    for s in p.steps {
                        garbage.extend(shared.owned(
                            p.table_id,
                            &p.state.row.location,
                            s.replanned_garbage(),
                        ));
                        for mut j in std::iter::once(s.job).chain(s.duplicates) {
                            j.prepared.attempts += 1;
                            if j.prepared.attempts >= MAX_ATTEMPTS {
                                reply(j, Err(Error::Unavailable {
                                    what: "table",
                                    source: "too much contention: the commit lost the pointer swap repeatedly; nothing was applied, retry later".into(),
                                }));
                            } else {
                                out.requeue.push(j);
                            }
                        }
                    }
                    delete_best_effort(&shared, garbage);
                }
            }
            spawn_sync(&shared, to_sync);
        }
    }
    out
}

/// Hands committed staged objects to the materializer, which drops their pending rows once
/// they are written (until then, start-up recovery would rewrite them, harmlessly).
fn spawn_sync(shared: &Shared, paths: Vec<String>) {
    if shared.warehouse.needs_sync() && !paths.is_empty() {
        let _ = shared.to_sync.send(paths);
    }
}

/// The materializer writes staged objects once commits pause for this long: a burst of
/// commits creates no file until it ends. Durability does not wait for it (the bytes are in
/// the catalog), nor do readers in this process (they read staged objects) or outside it
/// (they are handed paths only after [`Shared::publish_table`]).
const WRITE_WHEN_IDLE: std::time::Duration = std::time::Duration::from_millis(50);
/// ... or once this many bytes are staged, or the oldest has waited [`WRITE_AFTER`].
const WRITE_AT_SIZE: u64 = 64 << 20;
const WRITE_AFTER: std::time::Duration = std::time::Duration::from_secs(10);
/// Beyond this many staged bytes the committer itself waits for them to be written: the
/// buffer absorbs bursts, the disk sets the sustained rate.
const STAGED_LIMIT: u64 = 256 << 20;
/// Pause before writing again objects whose write failed.
const WRITE_RETRY: std::time::Duration = std::time::Duration::from_millis(200);

async fn materializer(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Vec<String>>) {
    let mut pending: Vec<String> = Vec::new();
    let mut oldest = std::time::Instant::now();
    loop {
        let next = if pending.is_empty() {
            rx.recv().await
        } else {
            let wait = WRITE_WHEN_IDLE.min(WRITE_AFTER.saturating_sub(oldest.elapsed()));
            match tokio::time::timeout(wait, rx.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    write_staged(&shared, &mut pending).await;
                    continue;
                }
            }
        };
        let Some(paths) = next else {
            write_staged(&shared, &mut pending).await;
            return;
        };
        if pending.is_empty() {
            oldest = std::time::Instant::now();
        }
        pending.extend(paths);
        if oldest.elapsed() >= WRITE_AFTER || shared.warehouse.staged_size() >= WRITE_AT_SIZE {
            write_staged(&shared, &mut pending).await;
        }
    }
}

/// Writes `pending` staged objects; what could not be written stays in `pending`.
/// In chunks of [`WRITE_CHUNK`], so a reader's [`Shared::publish_table`] waits for one chunk
/// at most, not for a whole burst.
async fn write_staged(shared: &Shared, pending: &mut Vec<String>) {
    let mut failed = None;
    for chunk in pending.chunks(WRITE_CHUNK) {
        if let Err(e) = shared.record_published(shared.warehouse.publish(chunk).await) {
            failed = Some(e);
        }
    }
    if let Err(e) = shared.forget_written().await {
        debug!(error = %e, "could not drop catalog copies of written objects; later then");
    }
    match failed {
        None => pending.clear(),
        Some(e) => {
            warn!(error = %e, "writing commit metadata failed; kept staged and in the catalog, retrying");
            pending.retain(|p| shared.warehouse.is_staged(p));
            tokio::time::sleep(WRITE_RETRY).await;
        }
    }
}

/// Objects the materializer writes per round of fsyncs.
const WRITE_CHUNK: usize = 256;

/// Deletes objects of commits that did not happen, in the background. What cannot be
/// deleted now is recorded for the table's next expiry run (`pending_deletes`), so garbage
/// is cleaned up without listing.
fn delete_best_effort(shared: &Shared, paths: Vec<(i64, Owned)>) {
    if paths.is_empty() {
        return;
    }
    let warehouse = shared.warehouse.clone();
    let db = shared.db.clone();
    let now = shared.env.clock.now_ms();
    tokio::spawn(async move {
        let mut failed: HashMap<i64, Vec<crate::expire::Doomed>> = HashMap::new();
        for (table_id, owned) in paths {
            if let Err(e) = warehouse.delete(&owned).await {
                let p = owned.uri().to_string();
                debug!(path = %p, error = %e, "could not delete garbage of a failed commit");
                let kind = if p.contains("/snap-") {
                    crate::expire::KIND_MANIFEST_LIST
                } else {
                    crate::expire::KIND_MANIFEST
                };
                failed
                    .entry(table_id)
                    .or_default()
                    .push(crate::expire::Doomed {
                        path: p,
                        kind,
                        size: -1,
                    });
            }
        }
        for (table_id, doomed) in failed {
            let recorded = match db.pool.acquire().await {
                Ok(mut conn) => {
                    crate::expire::record_doomed(&mut conn, table_id, &doomed, now).await
                }
                Err(e) => Err(e.into()),
            };
            if let Err(e) = recorded {
                debug!(table_id, error = %e, "could not record garbage for a later delete");
            }
        }
    });
}

type GroupError = (Error, Vec<Job>);

/// How planning one commit ended.
enum Planning {
    Step(Result<StepPlan>),
    /// The commit had landed already: answer with its recorded outcome.
    Recorded(CommitOutcome),
}

enum Recheck {
    /// The commit is in the commit log: answer with its outcome.
    Recorded(CommitOutcome),
    /// The cached state was stale and has been reloaded: plan again.
    Reloaded,
    /// The refusal stands.
    Confirmed,
}

/// Double-checks a refusal made on cached state (see [`plan_group`]).
async fn double_check(shared: &Shared, plan: &mut GroupPlan, p: &Prepared) -> Result<Recheck> {
    let id = p.req.commit_id.as_str();
    if let Some(r) = shared
        .db
        .recorded_commits(&[(plan.table_id, vec![id])])
        .await?
        .remove(&(plan.table_id, id.to_string()))
    {
        return Ok(Recheck::Recorded(r.replay(&p.digest)?));
    }
    // Only a state with nothing planned or in flight on top of it must equal the database.
    if !plan.steps.is_empty() || !plan.state.inflight_commits.is_empty() {
        return Ok(Recheck::Confirmed);
    }
    match TableState::load(shared, plan.table_id).await? {
        Some(fresh) if fresh.row.version != plan.state.row.version => {
            plan.base_version = fresh.row.version;
            plan.base_snapshot_id = fresh.row.current_snapshot_id;
            plan.state = fresh;
            Ok(Recheck::Reloaded)
        }
        _ => Ok(Recheck::Confirmed),
    }
}

/// What the catalog already holds of a batch: recorded commit ids and committed paths.
struct Seen {
    recorded: HashMap<(i64, String), crate::db::RecordedCommit>,
    known: HashSet<(i64, String)>,
}

impl Seen {
    async fn lookup(db: &Db, groups: &HashMap<i64, Vec<Job>>) -> Result<Self> {
        let ids: Vec<(i64, Vec<&str>)> = groups
            .iter()
            .map(|(t, jobs)| {
                (
                    *t,
                    jobs.iter()
                        .map(|j| j.prepared.req.commit_id.as_str())
                        .collect(),
                )
            })
            .collect();
        let paths: Vec<(i64, Vec<&str>)> = groups
            .iter()
            .map(|(t, jobs)| {
                (
                    *t,
                    jobs.iter()
                        .flat_map(|j| j.prepared.added.iter().map(|f| f.file_path()))
                        .collect(),
                )
            })
            .collect();
        // Paths first: they are recorded in the same transaction as the commit id, so a
        // commit that lands between the two reads shows up as recorded, never only as
        // "file already in the table".
        let known = db.known_paths(&paths).await?;
        let recorded = db.recorded_commits(&ids).await?;
        Ok(Self { recorded, known })
    }
}

async fn plan_group(
    shared: &Shared,
    cached: Option<TableState>,
    table_id: i64,
    jobs: Vec<Job>,
    seen: &Seen,
) -> std::result::Result<Option<GroupPlan>, GroupError> {
    let state = match cached {
        Some(s) => s,
        None => match TableState::load(shared, table_id).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                for j in jobs {
                    let name = j.prepared.req.ident.to_string();
                    reply(j, Err(Error::not_found(ObjectKind::Table, name)));
                }
                return Ok(None);
            }
            Err(e) => return Err((e, jobs)),
        },
    };
    let mut plan = GroupPlan {
        table_id,
        base_version: state.row.version,
        base_snapshot_id: state.row.current_snapshot_id,
        state,
        steps: Vec::new(),
        deferred: Vec::new(),
    };
    let mut step_by_id: HashMap<String, usize> = HashMap::new();
    for job in jobs {
        let id = job.prepared.req.commit_id.clone();
        if let Some(r) = seen.recorded.get(&(table_id, id.clone())) {
            let replayed = r.replay(&job.prepared.digest);
            reply(job, replayed);
            continue;
        }
        if let Some(&i) = step_by_id.get(&id) {
            if plan.steps[i].job.prepared.digest != job.prepared.digest {
                let e = Error::invalid(
                    "commit_id",
                    format!("{id} is used by two different requests at once; use a new commit id"),
                );
                reply(job, Err(e));
                continue;
            }
            plan.steps[i].duplicates.push(job);
            continue;
        }
        if plan.state.inflight_commits.contains(&id) {
            plan.deferred.push(job);
            continue;
        }
        // A refusal made on cached state is double-checked once: the first attempt of this
        // commit may have landed meanwhile, or the cache may be behind the database
        // (another replica committed).
        let mut rechecked = false;
        let planning = loop {
            let planned = plan_step(
                shared,
                &mut plan.state,
                &job.prepared,
                table_id,
                &seen.known,
            )
            .await;
            let refused = matches!(
                &planned,
                Err(Error::Conflict { .. } | Error::InvalidArgument { .. })
            );
            if !refused || rechecked {
                break Planning::Step(planned);
            }
            rechecked = true;
            match double_check(shared, &mut plan, &job.prepared).await {
                Ok(Recheck::Reloaded) => continue,
                Ok(Recheck::Confirmed) => break Planning::Step(planned),
                Ok(Recheck::Recorded(outcome)) => break Planning::Recorded(outcome),
                Err(e) => break Planning::Step(Err(e)),
            }
        };
        let planned = match planning {
            Planning::Step(planned) => planned,
            Planning::Recorded(outcome) => {
                reply(job, Ok(outcome));
                continue;
            }
        };
        match planned {
            Ok(step) => {
                plan.state.inflight_commits.insert(id.clone());
                step_by_id.insert(id, plan.steps.len());
                plan.steps.push(Step {
                    job,
                    duplicates: Vec::new(),
                    plan: step,
                });
            }
            Err(e) => reply(job, Err(e)),
        }
    }
    Ok(Some(plan))
}

pub(crate) fn resolved_seq(e: &ManifestEntry, m: &ManifestFile) -> i64 {
    e.sequence_number.unwrap_or(m.sequence_number)
}

fn resolved_file_seq(e: &ManifestEntry, m: &ManifestFile) -> i64 {
    e.file_sequence_number.unwrap_or_else(|| resolved_seq(e, m))
}

fn resolved_snapshot(e: &ManifestEntry, m: &ManifestFile) -> i64 {
    e.snapshot_id.unwrap_or(m.added_snapshot_id)
}

fn live_files(m: &ManifestFile) -> u64 {
    m.added_files_count.unwrap_or(0) as u64 + m.existing_files_count.unwrap_or(0) as u64
}

fn assign_sequence(m: &mut ManifestFile, seq: i64) {
    if m.sequence_number == UNASSIGNED_SEQUENCE_NUMBER {
        m.sequence_number = seq;
    }
    if m.min_sequence_number == UNASSIGNED_SEQUENCE_NUMBER {
        m.min_sequence_number = seq;
    }
}

/// A v2 data-manifest writer into `capture`, at a fresh path under the table's metadata
/// directory (`<uuid>-<tag>.avro`); returns the path too.
pub(crate) fn manifest_writer(
    capture: &Arc<CaptureStorage>,
    ctx: &FileContext,
    env: &Env,
    snapshot_id: i64,
    tag: &str,
) -> (String, ManifestWriter) {
    let path = format!(
        "{}/metadata/{}-{tag}.avro",
        ctx.location.trim_end_matches('/'),
        env.ids.uuid()
    );
    let w = ManifestWriterBuilder::new(
        capture.output(&path),
        Some(snapshot_id),
        ctx.schema.clone(),
        (*ctx.spec).clone(),
    )
    .build_v2_data();
    (path, w)
}

/// Plans one commit on top of `state` and advances `state` to the new snapshot.
async fn plan_step(
    shared: &Shared,
    state: &mut TableState,
    p: &Prepared,
    table_id: i64,
    known: &HashSet<(i64, String)>,
) -> Result<StepPlan> {
    let req = &p.req;
    let current = state.row.current_snapshot_id;
    let replace = matches!(req.operation, crate::model::Operation::Replace { .. });
    let conflict = || Error::Conflict {
        table: req.ident.to_string(),
        expected: req.base_snapshot_id,
        current,
    };
    if replace && req.base_snapshot_id != current {
        // A rewrite may land on a newer snapshot unless deletes arrived since its base.
        let base_seq = match req.base_snapshot_id {
            Some(b) => match shared.db.snapshot(table_id, b).await? {
                Some(s) => s.sequence_number,
                None => return Err(conflict()),
            },
            None => return Err(conflict()),
        };
        if state
            .manifests
            .iter()
            .any(|m| m.content == ManifestContentType::Deletes && m.sequence_number > base_seq)
        {
            return Err(conflict());
        }
    } else if !req.operation.commutes() && req.base_snapshot_id != current {
        return Err(conflict());
    }
    if let Some(base) = req.base_snapshot_id
        && current.is_none()
    {
        return Err(Error::invalid(
            "base_snapshot_id",
            format!(
                "snapshot {base} is not in table {}, which is empty",
                req.ident
            ),
        ));
    }
    for f in &p.added {
        if state.inflight_paths.contains(f.file_path())
            && !known.contains(&(table_id, f.file_path().to_string()))
        {
            // Another commit adding this file is in flight: its fate decides.
            return Err(Error::Conflict {
                table: req.ident.to_string(),
                expected: req.base_snapshot_id,
                current: state.row.current_snapshot_id,
            });
        }
        if known.contains(&(table_id, f.file_path().to_string())) {
            return Err(Error::invalid(
                "add.path",
                format!("{} is already part of table {}", f.file_path(), req.ident),
            ));
        }
    }

    let seq = state.row.last_sequence_number + 1;
    let snapshot_id = p.snapshot_id;
    let capture = CaptureStorage::new();
    let mut manifests: Vec<ManifestFile> = Vec::new();
    let mut removed = Totals::default();

    // Removals: rewrite the manifests that hold removed files.
    let mut matched: HashSet<String> = HashSet::new();
    for m in state.manifests.iter().filter(|m| live_files(m) > 0) {
        let selects = |df: &DataFile| match &p.remove {
            RemoveSelector::Nothing => false,
            RemoveSelector::All => true,
            RemoveSelector::Paths(paths) => paths.contains(df.file_path()),
            RemoveSelector::Partitions(parts) => parts.contains(df.partition()),
        };
        if matches!(p.remove, RemoveSelector::Nothing) || m.content != ManifestContentType::Data {
            manifests.push(m.clone());
            continue;
        }
        let entries = shared
            .manifests
            .get(&shared.warehouse, &state.meta, m)
            .await?;
        let alive = || entries.iter().filter(|e| e.is_alive());
        if !alive().any(|e| selects(&e.data_file)) {
            manifests.push(m.clone());
            continue;
        }
        let (_, mut w) = manifest_writer(&capture, &state.ctx, &shared.env, snapshot_id, "m1");
        for e in alive() {
            let df = e.data_file.clone();
            if selects(&e.data_file) {
                matched.insert(df.file_path().to_string());
                removed.files += 1;
                removed.records += df.record_count();
                removed.size += df.file_size_in_bytes();
                w.add_delete_file(df, resolved_seq(e, m), Some(resolved_file_seq(e, m)))?;
            } else {
                w.add_existing_file(
                    df,
                    resolved_snapshot(e, m),
                    resolved_seq(e, m),
                    Some(resolved_file_seq(e, m)),
                )?;
            }
        }
        let mut mf = w.write_manifest_file().await?;
        assign_sequence(&mut mf, seq);
        manifests.push(mf);
    }
    if let RemoveSelector::Paths(paths) = &p.remove
        && let Some(missing) = paths.iter().find(|x| !matched.contains(*x))
    {
        if replace && req.base_snapshot_id != current {
            // Live in its base, gone now: a concurrent commit removed or rewrote it.
            return Err(conflict());
        }
        return Err(Error::invalid(
            "remove",
            format!("{missing} is not a live file of table {}", req.ident),
        ));
    }

    let mut objects = Vec::new();
    if let Some((mf, obj)) = &p.added_manifest {
        let mut mf = mf.clone();
        assign_sequence(&mut mf, seq);
        manifests.insert(0, mf);
        objects.push(obj.clone());
    }
    merge_tiers(shared, state, &capture, &mut manifests, snapshot_id, seq).await?;

    let list_path = format!(
        "{}/metadata/snap-{snapshot_id}-{}-{}.avro",
        state.row.location.trim_end_matches('/'),
        p.attempts,
        shared.env.ids.uuid()
    );
    let mut lw = ManifestListWriter::v2(capture.writer_for(&list_path), snapshot_id, current, seq);
    lw.add_manifests(manifests.iter().cloned())?;
    lw.close().await?;
    objects.extend(capture.take());

    let added = Totals {
        files: p.added.len() as u64,
        records: p.added.iter().map(|f| f.record_count()).sum(),
        size: p.added.iter().map(|f| f.file_size_in_bytes()).sum(),
    };
    let totals = Totals {
        files: state.totals.files + added.files - removed.files,
        records: state.totals.records + added.records - removed.records,
        size: state.totals.size + added.size - removed.size,
    };
    let operation = match (&req.operation, added.files, removed.files) {
        (crate::model::Operation::Append { .. }, _, _) => "append",
        (crate::model::Operation::Delete { .. }, _, _) => "delete",
        (crate::model::Operation::Replace { .. }, _, _) => "replace",
        (_, 0, n) if n > 0 => "delete",
        (_, n, 0) if n > 0 => "append",
        _ => "overwrite",
    };
    let mut summary: HashMap<String, String> = req.summary.clone();
    summary.insert("operation".into(), operation.into());
    let mut put = |k: &str, v: u64| {
        summary.insert(k.to_string(), v.to_string());
    };
    if added.files > 0 {
        put("added-data-files", added.files);
        put("added-records", added.records);
        put("added-files-size", added.size);
    }
    if removed.files > 0 {
        put("deleted-data-files", removed.files);
        put("deleted-records", removed.records);
        put("removed-files-size", removed.size);
    }
    put("total-data-files", totals.files);
    put("total-records", totals.records);
    put("total-files-size", totals.size);
    put("total-delete-files", 0);
    put("total-position-deletes", 0);
    put("total-equality-deletes", 0);
    summary.insert("firn.commit-id".into(), req.commit_id.clone());

    let timestamp_ms = shared.env.clock.now_ms().max(state.row.last_updated_ms);
    for f in &p.added {
        state.inflight_paths.insert(f.file_path().to_string());
    }
    state.row.version += 1;
    state.row.current_snapshot_id = Some(snapshot_id);
    state.row.last_sequence_number = seq;
    state.row.last_updated_ms = timestamp_ms;
    state.manifests = Arc::new(manifests);
    state.totals = totals;

    Ok(StepPlan {
        outcome: CommitOutcome {
            snapshot_id,
            sequence_number: seq,
            version: state.row.version,
            parent_snapshot_id: current,
            replayed: false,
        },
        timestamp_ms,
        summary,
        manifest_list: list_path,
        schema_id: state.schema_id,
        objects,
    })
}

/// Keeps the manifest list short: whenever [`MERGE_FAN_IN`] data manifests fall in the same
/// size tier (tier = ⌊log_fan-in(live files)⌋), they are merged into one of the next tier.
/// Each file is rewritten O(log n) times over its life, and a list holds at most
/// about fan-in × tiers manifests, so commit cost stays flat as history grows.
async fn merge_tiers(
    shared: &Shared,
    state: &TableState,
    capture: &Arc<CaptureStorage>,
    manifests: &mut Vec<ManifestFile>,
    snapshot_id: i64,
    seq: i64,
) -> Result<()> {
    let tier = |m: &ManifestFile| live_files(m).max(1).ilog(MERGE_FAN_IN as u64);
    loop {
        let mergeable = |m: &ManifestFile| {
            m.content == ManifestContentType::Data
                && m.added_snapshot_id != snapshot_id
                && live_files(m) > 0
        };
        let mut by_tier: HashMap<u32, Vec<usize>> = HashMap::new();
        for (i, m) in manifests.iter().enumerate().filter(|(_, m)| mergeable(m)) {
            by_tier.entry(tier(m)).or_default().push(i);
        }
        let Some((_, idx)) = by_tier.into_iter().find(|(_, v)| v.len() >= MERGE_FAN_IN) else {
            return Ok(());
        };
        let idx: Vec<usize> = idx.into_iter().take(MERGE_FAN_IN).collect();
        let (path, mut w) =
            manifest_writer(capture, &state.ctx, &shared.env, snapshot_id, "merged");
        let mut merged_entries = Vec::new();
        for &i in &idx {
            let m = &manifests[i];
            let entries = shared
                .manifests
                .get(&shared.warehouse, &state.meta, m)
                .await?;
            for e in entries.iter().filter(|e| e.is_alive()) {
                let (sid, s, fs) = (
                    resolved_snapshot(e, m),
                    resolved_seq(e, m),
                    resolved_file_seq(e, m),
                );
                w.add_existing_file(e.data_file.clone(), sid, s, Some(fs))?;
                merged_entries.push(ManifestEntry {
                    status: ManifestStatus::Existing,
                    snapshot_id: Some(sid),
                    sequence_number: Some(s),
                    file_sequence_number: Some(fs),
                    data_file: e.data_file.clone(),
                });
            }
        }
        let mut mf = w.write_manifest_file().await?;
        assign_sequence(&mut mf, seq);
        shared.manifests.insert(&path, merged_entries);
        let drop: HashSet<usize> = idx.into_iter().collect();
        let mut kept: Vec<ManifestFile> = manifests
            .drain(..)
            .enumerate()
            .filter(|(i, _)| !drop.contains(i))
            .map(|(_, m)| m)
            .collect();
        kept.push(mf);
        *manifests = kept;
    }
}

/// The one transaction of a batch. Returns, per group, whether its pointer swap won.
async fn write_transaction(shared: &Shared, plans: &[GroupPlan]) -> Result<Vec<bool>> {
    let mut tx = shared.db.pool.begin().await?;
    let mut won = Vec::with_capacity(plans.len());
    for p in plans {
        if p.steps.is_empty() {
            won.push(true);
            continue;
        }
        let st = &p.state.row;
        let swapped = sqlx::query(
            "UPDATE tables SET version = $1, current_snapshot_id = $2, last_sequence_number = $3, \
             last_updated_ms = $4 WHERE table_id = $5 AND version = $6 \
             AND COALESCE(current_snapshot_id, -1) = $7",
        )
        .bind(st.version)
        .bind(st.current_snapshot_id)
        .bind(st.last_sequence_number)
        .bind(st.last_updated_ms)
        .bind(p.table_id)
        .bind(p.base_version)
        .bind(p.base_snapshot_id.unwrap_or(-1))
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        won.push(swapped);
        if !swapped {
            continue;
        }
        for s in &p.steps {
            let o = &s.plan.outcome;
            let req = &s.job.prepared.req;
            crate::db::insert_snapshot(
                &mut tx,
                &crate::db::NewSnapshotRow {
                    table_id: p.table_id,
                    snapshot_id: o.snapshot_id,
                    parent_snapshot_id: o.parent_snapshot_id,
                    sequence_number: o.sequence_number,
                    timestamp_ms: s.plan.timestamp_ms,
                    operation: &s.plan.summary["operation"],
                    summary: &s.plan.summary,
                    schema_id: s.plan.schema_id,
                    manifest_list: &s.plan.manifest_list,
                    commit_id: &req.commit_id,
                },
            )
            .await?;
            crate::db::insert_snapshot_log(
                &mut tx,
                p.table_id,
                o.version,
                o.snapshot_id,
                s.plan.timestamp_ms,
            )
            .await?;
            crate::db::insert_commit_log(
                &mut tx,
                &crate::db::CommitLogRow {
                    table_id: p.table_id,
                    commit_id: &req.commit_id,
                    snapshot_id: o.snapshot_id,
                    sequence_number: o.sequence_number,
                    version: o.version,
                    parent_snapshot_id: o.parent_snapshot_id,
                    operation: req.operation.name(),
                    client: &req.client,
                    committed_at_ms: s.plan.timestamp_ms,
                    request_digest: Some(&s.job.prepared.digest),
                },
            )
            .await?;
            for f in &s.job.prepared.added {
                sqlx::query(
                    "INSERT INTO table_files (table_id, path, snapshot_id) VALUES ($1, $2, $3)",
                )
                .bind(p.table_id)
                .bind(f.file_path())
                .bind(o.snapshot_id)
                .execute(&mut *tx)
                .await?;
            }
        }
        if let Some(id) = st.current_snapshot_id {
            crate::db::upsert_ref(&mut tx, p.table_id, "main", id, "branch", None).await?;
        }
        if shared.warehouse.needs_sync() {
            for o in p.steps.iter().flat_map(|s| &s.plan.objects) {
                sqlx::query(
                    "INSERT INTO pending_objects (path, bytes) VALUES ($1, $2) \
                     ON CONFLICT (path) DO NOTHING",
                )
                .bind(&o.path)
                .bind(o.bytes.to_vec())
                .execute(&mut *tx)
                .await?;
            }
        }
    }
    tx.commit().await?;
    Ok(won)
}

/// Rewrites objects whose bytes a crash left only in the catalog, then forgets them.
pub(crate) async fn recover_pending(db: &Db, warehouse: &Warehouse) -> Result<usize> {
    let pending = db.pending_objects().await?;
    if pending.is_empty() {
        return Ok(0);
    }
    let mut paths = Vec::with_capacity(pending.len());
    let mut objects = Vec::with_capacity(pending.len());
    for (path, bytes) in pending {
        // Always rewrite: a file that was never synced may have the right size and the
        // wrong (zeroed) contents.
        let object = warehouse.object(&path)?;
        warehouse.put(&object, bytes.into()).await?;
        objects.push(object);
        paths.push(path);
    }
    warehouse.sync(&objects).await?;
    db.clear_pending_objects(&paths).await?;
    Ok(paths.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::WarehouseConfig;

    /// Makes the committer's next planning panic (a fault injected on purpose).
    pub(super) static PANIC_NEXT_PLAN: std::sync::atomic::AtomicBool =
        std::sync::atomic::AtomicBool::new(false);

    #[tokio::test]
    async fn a_panic_while_planning_fails_only_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let (catalog, ident, t) = crate::testing::catalog_with_table(dir.path()).await;
        let append = |i| crate::testing::append_one(&ident, &t, i, false);
        PANIC_NEXT_PLAN.store(true, std::sync::atomic::Ordering::SeqCst);
        let e = catalog.commit(append(1)).await.unwrap_err();
        assert!(
            matches!(e, Error::Unavailable { .. }) && e.to_string().contains("outcome is unknown"),
            "{e}"
        );
        // The committer goes on: the next commit lands, and a retry of the failed one too.
        let second = catalog.commit(append(2)).await.unwrap();
        assert!(!second.replayed);
        let retried = catalog.commit(append(1)).await.unwrap();
        assert_eq!(retried.parent_snapshot_id, Some(second.snapshot_id));
    }

    #[tokio::test]
    async fn recovery_rewrites_objects_left_only_in_the_catalog() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!("sqlite://{}", dir.path().join("c.db").display()))
            .await
            .unwrap();
        let root = format!("file://{}", dir.path().join("w").display());
        let warehouse = Warehouse::open(WarehouseConfig::new(&root)).unwrap();
        // A crash after the commit transaction, before the object reached the disk: one
        // object missing, one torn (right size, wrong bytes).
        let missing = format!("{root}/t/metadata/a.avro");
        let torn = format!("{root}/t/metadata/b.avro");
        let (missing_p, torn_p) = (
            warehouse.object(&missing).unwrap(),
            warehouse.object(&torn).unwrap(),
        );
        warehouse
            .put(&torn_p, bytes::Bytes::from_static(b"\0\0\0\0\0"))
            .await
            .unwrap();
        for (path, bytes) in [(&missing, &b"manifest"[..]), (&torn, &b"hello"[..])] {
            sqlx::query("INSERT INTO pending_objects (path, bytes) VALUES ($1, $2)")
                .bind(path)
                .bind(bytes.to_vec())
                .execute(&db.pool)
                .await
                .unwrap();
        }
        assert_eq!(recover_pending(&db, &warehouse).await.unwrap(), 2);
        assert_eq!(&warehouse.get(&missing_p).await.unwrap()[..], b"manifest");
        assert_eq!(&warehouse.get(&torn_p).await.unwrap()[..], b"hello");
        assert!(db.pending_objects().await.unwrap().is_empty());
        assert_eq!(recover_pending(&db, &warehouse).await.unwrap(), 0);
    }
}
