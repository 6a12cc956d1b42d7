//! Metadata commits: Iceberg's requirements + updates, as the REST protocol sends them
//! (clients such as Spark and PyIceberg write their own manifests and manifest list and ask
//! the catalog to add the snapshot and move a ref).
//!
//! Contract: the requirements are checked against the table's current metadata and the
//! updates applied with iceberg-rust's metadata builder; the result is stored with ONE
//! compare-and-swap of the table version in ONE database transaction, with the new
//! snapshot, snapshot-log, ref and commit-log rows — the same pointer and version gRPC
//! commits swap, so the two kinds of writers serialise. If the swap loses a race the
//! requirements are checked again on the new state (they are what the client's work
//! depends on); a requirement that does not hold is `RequirementFailed` and nothing is
//! applied. An update the builder refuses is `InvalidArgument`. A failure of the
//! transaction's commit is `Unavailable` (outcome unknown).

use std::collections::HashSet;

use iceberg::spec::{ManifestContentType, ManifestStatus, TableMetadata, TableMetadataBuilder};
use iceberg::{TableRequirement, TableUpdate};

use crate::commit::files::file_stats;
use crate::db::TableRow;
use crate::error::{Error, Result};
use crate::ident::TableIdent;
use crate::model::NewFile;
use crate::table::Shared;
use crate::table::pointer::{self, CommitLog, Expected, Target};
use crate::table::{history, metadata};

/// How often a metadata commit is re-checked after losing the version swap.
const MAX_ATTEMPTS: usize = 20;

/// One table's change: its requirements and updates.
pub struct TableChange {
    pub ident: TableIdent,
    pub requirements: Vec<TableRequirement>,
    pub updates: Vec<TableUpdate>,
}

/// A change checked against and applied to the table as of `row`.
struct Planned {
    row: crate::db::TableRow,
    current: TableMetadata,
    new: TableMetadata,
}

async fn plan(shared: &Shared, change: &TableChange) -> Result<Planned> {
    let ident = &change.ident;
    let (row, current) = current_for(shared, change).await?;
    // The client is handed the metadata, naming every snapshot's manifest list.
    shared.publish_table(&row.location).await?;
    for r in &change.requirements {
        r.check(Some(&current))
            .map_err(|e| Error::RequirementFailed {
                table: ident.to_string(),
                reason: e.message().to_string(),
            })?;
    }
    for u in &change.updates {
        refuse_unsupported(u, &current, ident)?;
    }
    keep_ref_heads(change, &current)?;
    let mut builder = TableMetadataBuilder::new_from_metadata(
        current.clone(),
        Some(row.metadata_location.clone()),
    );
    for u in &change.updates {
        builder = u
            .clone()
            .apply(builder)
            .map_err(|e| Error::invalid("updates", format!("{ident}: {}", e.message())))?;
    }
    let new = builder
        .build()
        .map_err(|e| Error::invalid("updates", format!("{ident}: {}", e.message())))?
        .metadata;
    // Snapshots another engine adds are checked like Firn's own commits.
    let known: HashSet<i64> = current.snapshots().map(|s| s.snapshot_id()).collect();
    let added: Vec<_> = new
        .snapshots()
        .filter(|s| !known.contains(&s.snapshot_id()))
        .collect();
    if !added.is_empty() {
        let warehouse = shared.warehouse_of(&row.location).await?;
        let scope = shared.scope(&warehouse, &row).await?;
        for s in added {
            crate::commit::snapshot_check::check_added(
                shared, &warehouse, &scope, &current, &new, s,
            )
            .await?;
        }
    }
    Ok(Planned { row, current, new })
}

/// The table's row and its metadata with the snapshots the change may touch (see
/// [`history::partial`]): the refs' heads and the snapshots its updates name. The builder
/// then sees every snapshot it checks an update against (a snapshot added under an id the
/// table has is refused as a duplicate), and the history is never read whole.
async fn current_for(shared: &Shared, change: &TableChange) -> Result<(TableRow, TableMetadata)> {
    let mut ids = Vec::new();
    for u in &change.updates {
        match u {
            TableUpdate::AddSnapshot { snapshot } => {
                ids.push(snapshot.snapshot_id());
                ids.extend(snapshot.parent_snapshot_id());
            }
            TableUpdate::SetSnapshotRef { reference, .. } => ids.push(reference.snapshot_id),
            TableUpdate::RemoveSnapshots { snapshot_ids } => ids.extend(snapshot_ids),
            TableUpdate::SetStatistics { statistics } => ids.push(statistics.snapshot_id),
            TableUpdate::SetPartitionStatistics {
                partition_statistics,
            } => ids.push(partition_statistics.snapshot_id),
            _ => {}
        }
    }
    for _ in 0..metadata::MAX_STALE_READS {
        let row = shared.db.table(&change.ident).await?;
        if let Some(current) = history::partial(&shared.db, &row, ids.iter().copied()).await? {
            return Ok((row, current));
        }
    }
    Err(metadata::stale(&change.ident))
}

/// Removing a snapshot that a tag or branch points at (one this change does not remove)
/// would drop the ref silently: the client planned on a state where it was not a head
/// (e.g. Spark's expiry, which sends no requirement). A conflict: refresh and retry.
fn keep_ref_heads(change: &TableChange, current: &TableMetadata) -> Result<()> {
    let removed_refs: HashSet<&str> = change
        .updates
        .iter()
        .filter_map(|u| match u {
            TableUpdate::RemoveSnapshotRef { ref_name } => Some(ref_name.as_str()),
            _ => None,
        })
        .collect();
    let removing: HashSet<i64> = change
        .updates
        .iter()
        .filter_map(|u| match u {
            TableUpdate::RemoveSnapshots { snapshot_ids } => Some(snapshot_ids.iter().copied()),
            _ => None,
        })
        .flatten()
        .collect();
    if removing.is_empty() {
        return Ok(());
    }
    // The metadata model keeps its refs private; they are in its JSON form.
    let refs =
        serde_json::to_value(current).map_err(|e| Error::internal_from("metadata", e))?["refs"]
            .take();
    for (name, r) in refs.as_object().into_iter().flatten() {
        let head = r["snapshot-id"].as_i64();
        if head.is_some_and(|id| removing.contains(&id)) && !removed_refs.contains(name.as_str()) {
            return Err(Error::RequirementFailed {
                table: change.ident.to_string(),
                reason: format!(
                    "remove-snapshots: snapshot {} is the head of {name}",
                    head.unwrap_or_default()
                ),
            });
        }
    }
    Ok(())
}

/// Refuses (400, nothing applied) the updates Firn does not carry out yet, rather than
/// acknowledging what it would not keep.
fn refuse_unsupported(u: &TableUpdate, current: &TableMetadata, ident: &TableIdent) -> Result<()> {
    match u {
        TableUpdate::AddSchema { schema, .. } => crate::validate::schema("add-schema", schema)?,
        TableUpdate::AddSpec { spec } => crate::validate::unbound_spec("add-spec", spec)?,
        _ => {}
    }
    let why = match u {
        TableUpdate::RemoveSnapshotRef { ref_name } if ref_name == "main" => {
            "remove-snapshot-ref: main is the table's current state and cannot be removed"
        }
        TableUpdate::UpgradeFormatVersion { format_version }
            if *format_version != iceberg::spec::FormatVersion::V2 =>
        {
            "upgrade-format-version: Firn keeps Iceberg format version 2 tables"
        }
        TableUpdate::RemoveSnapshots { snapshot_ids }
            if current
                .current_snapshot_id()
                .is_some_and(|id| snapshot_ids.contains(&id)) =>
        {
            "remove-snapshots: the current snapshot cannot be removed"
        }
        TableUpdate::AssignUuid { uuid } if *uuid != current.uuid() => {
            "assign-uuid: a table's uuid cannot change"
        }
        TableUpdate::SetLocation { location }
            if location.trim_end_matches('/') != current.location() =>
        {
            "set-location: a table's location cannot change"
        }
        _ => return Ok(()),
    };
    Err(Error::invalid("updates", format!("{ident}: {why}")))
}

/// Commits the changes of one or more tables atomically: all in one database transaction,
/// or none. See the module contract.
pub(crate) async fn commit(
    shared: &Shared,
    changes: &[TableChange],
    by: &crate::model::Actor,
    commit_id: &str,
) -> Result<()> {
    let digest = changes_digest(changes);
    let mut seen = HashSet::new();
    for c in changes {
        c.ident.validate()?;
        if !seen.insert(&c.ident) {
            return Err(Error::invalid(
                "table-changes",
                format!("{} is changed twice; send one change per table", c.ident),
            ));
        }
    }
    'attempt: for _ in 0..MAX_ATTEMPTS {
        // A commit id already recorded (a retry with the same idempotency key) was applied,
        // if it was this request.
        if let Some(first) = changes.first() {
            let row = shared.db.table(&first.ident).await?;
            if let Some(r) = shared
                .db
                .recorded_commits(&[(row.table_id, vec![commit_id])])
                .await?
                .remove(&(row.table_id, commit_id.to_string()))
            {
                r.replay(&digest)?;
                return Ok(());
            }
        }
        let mut planned = Vec::with_capacity(changes.len());
        for c in changes {
            planned.push(plan(shared, c).await?);
        }
        let mut tx = shared.db.pool.begin().await?;
        for p in &planned {
            if !apply(&mut tx, p, by, commit_id, &digest).await? {
                // Another commit moved this table: nothing of this attempt is kept.
                drop(tx);
                continue 'attempt;
            }
        }
        pointer::commit(tx, "the commit").await?;
        return Ok(());
    }
    Err(Error::Unavailable {
        what: "table",
        source: "the tables kept changing; nothing was applied, try again".into(),
    })
}

/// A digest of what a metadata commit asks for (its tables, requirements and updates).
fn changes_digest(changes: &[TableChange]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for c in changes {
        h.update(c.ident.to_string().as_bytes());
        h.update(serde_json::to_vec(&c.requirements).unwrap_or_default());
        h.update(serde_json::to_vec(&c.updates).unwrap_or_default());
    }
    format!("{:x}", h.finalize())
}

/// Stores a planned change in `tx` if the table is still at the version it was planned on.
async fn apply(
    tx: &mut sqlx::AnyConnection,
    p: &Planned,
    by: &crate::model::Actor,
    commit_id: &str,
    digest: &str,
) -> Result<bool> {
    let Planned { row, current, new } = p;
    let known: HashSet<i64> = current.snapshots().map(|s| s.snapshot_id()).collect();
    let value = serde_json::to_value(new).map_err(|e| Error::internal_from("metadata", e))?;
    let (base, refs) = crate::table::split_metadata(value);
    let version = row.version + 1;
    let now = new.last_updated_ms();
    let current_id = new.current_snapshot_id();
    let base = base.to_string();
    let target = Target {
        version,
        current_snapshot_id: current_id,
        last_sequence_number: Some(new.last_sequence_number()),
        last_updated_ms: now,
        base_metadata: Some(&base),
    };
    let Some(mut moved) = pointer::swap(tx, Expected::of(row), &target).await? else {
        return Ok(false);
    };
    for s in new
        .snapshots()
        .filter(|s| !known.contains(&s.snapshot_id()))
    {
        // Iceberg lets a snapshot without a parent come with any sequence number.
        if s.sequence_number() <= row.last_sequence_number {
            moved.mark_history_rewritten().await?;
        }
        moved
            .insert_iceberg_snapshot(s, new.current_schema_id(), commit_id)
            .await?;
    }
    // Snapshots removed (expiry by the client: it deletes the files it no longer needs).
    let kept: HashSet<i64> = new.snapshots().map(|s| s.snapshot_id()).collect();
    let removed: Vec<i64> = known.difference(&kept).copied().collect();
    moved.delete_snapshots(&removed).await?;
    // The pointer moved: one snapshot-log entry for this version.
    if current_id != row.current_snapshot_id
        && let Some(id) = current_id
    {
        let ts = new.history().last().map(|l| l.timestamp_ms).unwrap_or(now);
        moved.insert_snapshot_log(version, id, ts).await?;
    }
    moved.delete_refs(None).await?;
    for (name, r) in &refs {
        let (Some(id), Some(kind)) = (r["snapshot-id"].as_i64(), r["type"].as_str()) else {
            continue;
        };
        let retention = crate::table::refs::RefRetention::from_json(r);
        moved.upsert_ref(name, id, kind, Some(&retention)).await?;
    }
    // Always logged, also on a table without a snapshot (snapshot id 0), so a retry with
    // the same Idempotency-Key is recognised as applied.
    let logged = current_id.or(row.current_snapshot_id);
    let seq = logged
        .and_then(|id| new.snapshot_by_id(id))
        .map(|s| s.sequence_number())
        .unwrap_or(new.last_sequence_number());
    moved
        .insert_commit_log(&CommitLog {
            version,
            commit_id,
            snapshot_id: logged.unwrap_or(0),
            sequence_number: seq,
            parent_snapshot_id: row.current_snapshot_id,
            operation: "metadata-commit",
            by,
            committed_at_ms: now,
            request_digest: Some(digest),
        })
        .await?;
    Ok(true)
}

/// A REST append to commit through the pipeline (see [`as_append`]).
pub(crate) struct AsAppend {
    pub add: Vec<NewFile>,
    pub base_snapshot_id: Option<i64>,
    /// Kept when the table has no snapshot with that id.
    pub client_snapshot_id: i64,
    /// The client's summary properties, minus the ones Firn computes.
    pub summary: std::collections::HashMap<String, String>,
    /// The client's manifest list and manifests, which the committed snapshot does not use.
    pub unused: Vec<String>,
}

/// Snapshot-summary keys Iceberg writers compute from the files (Java's `SnapshotSummary`):
/// Firn computes them afresh for a rebased snapshot.
fn is_computed_summary_key(k: &str) -> bool {
    const PREFIXES: [&str; 5] = ["added-", "deleted-", "removed-", "total-", "changed-"];
    k == "operation"
        || k == "partition-summaries-included"
        || k.starts_with("partitions.")
        || k.starts_with("firn.")
        || PREFIXES.iter().any(|p| k.starts_with(p))
}

/// When a metadata commit is a plain append — an `append` snapshot added and `main` moved to
/// it, with no requirement beyond the table's uuid and `main`'s snapshot — the data files it
/// adds (read from the manifests the client wrote for that snapshot), the snapshot it was
/// based on and the snapshot id the client chose (kept when free). Such a commit goes
/// through the commit pipeline like a gRPC append: rebased
/// onto whatever landed meanwhile, so racing appenders never fail. `None`: commit the
/// metadata as sent.
pub(crate) async fn as_append(
    shared: &Shared,
    row: &TableRow,
    requirements: &[TableRequirement],
    updates: &[TableUpdate],
) -> Result<Option<AsAppend>> {
    let [
        TableUpdate::AddSnapshot { snapshot },
        TableUpdate::SetSnapshotRef {
            ref_name,
            reference,
        },
    ] = updates
    else {
        return Ok(None);
    };
    if ref_name != "main"
        || !reference.is_branch()
        || reference.snapshot_id != snapshot.snapshot_id()
        || snapshot.summary().operation != iceberg::spec::Operation::Append
    {
        return Ok(None);
    }
    let ident = &row.ident;
    let mut base = row.current_snapshot_id;
    for r in requirements {
        match r {
            TableRequirement::UuidMatch { uuid } => {
                if uuid.to_string() != row.table_uuid {
                    return Err(Error::RequirementFailed {
                        table: ident.to_string(),
                        reason: format!("the table's uuid is {}, not {uuid}", row.table_uuid),
                    });
                }
            }
            TableRequirement::RefSnapshotIdMatch { r#ref, snapshot_id } if r#ref == "main" => {
                base = *snapshot_id;
            }
            _ => return Ok(None),
        }
    }
    // The client's own manifest list: missing or unreadable is the client's error.
    let warehouse = shared.warehouse_of(&row.location).await?;
    let list = crate::storage::manifests::read_manifest_list(&warehouse, snapshot.manifest_list())
        .await
        .map_err(|e| {
            crate::commit::snapshot_check::client_fault("add-snapshot.manifest-list", e)
        })?;
    let (meta, _) = crate::table::parse_base(row)?;
    let partition_type = meta.default_partition_type().clone();
    let mut add = Vec::new();
    // The client's manifest list and its own manifests: Firn commits its own, so these are
    // garbage once the append lands.
    let mut unused = vec![snapshot.manifest_list().to_string()];
    for m in list
        .entries()
        .iter()
        .filter(|m| m.added_snapshot_id == snapshot.snapshot_id())
    {
        unused.push(m.manifest_path.clone());
        if m.content != ManifestContentType::Data
            || m.partition_spec_id != meta.default_partition_spec_id()
        {
            return Ok(None);
        }
        let entries = shared
            .manifests
            .get(&warehouse, &meta, m)
            .await
            .map_err(|e| {
                crate::commit::snapshot_check::client_fault("add-snapshot.manifests", e)
            })?;
        for e in entries.iter() {
            match e.status() {
                ManifestStatus::Added => {
                    let f = e.data_file();
                    add.push(NewFile {
                        path: warehouse
                            .object_in("data-file", f.file_path())?
                            .uri()
                            .to_string(),
                        file_size_bytes: f.file_size_in_bytes(),
                        stats: Some(file_stats(f, &partition_type)?),
                    });
                }
                ManifestStatus::Existing => {}
                ManifestStatus::Deleted => return Ok(None),
            }
        }
    }
    if add.is_empty() {
        return Ok(None);
    }
    // The client's own summary properties (a streaming writer's checkpoint id, `wap.id`,
    // an app id) are kept; the metrics Firn computes for the rebased snapshot are not.
    let summary = snapshot
        .summary()
        .additional_properties
        .iter()
        .filter(|(k, _)| !is_computed_summary_key(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(Some(AsAppend {
        add,
        base_snapshot_id: base,
        client_snapshot_id: snapshot.snapshot_id(),
        summary,
        unused,
    }))
}
