//! Snapshot expiry: forgetting old snapshots and deleting the files only they needed.
//!
//! Contract:
//! - **What is kept** follows Iceberg's rules. Every branch (`main` included) keeps its
//!   head and, walking its ancestry, each ancestor while fewer than `retain_last` are kept
//!   or it is newer than the cutoff; every tag keeps its snapshot; a snapshot no ref
//!   reaches is kept while it is newer than the cutoff. Tags and branches (not `main`)
//!   whose snapshot is older than `history.expire.max-ref-age-ms` are removed first.
//!   Defaults come from the table properties `history.expire.max-snapshot-age-ms` (5 days)
//!   and `history.expire.min-snapshots-to-keep` (1). Of the metadata files Firn wrote for
//!   earlier versions, the newest `write.metadata.previous-versions-max` (100) stay, so a
//!   reader that has just loaded one can still read it.
//! - **Order**: the removal of snapshots is one commit of the table — it takes the table's
//!   row (so it serialises with every other commit, which re-plans on top of it), re-checks
//!   that no snapshot it removes became needed meanwhile (a new tag, a rollback), removes
//!   the snapshot rows, bumps the version and records, **in the same transaction**, every
//!   object that no retained snapshot references (`pending_deletes`). Only after that
//!   transaction commits are objects deleted, and a row is forgotten only once its object
//!   is gone. A run killed at any point leaves either nothing changed or rows that the
//!   next run on the table deletes first, so deletion is resumable and never touches a
//!   file a retained snapshot needs.
//! - **One run per table**: a lease row in the catalog database. A second run while the
//!   lease is held skips the table (reported as skipped, not failed). A lease of a killed
//!   run lapses after [`LEASE_MS`].
//! - Files a new commit adds are never among the deleted ones: a commit's files are its
//!   parent's (a branch head, always kept) or new paths, and a path is committed at most
//!   once per table.
//!
//! - `pending_deletes` also receives the objects of commits that lost a race whose
//!   best-effort delete failed (see `commit.rs`): every expiry run finishes them too.
//!
//! Errors: `NotFound` (table, or an explicitly named snapshot), `FailedPrecondition` (an
//! explicitly named snapshot is the head of a branch or a tag), `InvalidArgument` (bad
//! options), `Unavailable` (outcome unknown: run again — expiry is idempotent).
//! Failures to delete single objects are counted in the report, not errors: their rows
//! stay for the next run.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;
use iceberg::spec::TableMetadata;
use sqlx::Row;
use tracing::{debug, info, warn};

use super::unreferenced::unreferenced;
use crate::db::{
    Doomed, KIND_DATA, KIND_DELETE, KIND_MANIFEST, KIND_MANIFEST_LIST, KIND_METADATA, TableRow,
    record_doomed,
};
use crate::error::{Error, ObjectKind, Result};
use crate::ident::TableIdent;
use crate::model::SnapshotInfo;
use crate::storage::{TableScope, Warehouse};
use crate::table::Shared;
use crate::table::pointer::{self, CommitLog};
use crate::table::refs::RefInfo;

/// How long a maintenance lease lasts without renewal (a killed run's lease lapses).
pub const LEASE_MS: i64 = 60_000;
/// Iceberg's default `history.expire.max-snapshot-age-ms`: 5 days.
pub const DEFAULT_MAX_SNAPSHOT_AGE_MS: i64 = 5 * 24 * 3600 * 1000;
/// Iceberg's default `history.expire.min-snapshots-to-keep`.
pub const DEFAULT_MIN_SNAPSHOTS_TO_KEEP: u32 = 1;
/// Iceberg's default `write.metadata.previous-versions-max`.
pub const DEFAULT_PREVIOUS_METADATA: usize = 100;
/// Size lookups in flight at once (objects whose size the catalog does not know).
const DELETE_CONCURRENCY: usize = 16;
/// Objects deleted in one batch (S3 takes a thousand keys a request), and between lease
/// renewals and forgetting their rows.
const DELETE_BATCH: usize = 1000;
/// How often the attempt is re-planned when a snapshot it removes became needed meanwhile.
const MAX_ATTEMPTS: usize = 20;

/// What to expire. `None` takes the table's property (or Iceberg's default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpireOptions {
    /// Snapshots older than this time (ms since the epoch) may be expired.
    pub older_than_ms: Option<i64>,
    /// Snapshots each branch keeps at least (>= 1).
    pub retain_last: Option<u32>,
    /// Snapshots to expire regardless of age and count (never a ref's head).
    pub snapshot_ids: Vec<i64>,
    /// Report what would be removed; change and delete nothing.
    pub dry_run: bool,
}

/// Objects deleted (or, in a dry run, to delete), by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct FileCounts {
    pub data_files: u64,
    pub delete_files: u64,
    pub manifests: u64,
    pub manifest_lists: u64,
    pub metadata_files: u64,
    /// Bytes of the objects counted (where the size is known).
    pub bytes: u64,
}

impl FileCounts {
    fn add(&mut self, kind: &str, size: i64) {
        match kind {
            KIND_DATA => self.data_files += 1,
            KIND_DELETE => self.delete_files += 1,
            KIND_MANIFEST => self.manifests += 1,
            KIND_MANIFEST_LIST => self.manifest_lists += 1,
            _ => self.metadata_files += 1,
        }
        self.bytes += size.max(0) as u64;
    }

    pub fn total(&self) -> u64 {
        self.data_files
            + self.delete_files
            + self.manifests
            + self.manifest_lists
            + self.metadata_files
    }
}

/// What one run did to one table.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ExpireReport {
    pub table: String,
    /// Another run holds the table's lease; nothing was done.
    pub skipped: bool,
    pub dry_run: bool,
    /// Snapshots removed (or that would be).
    pub expired_snapshots: Vec<i64>,
    /// Tags and branches removed by `history.expire.max-ref-age-ms`.
    pub removed_refs: Vec<String>,
    /// Snapshots the table keeps.
    pub retained_snapshots: u64,
    /// Objects deleted by this run (dry run: that would be).
    pub deleted: FileCounts,
    /// Objects recorded by an earlier, interrupted run that this run deleted (included in
    /// `deleted`).
    pub resumed: u64,
    /// Objects that could not be deleted now; recorded, the next run tries again.
    pub failed_deletes: u64,
}

/// The retention decision for one table state.
#[derive(Debug, Default)]
struct Retention {
    retained: HashSet<i64>,
    expired: Vec<i64>,
    /// Refs to remove, with the snapshot they point at.
    removed_refs: Vec<(String, i64)>,
}

/// Settings resolved from the options and the table's properties.
#[derive(Debug, Clone, Copy)]
struct Policy {
    cutoff_ms: i64,
    retain_last: usize,
    /// Refs older than this (ms since the epoch) are removed; `None`: refs never age out.
    ref_cutoff_ms: Option<i64>,
    /// Previous metadata files kept (`write.metadata.previous-versions-max`).
    keep_metadata: usize,
    /// The time the ages of a ref's own settings count from.
    now_ms: i64,
}

fn policy(opts: &ExpireOptions, meta: &TableMetadata, now_ms: i64) -> Result<Policy> {
    let prop = |k: &str| -> Result<Option<i64>> {
        meta.properties()
            .get(k)
            .map(|v| {
                v.trim().parse::<i64>().map_err(|_| {
                    Error::invalid(
                        "properties",
                        format!("table property {k}={v:?} is not a whole number"),
                    )
                })
            })
            .transpose()
    };
    let cutoff_ms = match opts.older_than_ms {
        Some(ms) => ms,
        None => {
            now_ms
                - prop("history.expire.max-snapshot-age-ms")?.unwrap_or(DEFAULT_MAX_SNAPSHOT_AGE_MS)
        }
    };
    let retain_last = match opts.retain_last {
        Some(0) => {
            return Err(Error::invalid(
                "retain_last",
                "must be at least 1: a branch always keeps its head",
            ));
        }
        Some(n) => n as usize,
        None => prop("history.expire.min-snapshots-to-keep")?
            .map(|n| n.max(1) as usize)
            .unwrap_or(DEFAULT_MIN_SNAPSHOTS_TO_KEEP as usize),
    };
    let ref_cutoff_ms = prop("history.expire.max-ref-age-ms")?.map(|age| now_ms - age);
    let keep_metadata = prop("write.metadata.previous-versions-max")?
        .map_or(DEFAULT_PREVIOUS_METADATA, |n| n.max(0) as usize);
    Ok(Policy {
        cutoff_ms,
        retain_last,
        ref_cutoff_ms,
        keep_metadata,
        now_ms,
    })
}

/// Which snapshots the table keeps under `policy` (pure; see the module contract).
fn decide(
    snapshots: &[SnapshotInfo],
    refs: &[RefInfo],
    policy: Policy,
    explicit: &[i64],
) -> Result<Retention> {
    let by_id: HashMap<i64, &SnapshotInfo> = snapshots.iter().map(|s| (s.snapshot_id, s)).collect();
    let mut out = Retention::default();
    let mut live_refs = Vec::new();
    // A ref's own settings win over the table's and the run's (as in Iceberg).
    for r in refs {
        let ref_cutoff = r
            .retention
            .max_ref_age_ms
            .map(|age| policy.now_ms - age)
            .or(policy.ref_cutoff_ms);
        let old = match (ref_cutoff, by_id.get(&r.snapshot_id)) {
            (Some(cut), Some(s)) => s.timestamp_ms < cut,
            _ => false,
        };
        if r.name != "main" && old {
            out.removed_refs.push((r.name.clone(), r.snapshot_id));
        } else {
            live_refs.push(r);
        }
    }
    let explicit: HashSet<i64> = explicit.iter().copied().collect();
    for id in &explicit {
        if !by_id.contains_key(id) {
            return Err(Error::not_found(ObjectKind::Snapshot, id.to_string()));
        }
        if let Some(r) = live_refs.iter().find(|r| r.snapshot_id == *id) {
            return Err(Error::FailedPrecondition(format!(
                "snapshot {id} is the head of {} {}; drop the {} first",
                r.ref_type, r.name, r.ref_type
            )));
        }
    }
    // Every ancestor of a live ref is "referenced"; those are kept only by the branch rule.
    let mut referenced = HashSet::new();
    for r in &live_refs {
        let retain_last = r
            .retention
            .min_snapshots_to_keep
            .map_or(policy.retain_last, |n| n.max(1) as usize);
        let cutoff_ms = r
            .retention
            .max_snapshot_age_ms
            .map_or(policy.cutoff_ms, |age| policy.now_ms - age);
        let mut kept = 0usize;
        let mut cur = by_id.get(&r.snapshot_id).copied();
        let mut keeping = true;
        while let Some(s) = cur {
            if !referenced.insert(s.snapshot_id) && !keeping {
                break;
            }
            if keeping {
                let keep = s.snapshot_id == r.snapshot_id
                    || (r.ref_type == "branch"
                        && (kept < retain_last || s.timestamp_ms >= cutoff_ms));
                if keep && !explicit.contains(&s.snapshot_id) {
                    out.retained.insert(s.snapshot_id);
                    kept += 1;
                } else if !keep {
                    keeping = false;
                } else {
                    kept += 1;
                }
            }
            cur = s.parent_snapshot_id.and_then(|p| by_id.get(&p).copied());
        }
    }
    for s in snapshots {
        let unreferenced_young = !referenced.contains(&s.snapshot_id)
            && s.timestamp_ms >= policy.cutoff_ms
            && !explicit.contains(&s.snapshot_id);
        if unreferenced_young {
            out.retained.insert(s.snapshot_id);
        }
        if !out.retained.contains(&s.snapshot_id) {
            out.expired.push(s.snapshot_id);
        }
    }
    Ok(out)
}

/// Materialised metadata files to delete: all but the newest `keep_metadata` previous ones
/// (a reader may have just loaded one), and none newer than the cutoff.
async fn old_metadata_files(
    shared: &Shared,
    row: &TableRow,
    policy: Policy,
) -> Result<Vec<Doomed>> {
    let old_metadata = sqlx::query(
        "SELECT path FROM metadata_files WHERE table_id = $1 AND created_at_ms < $2 AND path <> $3 \
         ORDER BY version DESC, created_at_ms DESC",
    )
    .bind(row.table_id)
    .bind(policy.cutoff_ms)
    .bind(&row.metadata_location)
    .fetch_all(&shared.db.pool)
    .await?;
    old_metadata
        .iter()
        .skip(policy.keep_metadata)
        .map(|r| {
            Ok(Doomed {
                path: r.try_get(0)?,
                kind: KIND_METADATA,
                size: -1,
            })
        })
        .collect()
}

/// Expires the snapshots of one table; see the module contract.
pub(crate) async fn expire(
    shared: &Arc<Shared>,
    ident: &TableIdent,
    opts: &ExpireOptions,
    by: &crate::model::Actor,
) -> Result<ExpireReport> {
    let row = shared.db.table(ident).await?;
    // Everything this run may delete is in the store first, so no write can follow a delete.
    shared.publish_table(&row.location).await?;
    let mut report = ExpireReport {
        table: ident.to_string(),
        dry_run: opts.dry_run,
        ..Default::default()
    };
    if opts.dry_run {
        let (_, retention, doomed) = plan_expiry(shared, &row, opts).await?;
        fill_decision(&mut report, &retention);
        let warehouse = &*shared.warehouse_of(&row.location).await?;
        let heads: Vec<_> = doomed
            .iter()
            .map(|d| {
                let (kind, size, path) = (d.kind, d.size, d.path.clone());
                async move {
                    let size = match (size, warehouse.object(&path)) {
                        (n, _) if n >= 0 => n,
                        (_, Ok(p)) => warehouse.head(&p).await.map_or(-1, |n| n as i64),
                        (_, Err(_)) => -1,
                    };
                    (kind, size)
                }
            })
            .collect();
        let sized: Vec<(&str, i64)> = futures::stream::iter(heads)
            .buffer_unordered(DELETE_CONCURRENCY)
            .collect()
            .await;
        for (kind, size) in sized {
            report.deleted.add(kind, size);
        }
        return Ok(report);
    }
    let Some(lease) = LeaseGuard::take(shared, row.table_id).await? else {
        report.skipped = true;
        info!(table = %ident, "expiry skipped: another run holds the table's lease");
        return Ok(report);
    };
    let result = expire_leased(shared, row.table_id, ident, opts, by, &lease, &mut report).await;
    lease.release().await;
    result.map(|()| report)
}

/// A table's maintenance lease (one expiry or orphan removal at a time, across replicas).
/// Released when the run ends — also when its future is dropped midway (a cancelled
/// request), so only a killed process leaves a lease, which lapses after [`LEASE_MS`].
pub(crate) struct LeaseGuard {
    shared: Arc<Shared>,
    table_id: i64,
    pub(crate) holder: String,
}

impl LeaseGuard {
    /// Takes the lease; `None` when another run holds it.
    pub(crate) async fn take(shared: &Arc<Shared>, table_id: i64) -> Result<Option<Self>> {
        // The guard exists before the lease is taken: a run cancelled right after the lease
        // row was written still releases it (releasing a lease not held does nothing).
        let guard = LeaseGuard {
            shared: shared.clone(),
            table_id,
            holder: shared.env.ids.uuid().to_string(),
        };
        Ok(acquire_lease(shared, table_id, &guard.holder)
            .await?
            .then_some(guard))
    }

    /// Extends the lease; an error when it was lost (the run must stop).
    pub(crate) async fn renew(&self) -> Result<()> {
        if renew_lease(&self.shared, self.table_id, &self.holder).await? {
            Ok(())
        } else {
            Err(Error::Unavailable {
                what: "maintenance lease",
                source: "the table's maintenance lease was lost mid-run; run again".into(),
            })
        }
    }

    pub(crate) async fn release(mut self) {
        let holder = std::mem::take(&mut self.holder);
        release_lease(&self.shared, self.table_id, &holder).await;
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if self.holder.is_empty() {
            return; // released
        }
        let (shared, table_id, holder) = (
            self.shared.clone(),
            self.table_id,
            std::mem::take(&mut self.holder),
        );
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { release_lease(&shared, table_id, &holder).await });
        }
    }
}

fn fill_decision(report: &mut ExpireReport, retention: &Retention) {
    report.expired_snapshots = retention.expired.clone();
    report.removed_refs = retention
        .removed_refs
        .iter()
        .map(|(n, _)| n.clone())
        .collect();
    report.retained_snapshots = retention.retained.len() as u64;
}

/// The decision for the table as of `row`: policy, what is kept, what would be deleted.
async fn plan_expiry(
    shared: &Shared,
    row: &TableRow,
    opts: &ExpireOptions,
) -> Result<(Policy, Retention, Vec<Doomed>)> {
    let (meta, _) = crate::table::parse_base(row)?;
    let policy = policy(opts, &meta, shared.env.clock.now_ms())?;
    let snapshots = visible_snapshots(shared, row).await?;
    let refs = crate::table::refs::refs(&shared.db, row).await?;
    let retention = decide(&snapshots, &refs, policy, &opts.snapshot_ids)?;
    let warehouse = shared.warehouse_of(&row.location).await?;
    let expired: HashSet<i64> = retention.expired.iter().copied().collect();
    // `refs` still holds the refs this run removes: with any besides main, the history is
    // planned by reachability.
    let (mut doomed, walk) = unreferenced(
        shared,
        row.table_id,
        &warehouse,
        &meta,
        &snapshots,
        &refs,
        &expired,
        !opts.snapshot_ids.is_empty(),
        None,
    )
    .await?;
    debug!(table = %row.ident, ?walk, objects = doomed.len(), "expiry planned");
    doomed.extend(old_metadata_files(shared, row, policy).await?);
    // Objects outside the table (a registered table may reference some) are never deleted.
    let scope = shared.scope(&warehouse, row).await?;
    doomed.retain(|d| {
        let owned = warehouse.object(&d.path).is_ok_and(|p| scope.owns(&p));
        if !owned {
            debug!(path = d.path, "not expiring an object outside the table");
        }
        owned
    });
    Ok((policy, retention, doomed))
}

async fn visible_snapshots(shared: &Shared, row: &TableRow) -> Result<Vec<SnapshotInfo>> {
    let mut all = shared.db.snapshots(row.table_id, -1, i64::MAX).await?;
    all.retain(|s| s.sequence_number <= row.last_sequence_number);
    Ok(all)
}

async fn expire_leased(
    shared: &Shared,
    table_id: i64,
    ident: &TableIdent,
    opts: &ExpireOptions,
    by: &crate::model::Actor,
    lease: &LeaseGuard,
    report: &mut ExpireReport,
) -> Result<()> {
    // First finish what an interrupted run recorded.
    let row = shared.db.table(ident).await?;
    let warehouse = shared.warehouse_of(&row.location).await?;
    let scope = shared.scope(&warehouse, &row).await?;
    let (done, failed) = delete_recorded(
        shared,
        &warehouse,
        table_id,
        &scope,
        lease,
        &mut report.deleted,
    )
    .await?;
    report.resumed = done;
    report.failed_deletes += failed;
    for _ in 0..MAX_ATTEMPTS {
        let row = shared.db.table(ident).await?;
        let (policy, retention, doomed) = plan_expiry(shared, &row, opts).await?;
        if !record(shared, &row, &retention, &doomed, policy, opts, by).await? {
            continue;
        }
        fill_decision(report, &retention);
        let (_, failed) = delete_recorded(
            shared,
            &warehouse,
            table_id,
            &scope,
            lease,
            &mut report.deleted,
        )
        .await?;
        report.failed_deletes += failed;
        info!(
            table = %ident,
            expired = report.expired_snapshots.len(),
            deleted = report.deleted.total(),
            bytes = report.deleted.bytes,
            failed = report.failed_deletes,
            "snapshots expired"
        );
        return Ok(());
    }
    Err(Error::Unavailable {
        what: "table",
        source: format!("snapshots of {ident} kept becoming needed while expiring; run again")
            .into(),
    })
}

/// The expiry commit: one transaction that takes the table row, re-checks the decision on
/// the state it locked, removes the snapshots and refs, and records the objects to delete.
/// `false`: the decision no longer holds (re-plan).
async fn record(
    shared: &Shared,
    planned: &TableRow,
    retention: &Retention,
    doomed: &[Doomed],
    policy: Policy,
    opts: &ExpireOptions,
    by: &crate::model::Actor,
) -> Result<bool> {
    let table_id = planned.table_id;
    let changes_table = !retention.expired.is_empty() || !retention.removed_refs.is_empty();
    if !changes_table && doomed.is_empty() {
        return Ok(true);
    }
    let now = shared.env.clock.now_ms();
    let mut tx = shared.db.pool.begin().await?;
    if changes_table {
        // Taking the row first serialises with every other commit of the table (SQLite:
        // the write lock; PostgreSQL: the row lock) for the re-check below.
        let (locked, mut moved) =
            pointer::lock(&mut tx, table_id, &planned.ident.to_string(), now).await?;
        let (version, current, last_seq) = (
            locked.version,
            locked.current_snapshot_id,
            locked.last_sequence_number,
        );
        let fresh_row = TableRow {
            version,
            current_snapshot_id: current,
            last_sequence_number: last_seq,
            ..planned.clone()
        };
        let snapshots = snapshots_in(moved.conn(), &fresh_row).await?;
        let refs = crate::table::refs::refs_on(moved.conn(), &fresh_row).await?;
        let fresh = decide(&snapshots, &refs, policy, &opts.snapshot_ids)?;
        let still_expired: HashSet<i64> = fresh.expired.iter().copied().collect();
        let refs_now: HashMap<&str, i64> = refs
            .iter()
            .map(|r| (r.name.as_str(), r.snapshot_id))
            .collect();
        let holds = retention
            .expired
            .iter()
            .all(|id| still_expired.contains(id))
            && retention
                .removed_refs
                .iter()
                .all(|(n, id)| refs_now.get(n.as_str()) == Some(id));
        if !holds {
            return Ok(false);
        }
        moved.delete_snapshots(&retention.expired).await?;
        for (name, _) in &retention.removed_refs {
            moved.delete_refs(Some(name)).await?;
        }
        if let Some(id) = current {
            let seq = snapshots
                .iter()
                .find(|s| s.snapshot_id == id)
                .map(|s| s.sequence_number)
                .unwrap_or(last_seq);
            let commit_id = shared.env.ids.uuid().to_string();
            moved
                .insert_commit_log(&CommitLog {
                    version,
                    commit_id: &commit_id,
                    snapshot_id: id,
                    sequence_number: seq,
                    parent_snapshot_id: Some(id),
                    operation: "expire-snapshots",
                    by,
                    committed_at_ms: now,
                    request_digest: None,
                })
                .await?;
        }
    }
    record_doomed(&mut tx, table_id, doomed, now).await?;
    // Metadata files to delete are no longer the table's: their record goes with them.
    let metadata: Vec<&str> = doomed
        .iter()
        .filter(|d| d.kind == KIND_METADATA)
        .map(|d| d.path.as_str())
        .collect();
    crate::db::forget_paths(&mut tx, "metadata_files", table_id, &metadata).await?;
    pointer::commit(tx, &format!("expiring snapshots of {}", planned.ident)).await?;
    Ok(true)
}

async fn snapshots_in(tx: &mut sqlx::AnyConnection, row: &TableRow) -> Result<Vec<SnapshotInfo>> {
    let rows = sqlx::query(
        "SELECT snapshot_id, parent_snapshot_id, sequence_number, timestamp_ms FROM snapshots \
         WHERE table_id = $1 AND sequence_number <= $2",
    )
    .bind(row.table_id)
    .bind(row.last_sequence_number)
    .fetch_all(&mut *tx)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(SnapshotInfo {
                snapshot_id: r.try_get(0)?,
                parent_snapshot_id: r.try_get(1)?,
                sequence_number: r.try_get(2)?,
                timestamp_ms: r.try_get(3)?,
                operation: String::new(),
                summary: HashMap::new(),
                manifest_list: String::new(),
                schema_id: 0,
                commit_id: String::new(),
            })
        })
        .collect()
}

/// Deletes the recorded objects of a table, forgetting each row once its object is gone.
/// Returns (deleted, failed).
async fn delete_recorded(
    shared: &Shared,
    warehouse: &Warehouse,
    table_id: i64,
    scope: &TableScope,
    lease: &LeaseGuard,
    counts: &mut FileCounts,
) -> Result<(u64, u64)> {
    let rows = sqlx::query(
        "SELECT path, kind, size_bytes FROM pending_deletes WHERE table_id = $1 ORDER BY path",
    )
    .bind(table_id)
    .fetch_all(&shared.db.pool)
    .await?;
    let mut todo = Vec::with_capacity(rows.len());
    for r in &rows {
        let kind: String = r.try_get(1)?;
        todo.push((r.try_get::<String, _>(0)?, kind, r.try_get::<i64, _>(2)?));
    }
    let (mut done, mut failed) = (0u64, 0u64);
    for batch in todo.chunks(DELETE_BATCH) {
        let mut gone = Vec::new();
        let mut owned = Vec::with_capacity(batch.len());
        for (path, kind, size) in batch {
            match warehouse.object(path).ok().and_then(|p| scope.own(&p)) {
                Some(o) => owned.push((o, path, kind, *size)),
                None => {
                    // Recorded before scopes were checked: forgotten, never deleted.
                    warn!(path, "not deleting an object outside the table");
                    gone.push(path.clone());
                }
            }
        }
        // Unknown sizes are read first; an object that is gone already (a run killed after
        // deleting it) is not counted again.
        let heads: Vec<_> = owned
            .iter()
            .map(|(o, _, _, size)| async move {
                match *size {
                    n if n >= 0 => Some(n),
                    _ => match warehouse.head(o.path()).await {
                        Ok(n) => Some(n as i64),
                        Err(Error::NotFound { .. }) => None,
                        Err(_) => Some(-1),
                    },
                }
            })
            .collect();
        let sizes: Vec<Option<i64>> = futures::stream::iter(heads)
            .buffered(DELETE_CONCURRENCY)
            .collect()
            .await;
        let paths: Vec<_> = owned.iter().map(|(o, ..)| o.clone()).collect();
        let results = warehouse.delete_many(&paths).await;
        for (((_, path, kind, _), size), r) in owned.iter().zip(sizes).zip(results) {
            match r {
                Ok(()) => {
                    if let Some(size) = size {
                        counts.add(kind, size);
                    }
                    gone.push(path.to_string());
                }
                Err(e) => {
                    warn!(path, error = %e, "could not delete; the next expiry run retries");
                    failed += 1;
                }
            }
        }
        done += gone.len() as u64;
        shared
            .db
            .forget_paths("pending_deletes", table_id, &gone)
            .await?;
        lease.renew().await?;
    }
    Ok((done, failed))
}

async fn acquire_lease(shared: &Shared, table_id: i64, holder: &str) -> Result<bool> {
    let now = shared.env.clock.now_ms();
    let n = sqlx::query(
        "INSERT INTO maintenance_leases (table_id, holder, expires_at_ms) VALUES ($1, $2, $3) \
         ON CONFLICT (table_id) DO UPDATE SET holder = excluded.holder, \
         expires_at_ms = excluded.expires_at_ms WHERE maintenance_leases.expires_at_ms < $4",
    )
    .bind(table_id)
    .bind(holder)
    .bind(now + LEASE_MS)
    .bind(now)
    .execute(&shared.db.pool)
    .await?
    .rows_affected();
    Ok(n == 1)
}

async fn renew_lease(shared: &Shared, table_id: i64, holder: &str) -> Result<bool> {
    let now = shared.env.clock.now_ms();
    let n = sqlx::query(
        "UPDATE maintenance_leases SET expires_at_ms = $1 WHERE table_id = $2 AND holder = $3",
    )
    .bind(now + LEASE_MS)
    .bind(table_id)
    .bind(holder)
    .execute(&shared.db.pool)
    .await?
    .rows_affected();
    Ok(n == 1)
}

async fn release_lease(shared: &Shared, table_id: i64, holder: &str) {
    let r = sqlx::query("DELETE FROM maintenance_leases WHERE table_id = $1 AND holder = $2")
        .bind(table_id)
        .bind(holder)
        .execute(&shared.db.pool)
        .await;
    if let Err(e) = r {
        warn!(table_id, error = %e, "could not release the maintenance lease; it lapses");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(id: i64, parent: Option<i64>, ts: i64) -> SnapshotInfo {
        SnapshotInfo {
            snapshot_id: id,
            parent_snapshot_id: parent,
            sequence_number: id,
            timestamp_ms: ts,
            operation: "append".into(),
            summary: HashMap::new(),
            manifest_list: String::new(),
            schema_id: 0,
            commit_id: String::new(),
        }
    }

    fn r(name: &str, id: i64, kind: &str) -> RefInfo {
        RefInfo {
            name: name.into(),
            snapshot_id: id,
            ref_type: kind.into(),
            retention: Default::default(),
        }
    }

    fn policy(cutoff_ms: i64, retain_last: usize) -> Policy {
        Policy {
            cutoff_ms,
            retain_last,
            ref_cutoff_ms: None,
            keep_metadata: 0,
            now_ms: 1000,
        }
    }

    fn sorted(mut v: Vec<i64>) -> Vec<i64> {
        v.sort();
        v
    }

    #[test]
    fn branches_keep_count_or_age_tags_keep_their_snapshot() {
        // 1 <- 2 <- 3 <- 4 (main); 2 <- 5 (branch b); tag t on 1; 6 unreferenced.
        let snaps = [
            snap(1, None, 10),
            snap(2, Some(1), 20),
            snap(3, Some(2), 30),
            snap(4, Some(3), 40),
            snap(5, Some(2), 50),
            snap(6, Some(1), 60),
        ];
        let refs = [
            r("main", 4, "branch"),
            r("b", 5, "branch"),
            r("t", 1, "tag"),
        ];
        // Everything old, keep 2 per branch: main keeps 4,3; b keeps 5,2; t keeps 1.
        let d = decide(&snaps, &refs, policy(1000, 2), &[]).unwrap();
        assert_eq!(sorted(d.expired), vec![6]);
        // Keep 1: main 4, b 5, t 1; 2, 3 and 6 go.
        let d = decide(&snaps, &refs, policy(1000, 1), &[]).unwrap();
        assert_eq!(sorted(d.expired), vec![2, 3, 6]);
        // Young snapshots stay whatever the count: cutoff 25 keeps 3 and 4, 5, unreferenced 6.
        let d = decide(&snaps, &refs, policy(25, 1), &[]).unwrap();
        assert_eq!(sorted(d.expired), vec![2]);
        // An explicit id goes regardless of age, but never a ref's head.
        let d = decide(&snaps, &refs, policy(0, 1), &[3]).unwrap();
        assert_eq!(sorted(d.expired), vec![3]);
        assert!(matches!(
            decide(&snaps, &refs, policy(0, 1), &[5]),
            Err(Error::FailedPrecondition(_))
        ));
        assert!(matches!(
            decide(&snaps, &refs, policy(0, 1), &[99]),
            Err(Error::NotFound { .. })
        ));
    }

    #[test]
    fn old_refs_age_out_but_main_never() {
        let snaps = [
            snap(1, None, 10),
            snap(2, Some(1), 20),
            snap(3, Some(2), 30),
        ];
        let refs = [
            r("main", 1, "branch"),
            r("old", 2, "tag"),
            r("new", 3, "tag"),
        ];
        let p = Policy {
            cutoff_ms: 1000,
            retain_last: 1,
            ref_cutoff_ms: Some(25),
            keep_metadata: 0,
            now_ms: 1000,
        };
        let d = decide(&snaps, &refs, p, &[]).unwrap();
        assert_eq!(
            d.removed_refs,
            vec![("old".to_string(), 2)],
            "main is older than the cutoff too, and stays"
        );
        assert_eq!(sorted(d.expired), vec![2]);
    }

    #[test]
    fn a_refs_own_settings_win() {
        // 1 <- 2 <- 3 <- 4 (main, keeps 3 by its own setting); 1 <- 5 (branch b, keeps
        // what is younger than 950 ms); tag t on 2 ages out after 900 ms. Now: 1000 ms.
        let snaps = [
            snap(1, None, 55),
            snap(2, Some(1), 20),
            snap(3, Some(2), 30),
            snap(4, Some(3), 40),
            snap(5, Some(1), 60),
        ];
        let mut main = r("main", 4, "branch");
        main.retention.min_snapshots_to_keep = Some(3);
        let mut b = r("b", 5, "branch");
        let mut t = r("t", 2, "tag");
        t.retention.max_ref_age_ms = Some(900);
        // Without b's own setting, 1 (older than the run's cutoff) goes.
        let d = decide(
            &snaps,
            &[main.clone(), b.clone(), t.clone()],
            policy(1000, 1),
            &[],
        );
        assert_eq!(sorted(d.unwrap().expired), vec![1]);
        // With it, 1 (55 ms, younger than 1000 - 950) stays; main keeps 4, 3, 2.
        b.retention.max_snapshot_age_ms = Some(950);
        let d = decide(&snaps, &[main, b, t], policy(1000, 1), &[]).unwrap();
        assert_eq!(d.removed_refs, vec![("t".to_string(), 2)]);
        assert!(d.expired.is_empty(), "{:?}", d.expired);
    }
}
