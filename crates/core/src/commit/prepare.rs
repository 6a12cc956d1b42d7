//! The prepare stage: what is checked of a commit before the committer sees it.
//!
//! Per request and concurrently with other requests (nothing here takes a lock or writes
//! the catalog): the request's shape (ids, summary keys, sizes), every added file (one HEAD
//! and its Parquet footer, see [`super::files`]), what it removes, and the manifest of its
//! added files, built in memory. The result is a [`Prepared`] commit, or the recorded
//! outcome when the commit id has landed already.
//!
//! Errors are final (`InvalidArgument`, `NotFound`, `TooLarge`) unless they come from the
//! store or the database (`Unavailable`: retry with the same commit id).

use std::collections::HashSet;

use futures::{StreamExt, TryStreamExt};
use iceberg::spec::{ManifestEntry, ManifestStatus, UNASSIGNED_SEQUENCE_NUMBER};

use super::files::{self, partition_from_json};
use super::{Prepared, RemoveSelector, manifest_writer};
use crate::db::TableRow;
use crate::error::{Error, Result};
use crate::model::{CommitOutcome, CommitRequest, Operation, OverwriteScope};
use crate::storage::objects::CaptureStorage;
use crate::table::{Shared, parse_base};

/// Most data files one commit may add or remove.
pub const MAX_FILES_PER_COMMIT: usize = 100_000;

/// What the prepare stage found.
pub(crate) enum Checked {
    /// Checked: submit it to the committer.
    Ready(Box<Prepared>),
    /// The commit id has landed already (a retry): its recorded outcome.
    Answered(CommitOutcome),
}

/// Checks a request's shape: its ident, commit id, summary keys and size.
pub(crate) fn check_request(req: &CommitRequest) -> Result<()> {
    req.ident.validate()?;
    validate_commit_id(&req.commit_id)?;
    // Keys Firn computes (Iceberg's summary metrics and its own) cannot be set by callers.
    const RESERVED: [&str; 7] = [
        "firn.", "added-", "deleted-", "removed-", "total-", "changed-", "replace-",
    ];
    if let Some(k) = req
        .summary
        .keys()
        .find(|k| k.as_str() == "operation" || RESERVED.iter().any(|r| k.starts_with(r)))
    {
        return Err(Error::invalid("summary", format!("key {k:?} is reserved")));
    }
    let added = req.operation.added();
    let removed_count = match &req.operation {
        Operation::Delete { paths } | Operation::Replace { remove: paths, .. } => paths.len(),
        Operation::Overwrite {
            remove: OverwriteScope::Files(p),
            ..
        } => p.len(),
        _ => 0,
    };
    if added.len() + removed_count > MAX_FILES_PER_COMMIT {
        return Err(Error::TooLarge(format!(
            "{} files in one commit; at most {MAX_FILES_PER_COMMIT}",
            added.len() + removed_count
        )));
    }
    match &req.operation {
        Operation::Append { add } if add.is_empty() => {
            return Err(Error::invalid(
                "append.add",
                "an append must add at least one file",
            ));
        }
        Operation::Delete { paths } if paths.is_empty() => {
            return Err(Error::invalid(
                "delete.paths",
                "a delete must name at least one file",
            ));
        }
        Operation::Replace { add, remove } if add.is_empty() || remove.is_empty() => {
            return Err(Error::invalid(
                "replace",
                "a replace must remove and add at least one file each",
            ));
        }
        _ => {}
    }
    let mut seen = HashSet::new();
    for f in added {
        if !seen.insert(f.path.as_str()) {
            return Err(Error::invalid(
                "add.path",
                format!("{} is listed twice", f.path),
            ));
        }
    }
    Ok(())
}

/// Checks the request against the table of `row` and builds what the committer plans with.
/// `wanted_snapshot_id` is the snapshot id a REST client chose, kept when it is free;
/// `principal` is the authenticated caller, recorded with the commit.
pub(crate) async fn prepare(
    shared: &Shared,
    row: &TableRow,
    req: CommitRequest,
    principal: Option<&str>,
    wanted_snapshot_id: Option<i64>,
) -> Result<Checked> {
    let added = req.operation.added();
    let (_, ctx) = parse_base(row)?;
    let warehouse = &*shared.warehouse_of(&row.location).await?;
    let mut checks = Vec::with_capacity(added.len());
    for f in added {
        checks.push(files::resolve(warehouse, &ctx, f));
    }
    let data_files = match futures::stream::iter(checks)
        .buffered(16)
        .try_collect::<Vec<_>>()
        .await
    {
        Ok(files) => files,
        // A retry of a commit that landed long ago may name files that are gone by now
        // (expired); its recorded outcome is still the answer. (A retry whose files are
        // there is answered by the committer, which checks the commit log anyway.)
        Err(e) => {
            return recorded_outcome(shared, row.table_id, &req.commit_id, &req.digest())
                .await?
                .map(Checked::Answered)
                .ok_or(e);
        }
    };

    let remove = match &req.operation {
        Operation::Append { .. } => RemoveSelector::Nothing,
        Operation::Overwrite { remove, .. } => match remove {
            OverwriteScope::All => RemoveSelector::All,
            OverwriteScope::Files(paths) => paths_selector("overwrite.files", paths)?,
            OverwriteScope::Partitions(parts) => RemoveSelector::Partitions(
                parts
                    .iter()
                    .map(|p| partition_from_json(&ctx.partition_type, p))
                    .collect::<std::result::Result<_, _>>()
                    .map_err(|r| Error::invalid("overwrite.partitions", r))?,
            ),
            OverwriteScope::AddedPartitions => RemoveSelector::Partitions(
                data_files.iter().map(|f| f.partition().clone()).collect(),
            ),
        },
        Operation::Delete { paths } => paths_selector("delete.paths", paths)?,
        Operation::Replace { remove, .. } => paths_selector("replace.remove", remove)?,
    };

    // A client's own id is kept (its engine then finds its snapshot and cleans up the
    // manifests it wrote) unless the table has it already.
    let snapshot_id = match wanted_snapshot_id {
        Some(id) if id > 0 && shared.db.snapshot(row.table_id, id).await?.is_none() => id,
        _ => shared.env.ids.snapshot_id(),
    };
    let added_manifest = if data_files.is_empty() {
        None
    } else {
        let capture = CaptureStorage::new();
        let (path, mut w) = manifest_writer(&capture, &ctx, &shared.env, snapshot_id, "m0");
        for f in &data_files {
            w.add_file(f.clone(), UNASSIGNED_SEQUENCE_NUMBER)?;
        }
        let mf = w.write_manifest_file().await?;
        let object = capture
            .take()
            .pop()
            .ok_or_else(|| Error::internal("manifest writer wrote nothing"))?;
        shared.manifests.insert(
            &path,
            data_files
                .iter()
                .map(|f| ManifestEntry {
                    status: ManifestStatus::Added,
                    snapshot_id: Some(snapshot_id),
                    sequence_number: None,
                    file_sequence_number: None,
                    data_file: f.clone(),
                })
                .collect(),
        );
        Some((mf, object))
    };
    Ok(Checked::Ready(Box::new(Prepared {
        table_id: row.table_id,
        digest: req.digest(),
        by: crate::model::Actor {
            principal: principal.map(str::to_string),
            client: req.client.clone(),
        },
        req,
        snapshot_id,
        added: data_files,
        added_manifest,
        remove,
        attempts: 0,
    })))
}

async fn recorded_outcome(
    shared: &Shared,
    table_id: i64,
    commit_id: &str,
    digest: &str,
) -> Result<Option<CommitOutcome>> {
    let mut recorded = shared
        .db
        .recorded_commits(&[(table_id, vec![commit_id])])
        .await?;
    recorded
        .remove(&(table_id, commit_id.to_string()))
        .map(|r| r.replay(digest))
        .transpose()
}

/// A commit id (or idempotency key) is 1 to 128 printable ASCII characters.
pub(crate) fn validate_commit_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > 128 || !id.chars().all(|c| c.is_ascii_graphic()) {
        return Err(Error::invalid(
            "commit_id",
            "must be 1 to 128 printable ASCII characters without spaces (a UUID is best)",
        ));
    }
    Ok(())
}

fn paths_selector(field: &str, paths: &[String]) -> Result<RemoveSelector> {
    let mut set = HashSet::new();
    for p in paths {
        if !set.insert(p.clone()) {
            return Err(Error::invalid(field, format!("{p} is listed twice")));
        }
    }
    if set.is_empty() {
        return Err(Error::invalid(field, "names no file"));
    }
    Ok(RemoveSelector::Paths(set))
}
