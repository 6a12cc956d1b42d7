//! Orphan files: objects under a table's location that no snapshot references — data
//! files of writes that never committed, and (with the listing sweep) anything else.
//!
//! Contract:
//! - **Source of truth is the catalog.** Writers get their data file paths from Firn
//!   ([`reserve`]), which records each path before handing it out. A recorded path older
//!   than the grace period that no commit ever added is an orphan: its object (if the
//!   writer wrote it) is deleted and the record dropped. No listing is needed for that.
//! - **The listing sweep is optional and can only find garbage.** It deletes a listed
//!   object only if it is older than the grace period and not referenced by any snapshot
//!   the catalog holds (manifest lists, manifests, their live files), nor by a recorded
//!   metadata file, a pending deletion or a younger write intent. What decides that an
//!   object is referenced is read from the catalog and the manifests, never from the
//!   listing, so a short or stale listing leaves garbage behind; it cannot delete live data.
//! - The grace period must exceed the longest time a writer takes from getting a path to
//!   committing it (Iceberg's rule for orphan removal as well); the default is 3 days.
//! - Runs take the table's maintenance lease (shared with expiry): a second run skips.
//!
//! Errors: `NotFound` (table), `InvalidArgument` (options), `Unavailable` (outcome
//! unknown: run again). Objects that could not be deleted are counted, not errors.

use std::collections::HashSet;
use std::sync::Arc;

use futures::StreamExt;
use sqlx::Row;
use tracing::{info, warn};

use crate::db::insert_rows;
use crate::error::{Error, Result};
use crate::ident::TableIdent;
use crate::maintenance::expire::LeaseGuard;
use crate::table::Shared;

/// Default grace period: objects younger than this are never orphans.
pub const DEFAULT_ORPHAN_GRACE_MS: i64 = 3 * 24 * 3600 * 1000;
/// Most paths one reservation hands out.
pub const MAX_RESERVED_PATHS: usize = 10_000;

/// What to remove.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrphanOptions {
    /// Only objects older than this (ms since the epoch). Default: now minus 3 days.
    pub older_than_ms: Option<i64>,
    /// Report what would be deleted; delete nothing.
    pub dry_run: bool,
    /// Also list the table's location to find garbage no record names.
    pub sweep_listing: bool,
}

/// What one run found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct OrphanReport {
    pub table: String,
    pub skipped: bool,
    pub dry_run: bool,
    /// Recorded write paths old enough to judge.
    pub intents_checked: u64,
    /// Orphans found (deleted unless a dry run), as URIs.
    pub orphans: Vec<String>,
    pub deleted_files: u64,
    pub bytes_freed: u64,
    /// Objects the listing sweep saw (0 without the sweep).
    pub listed_objects: u64,
    pub failed_deletes: u64,
}

/// Hands out one fresh data file path per entry of `partition_paths` (the partition's
/// directory below `data/`, empty for an unpartitioned file), recording each before
/// returning it.
pub(crate) async fn reserve(
    shared: &Shared,
    ident: &TableIdent,
    partition_paths: &[String],
) -> Result<Vec<String>> {
    if partition_paths.len() > MAX_RESERVED_PATHS {
        return Err(Error::invalid(
            "partition_paths",
            format!(
                "{} paths asked for; at most {MAX_RESERVED_PATHS} at once",
                partition_paths.len()
            ),
        ));
    }
    let row = shared.db.table(ident).await?;
    let warehouse = &*shared.warehouse_of(&row.location).await?;
    let base = format!("{}/data", row.location.trim_end_matches('/'));
    let mut paths = Vec::with_capacity(partition_paths.len());
    for p in partition_paths {
        let name = format!("{}.parquet", shared.env.ids.uuid());
        let uri = if p.is_empty() {
            format!("{base}/{name}")
        } else {
            format!("{base}/{p}/{name}")
        };
        // The warehouse's own path check refuses `.`, `..` (also percent-encoded), `\`,
        // control characters and empty segments (so a leading or trailing `/` too).
        if warehouse.object(&uri).is_err() {
            return Err(Error::invalid(
                "partition_paths",
                format!("{p:?} is not a relative partition directory like \"ts_day=2026-11-22\""),
            ));
        }
        paths.push(uri);
    }
    let now = shared.env.clock.now_ms();
    let mut tx = shared.db.pool.begin().await?;
    insert_rows(
        &mut tx,
        "INSERT INTO write_intents (table_id, path, created_at_ms)",
        "",
        3,
        &paths,
        |q, p| q.bind(row.table_id).bind(p).bind(now),
    )
    .await?;
    tx.commit().await?;
    Ok(paths)
}

/// Finds and deletes the table's orphans; see the module contract.
pub(crate) async fn remove_orphans(
    shared: &Arc<Shared>,
    ident: &TableIdent,
    opts: &OrphanOptions,
) -> Result<OrphanReport> {
    let row = shared.db.table(ident).await?;
    // Committed objects not yet written are not orphans; written, they are referenced.
    shared.publish_table(&row.location).await?;
    let now = shared.env.clock.now_ms();
    let cutoff = opts.older_than_ms.unwrap_or(now - DEFAULT_ORPHAN_GRACE_MS);
    let mut report = OrphanReport {
        table: ident.to_string(),
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let lease = if opts.dry_run {
        None
    } else {
        match LeaseGuard::take(shared, row.table_id).await? {
            Some(l) => Some(l),
            None => {
                report.skipped = true;
                return Ok(report);
            }
        }
    };
    let result = run(shared, &row, cutoff, opts, &mut report).await;
    if let Some(l) = lease {
        l.release().await;
    }
    result?;
    info!(
        table = %ident,
        orphans = report.orphans.len(),
        deleted = report.deleted_files,
        bytes = report.bytes_freed,
        "orphan files removed"
    );
    Ok(report)
}

async fn run(
    shared: &Shared,
    row: &crate::db::TableRow,
    cutoff: i64,
    opts: &OrphanOptions,
    report: &mut OrphanReport,
) -> Result<()> {
    let table_id = row.table_id;
    let warehouse = &*shared.warehouse_of(&row.location).await?;
    let scope = shared.scope(warehouse, row).await?;
    // 1. Recorded write paths old enough to judge: committed ones are expiry's business
    //    (their record is dropped); the others are orphans.
    let rows = sqlx::query(
        "SELECT path FROM write_intents WHERE table_id = $1 AND created_at_ms < $2 ORDER BY path",
    )
    .bind(table_id)
    .bind(cutoff)
    .fetch_all(&shared.db.pool)
    .await?;
    let old: Vec<String> = rows
        .iter()
        .map(|r| r.try_get(0))
        .collect::<std::result::Result<_, _>>()?;
    report.intents_checked = old.len() as u64;
    let mut settled = Vec::new();
    for chunk in old.chunks(400) {
        let committed = shared
            .db
            .known_paths(&[(table_id, chunk.iter().map(String::as_str).collect())])
            .await?;
        for p in chunk {
            if committed.contains(&(table_id, p.clone())) {
                settled.push(p.clone());
            } else {
                report.orphans.push(p.clone());
            }
        }
    }
    // 2. The optional sweep: listed objects nothing references.
    if opts.sweep_listing {
        let referenced: HashSet<String> = referenced(shared, row)
            .await?
            .iter()
            .map(|p| p.key().to_string())
            .collect();
        let listed = warehouse.list(scope.location()).await?;
        report.listed_objects = listed.len() as u64;
        let recorded: HashSet<&String> = report.orphans.iter().collect();
        let mut found = Vec::new();
        for m in listed {
            let path = m.location.to_string();
            let old_enough = m.last_modified.timestamp_millis() < cutoff;
            if old_enough && !referenced.contains(&path) {
                let Ok(object) = warehouse.object_of_key(&m.location) else {
                    warn!(
                        key = path,
                        "skipping a listed object whose name Firn would refuse"
                    );
                    continue;
                };
                if !recorded.contains(&object.uri().to_string()) {
                    found.push(object.uri().to_string());
                }
            }
        }
        report.orphans.extend(found);
    }
    // Only what the table owns is an orphan of it (a reserved path always is).
    report.orphans.retain(|uri| {
        let owned = warehouse.object(uri).is_ok_and(|p| scope.owns(&p));
        if !owned {
            warn!(uri, "not removing an object outside the table");
        }
        owned
    });
    if opts.dry_run {
        // What the real run would count: the orphans that exist, and their sizes.
        let sizes: Vec<Option<u64>> = futures::stream::iter(report.orphans.clone())
            .map(|uri| async move {
                let p = warehouse.object(&uri).ok()?;
                warehouse.head(&p).await.ok()
            })
            .buffer_unordered(16)
            .collect()
            .await;
        for size in sizes.into_iter().flatten() {
            report.deleted_files += 1;
            report.bytes_freed += size;
        }
        return Ok(());
    }
    let scope = &scope;
    // 3. Delete, then forget the records of what is gone (and of settled paths).
    let results: Vec<(String, Option<u64>, Result<()>)> =
        futures::stream::iter(report.orphans.clone())
            .map(|uri| async move {
                let owned = match warehouse.object(&uri).map(|p| scope.own(&p)) {
                    Ok(Some(o)) => o,
                    _ => return (uri, None, Ok(())),
                };
                // A reserved path the writer never used has no object: not counted.
                let size = warehouse.head(owned.path()).await.ok();
                let r = warehouse.delete(&owned).await;
                (uri, size, r)
            })
            .buffer_unordered(16)
            .collect()
            .await;
    let mut gone = settled;
    for (uri, size, r) in results {
        match r {
            Ok(()) => {
                if let Some(size) = size {
                    report.deleted_files += 1;
                    report.bytes_freed += size;
                }
                gone.push(uri);
            }
            Err(e) => {
                warn!(uri, error = %e, "could not delete an orphan; the next run retries");
                report.failed_deletes += 1;
            }
        }
    }
    shared
        .db
        .forget_paths("write_intents", table_id, &gone)
        .await
}

/// Store paths of everything the catalog references for the table: every snapshot's
/// manifest list, manifests and live files, recorded metadata files, pending deletions
/// (expiry's) and write intents (young ones are still being written).
async fn referenced(
    shared: &Shared,
    row: &crate::db::TableRow,
) -> Result<Vec<crate::storage::ObjectPath>> {
    let (meta, _) = crate::table::parse_base(row)?;
    let warehouse = &*shared.warehouse_of(&row.location).await?;
    let mut uris: HashSet<String> = HashSet::new();
    uris.insert(row.metadata_location.clone());
    for s in shared.db.snapshots(row.table_id, -1, i64::MAX).await? {
        let (list, _) = shared.manifests.list(warehouse, &s.manifest_list).await?;
        uris.insert(s.manifest_list);
        for m in list.entries() {
            if uris.insert(m.manifest_path.clone()) {
                uris.extend(shared.manifests.live_paths(warehouse, &meta, m).await?);
            }
        }
    }
    for q in [
        "SELECT path FROM metadata_files WHERE table_id = $1",
        "SELECT path FROM pending_deletes WHERE table_id = $1",
        "SELECT path FROM write_intents WHERE table_id = $1",
    ] {
        for r in sqlx::query(q)
            .bind(row.table_id)
            .fetch_all(&shared.db.pool)
            .await?
        {
            uris.insert(r.try_get(0)?);
        }
    }
    // A referenced name Firn would refuse is never deleted, so it need not be listed here.
    Ok(uris
        .into_iter()
        .filter_map(|u| warehouse.object(&u).ok())
        .collect())
}

/// Drops a table and deletes every object the catalog knows it referenced (REST
/// `purgeRequested`): the catalog row goes first, so no reader is handed a table whose files
/// are disappearing; deletion after that is best effort (what fails stays as garbage).
/// Returns the number of objects deleted.
pub(crate) async fn drop_and_purge(shared: &Shared, ident: &TableIdent) -> Result<u64> {
    let row = shared.db.table(ident).await?;
    // Written first, so a late write cannot outlive the purge.
    shared.publish_table(&row.location).await?;
    let warehouse = &*shared.warehouse_of(&row.location).await?;
    let scope = shared.scope(warehouse, &row).await?;
    // Only what the table owns goes: a registered table may reference other tables' files.
    let objects: Vec<crate::storage::Owned> = referenced(shared, &row)
        .await?
        .iter()
        .filter_map(|object| {
            let owned = scope.own(object);
            if owned.is_none() {
                warn!(path = %object, "purge keeps an object outside the table");
            }
            owned
        })
        .collect();
    // Nothing may write the purged objects again (start-up recovery would, from these).
    let pending = shared.db.pending_paths_under(&row.location).await?;
    shared.db.clear_pending_objects(&pending).await?;
    shared.db.drop_table(ident).await?;
    let deleted = futures::stream::iter(objects)
        .map(|owned| async move {
            let existed = warehouse.head(owned.path()).await.is_ok();
            match warehouse.delete(&owned).await {
                Ok(()) => u64::from(existed),
                Err(e) => {
                    warn!(path = owned.uri(), error = %e, "could not delete a purged table's file");
                    0
                }
            }
        })
        .buffer_unordered(16)
        .fold(0u64, |n, d| async move { n + d })
        .await;
    info!(table = %ident, deleted, "dropped table and purged its files");
    Ok(deleted)
}
