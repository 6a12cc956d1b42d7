//! Checking the snapshots other engines add (REST `add-snapshot`) as strictly as the
//! commits Firn plans itself, before the metadata commit that makes them current.
//!
//! Contract, for every snapshot a metadata commit adds:
//! - its manifest list lies under the table (its location or its own write directories),
//!   exists and parses as a manifest list;
//! - every manifest it lists either was in its parent snapshot's list already (carried
//!   forward: a registered table may reference older objects elsewhere) or lies under the
//!   table, exists and parses;
//! - every file a manifest added by this snapshot adds lies under the table, exists with the
//!   size the manifest gives, carries consistent statistics, and, for Parquet, has the
//!   record count its footer has (one read gives the size and the footer; other formats:
//!   one HEAD).
//!
//! Any failure is `InvalidArgument` naming the object and what is wrong with it: the client
//! wrote bad metadata, retrying the same commit cannot succeed, and nothing was applied.

use std::collections::HashSet;

use futures::StreamExt;
use iceberg::spec::{DataFileFormat, ManifestStatus, Snapshot, TableMetadata};

use crate::error::{Error, Result};
use crate::storage::{ObjectPath, TableScope, Warehouse};
use crate::table::Shared;

/// How many files of one snapshot are checked at once.
const CONCURRENCY: usize = 16;

/// Checks `snapshot`, added on top of `current` by a change that makes `new` (whose schemas
/// and specs its manifests are read with; see the module contract).
pub(crate) async fn check_added(
    shared: &Shared,
    warehouse: &Warehouse,
    scope: &TableScope,
    current: &TableMetadata,
    new: &TableMetadata,
    snapshot: &Snapshot,
) -> Result<()> {
    let field = "add-snapshot.manifest-list";
    let list_path = owned(warehouse, scope, field, snapshot.manifest_list())?;
    let list = crate::storage::manifests::read_manifest_list(warehouse, list_path.uri())
        .await
        .map_err(|e| client_fault(field, e))?;
    let carried: HashSet<String> = match snapshot
        .parent_snapshot_id()
        .and_then(|id| current.snapshot_by_id(id))
    {
        Some(parent) => {
            crate::storage::manifests::read_manifest_list(warehouse, parent.manifest_list())
                .await?
                .entries()
                .iter()
                .map(|m| m.manifest_path.clone())
                .collect()
        }
        None => HashSet::new(),
    };
    // The statistics name the fields of the schema the snapshot was written with.
    let schema = snapshot
        .schema_id()
        .and_then(|id| new.schema_by_id(id))
        .unwrap_or_else(|| new.current_schema());
    for m in list.entries() {
        if carried.contains(&m.manifest_path) {
            continue;
        }
        let field = "add-snapshot.manifests";
        owned(warehouse, scope, field, &m.manifest_path)?;
        let entries = shared
            .manifests
            .get(warehouse, new, m)
            .await
            .map_err(|e| client_fault(field, e))?;
        if m.added_snapshot_id != snapshot.snapshot_id() {
            continue;
        }
        let added: Vec<_> = entries
            .iter()
            .filter(|e| e.status() == ManifestStatus::Added)
            .map(|e| e.data_file().clone())
            .collect();
        let checks = added.into_iter().map(|f| async move {
            let field = "add-snapshot.data-files";
            let object = owned(warehouse, scope, field, f.file_path())?;
            crate::commit::files::check_consistent(schema, &f)?;
            // A Parquet file: one request gives its size and footer; others: a HEAD.
            let found = if f.file_format() == DataFileFormat::Parquet {
                crate::commit::files::read_footer(warehouse, &object)
                    .await
                    .map(|(size, meta)| (size, Some(meta.file_metadata().num_rows().max(0) as u64)))
            } else {
                warehouse.head(&object).await.map(|size| (size, None))
            };
            let (size, records) = match found {
                Ok(found) => found,
                Err(Error::NotFound { .. }) => {
                    return Err(Error::invalid(
                        field,
                        format!("{} does not exist", f.file_path()),
                    ));
                }
                Err(e) => return Err(e),
            };
            if size != f.file_size_in_bytes() {
                return Err(Error::invalid(
                    field,
                    format!(
                        "{} is {size} bytes in storage, but its manifest says {}",
                        f.file_path(),
                        f.file_size_in_bytes()
                    ),
                ));
            }
            if let Some(records) = records {
                crate::commit::files::check_record_count(&f, records)?;
            }
            Ok(())
        });
        let mut results = futures::stream::iter(checks).buffer_unordered(CONCURRENCY);
        while let Some(r) = results.next().await {
            r?;
        }
    }
    Ok(())
}

/// The checked path of `uri`, which the table must own.
fn owned(warehouse: &Warehouse, scope: &TableScope, field: &str, uri: &str) -> Result<ObjectPath> {
    let object = warehouse.object_in(field, uri)?;
    if !scope.owns(&object) {
        return Err(Error::invalid(
            field,
            format!("{uri} is outside the table's location {}", scope.location()),
        ));
    }
    Ok(object)
}

/// A missing or unreadable object the client named is the client's error, not corruption
/// of the table.
pub(crate) fn client_fault(field: &str, e: Error) -> Error {
    match e {
        Error::Corrupt { path, reason } => Error::invalid(field, format!("{path}: {reason}")),
        Error::NotFound { name, .. } => Error::invalid(field, format!("{name} does not exist")),
        other => other,
    }
}
