//! What each operation needs of its caller (see [`crate::auth`] for the privileges): the
//! checks every [`super::Catalog`] method makes before it reads or changes anything.

use iceberg::spec::SnapshotRetention;
use iceberg::{TableRequirement, TableUpdate};

use crate::auth::{Caller, Privilege, Resource};
use crate::commit::metacommit::TableChange;
use crate::error::Result;
use crate::ident::TableIdent;
use crate::model::Actor;

pub(super) fn table_of(ident: &TableIdent) -> Resource {
    Resource::Table(ident.clone())
}

pub(super) fn namespace_of(ident: &TableIdent) -> Resource {
    Resource::Namespace(ident.namespace.clone())
}

/// Who made a change, for the commit log.
pub(super) fn actor(caller: &Caller, client: &str) -> Actor {
    Actor {
        principal: caller.principal().map(str::to_string),
        client: client.to_string(),
    }
}

/// A namespace the caller holds nothing on or in is, to it, as good as absent; but the
/// answer is `PermissionDenied`, so a caller with a typo is not told "does not exist" of a
/// namespace that does.
pub(super) fn see_namespace(caller: &Caller, namespace: &str) -> Result<()> {
    if caller.sees_namespace(namespace) {
        return Ok(());
    }
    caller.require(Privilege::Read, &Resource::Namespace(namespace.to_string()))
}

/// Whether a metadata commit creates its table (`assert-create`).
pub(super) fn creates(change: &TableChange) -> bool {
    change
        .requirements
        .iter()
        .any(|r| matches!(r, TableRequirement::NotExist))
}

/// Checks the privileges a REST metadata commit needs: creating the table needs `manage`
/// on its namespace; adding snapshots and moving a branch to one of them is `write`;
/// removing snapshots and statistics is `maintain` (what an engine's expiry sends);
/// anything else (schema, spec, properties, location, other ref changes) is `manage`.
pub(super) fn require_change(caller: &Caller, change: &TableChange) -> Result<()> {
    let table = table_of(&change.ident);
    if creates(change) {
        return caller.require(Privilege::Manage, &namespace_of(&change.ident));
    }
    for p in change_privileges(change) {
        caller.require(p, &table)?;
    }
    Ok(())
}

fn change_privileges(change: &TableChange) -> Vec<Privilege> {
    let added: Vec<i64> = change
        .updates
        .iter()
        .filter_map(|u| match u {
            TableUpdate::AddSnapshot { snapshot } => Some(snapshot.snapshot_id()),
            _ => None,
        })
        .collect();
    let mut out: Vec<Privilege> = change
        .updates
        .iter()
        .map(|u| match u {
            TableUpdate::AddSnapshot { .. } => Privilege::Write,
            TableUpdate::SetSnapshotRef { reference, .. }
                if matches!(reference.retention, SnapshotRetention::Branch { .. })
                    && added.contains(&reference.snapshot_id) =>
            {
                Privilege::Write
            }
            TableUpdate::RemoveSnapshots { .. }
            | TableUpdate::SetStatistics { .. }
            | TableUpdate::RemoveStatistics { .. }
            | TableUpdate::SetPartitionStatistics { .. }
            | TableUpdate::RemovePartitionStatistics { .. } => Privilege::Maintain,
            _ => Privilege::Manage,
        })
        .collect();
    // Even a commit that changes nothing reads the table.
    out.push(Privilege::Read);
    out.sort();
    out.dedup();
    out
}
