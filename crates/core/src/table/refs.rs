//! Snapshot management: rollback, set-current, tags and branches.
//!
//! Each change is a commit of the table: one database transaction compares-and-swaps the
//! table version (so it serialises with data commits, which re-plan on top of it), records
//! the new pointer in the snapshot log and the change in the commit log. Changing the
//! current snapshot keeps every snapshot: a rollback can itself be undone with
//! `set_current_snapshot`.
//!
//! Errors: an unknown snapshot or ref is `NotFound`; a rollback to a snapshot that is not an
//! ancestor of the current one, or dropping `main`, is `FailedPrecondition`; an existing tag
//! or branch name is `AlreadyExists`; a name that is not a valid ref name is
//! `InvalidArgument`. `Unavailable` means the outcome is unknown: read the refs again.

use sqlx::Row;

use crate::db::{Db, TableRow};
use crate::error::{Error, ObjectKind, Result};
use crate::ident::TableIdent;
use crate::table::Shared;
use crate::table::pointer::{self, CommitLog, Expected, Target};

/// What to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotChange {
    /// Make an ancestor of the current snapshot current again.
    RollbackTo(i64),
    /// Make the newest ancestor of the current snapshot older than this time (ms) current.
    RollbackToTimestamp(i64),
    /// Make any snapshot of the table current.
    SetCurrent(i64),
    /// Make the snapshot a tag or branch points at current.
    SetCurrentRef(String),
    /// Tag a snapshot (default: the current one).
    CreateTag {
        name: String,
        snapshot_id: Option<i64>,
    },
    /// Start a branch at a snapshot (default: the current one).
    CreateBranch {
        name: String,
        snapshot_id: Option<i64>,
    },
    DropTag(String),
    DropBranch(String),
}

impl SnapshotChange {
    fn operation(&self) -> &'static str {
        match self {
            SnapshotChange::RollbackTo(_) | SnapshotChange::RollbackToTimestamp(_) => "rollback",
            SnapshotChange::SetCurrent(_) | SnapshotChange::SetCurrentRef(_) => {
                "set-current-snapshot"
            }
            SnapshotChange::CreateTag { .. } => "create-tag",
            SnapshotChange::CreateBranch { .. } => "create-branch",
            SnapshotChange::DropTag(_) => "drop-tag",
            SnapshotChange::DropBranch(_) => "drop-branch",
        }
    }
}

/// The table's current snapshot before and after a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeOutcome {
    pub previous_snapshot_id: Option<i64>,
    pub current_snapshot_id: Option<i64>,
}

/// A named reference to a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefInfo {
    pub name: String,
    pub snapshot_id: i64,
    /// `branch` or `tag`.
    pub ref_type: String,
    pub retention: RefRetention,
}

/// A ref's own retention (Iceberg's `SnapshotRef` fields); `None`: the table's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RefRetention {
    /// Branches: snapshots kept at least.
    pub min_snapshots_to_keep: Option<i64>,
    /// Branches: ancestors younger than this are kept.
    pub max_snapshot_age_ms: Option<i64>,
    /// The ref itself is removed when its snapshot is older than this (never `main`).
    pub max_ref_age_ms: Option<i64>,
}

impl RefRetention {
    /// From a ref of Iceberg metadata JSON.
    pub(crate) fn from_json(r: &serde_json::Value) -> Self {
        Self {
            min_snapshots_to_keep: r["min-snapshots-to-keep"].as_i64(),
            max_snapshot_age_ms: r["max-snapshot-age-ms"].as_i64(),
            max_ref_age_ms: r["max-ref-age-ms"].as_i64(),
        }
    }

    /// Adds the set fields to a ref of Iceberg metadata JSON.
    pub(crate) fn to_json(self, r: &mut serde_json::Value) {
        for (k, v) in [
            ("min-snapshots-to-keep", self.min_snapshots_to_keep),
            ("max-snapshot-age-ms", self.max_snapshot_age_ms),
            ("max-ref-age-ms", self.max_ref_age_ms),
        ] {
            if let Some(v) = v {
                r[k] = v.into();
            }
        }
    }
}

/// How often a change is re-checked after a concurrent commit moved the table.
const MAX_ATTEMPTS: usize = 20;

fn validate_ref_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 255 || name.chars().any(|c| c.is_control()) {
        return Err(Error::invalid(
            "ref",
            format!("{name:?} is not a valid tag or branch name (1 to 255 printable characters)"),
        ));
    }
    Ok(())
}

pub(crate) async fn refs(db: &Db, row: &TableRow) -> Result<Vec<RefInfo>> {
    let mut conn = db.pool.acquire().await?;
    refs_on(&mut conn, row).await
}

/// The table's refs as seen on `conn` (also inside a transaction); `main` first, pointing
/// at the row's current snapshot.
pub(crate) async fn refs_on(
    conn: &mut sqlx::AnyConnection,
    row: &TableRow,
) -> Result<Vec<RefInfo>> {
    let rows = sqlx::query(
        "SELECT name, snapshot_id, ref_type, min_snapshots_to_keep, max_snapshot_age_ms, \
         max_ref_age_ms FROM refs WHERE table_id = $1 ORDER BY name",
    )
    .bind(row.table_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut out: Vec<RefInfo> = rows
        .iter()
        .map(|r| {
            Ok(RefInfo {
                name: r.try_get(0)?,
                snapshot_id: r.try_get(1)?,
                ref_type: r.try_get(2)?,
                retention: RefRetention {
                    min_snapshots_to_keep: r.try_get(3)?,
                    max_snapshot_age_ms: r.try_get(4)?,
                    max_ref_age_ms: r.try_get(5)?,
                },
            })
        })
        .collect::<Result<_>>()?;
    // `main` follows the table pointer; its row is written with each commit.
    let main_retention = out
        .iter()
        .find(|r| r.name == "main")
        .map(|r| r.retention)
        .unwrap_or_default();
    out.retain(|r| r.name != "main");
    if let Some(id) = row.current_snapshot_id {
        out.insert(
            0,
            RefInfo {
                name: "main".into(),
                snapshot_id: id,
                ref_type: "branch".into(),
                retention: main_retention,
            },
        );
    }
    Ok(out)
}

/// Snapshot ids from `from` back to the root, following parents.
async fn ancestors(shared: &Shared, table_id: i64, from: Option<i64>) -> Result<Vec<(i64, i64)>> {
    let Some(from) = from else {
        return Ok(Vec::new());
    };
    let rows = sqlx::query(
        "WITH RECURSIVE anc(id, parent, ts, depth) AS ( \
           SELECT snapshot_id, parent_snapshot_id, timestamp_ms, 0 FROM snapshots \
             WHERE table_id = $1 AND snapshot_id = $2 \
           UNION ALL \
           SELECT s.snapshot_id, s.parent_snapshot_id, s.timestamp_ms, anc.depth + 1 \
             FROM snapshots s JOIN anc ON s.snapshot_id = anc.parent WHERE s.table_id = $1 \
         ) SELECT id, ts FROM anc ORDER BY depth",
    )
    .bind(table_id)
    .bind(from)
    .fetch_all(&shared.db.pool)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

pub(crate) async fn apply(
    shared: &Shared,
    ident: &TableIdent,
    change: &SnapshotChange,
    by: &crate::model::Actor,
) -> Result<ChangeOutcome> {
    for _ in 0..MAX_ATTEMPTS {
        let row = shared.db.table(ident).await?;
        if let Some(outcome) = try_apply(shared, &row, change, by).await? {
            return Ok(outcome);
        }
    }
    Err(Error::Unavailable {
        what: "catalog",
        source: format!("table {ident} kept changing; nothing was applied, try again").into(),
    })
}

/// One attempt against the table as of `row`; `None` when the table moved meanwhile.
async fn try_apply(
    shared: &Shared,
    row: &TableRow,
    change: &SnapshotChange,
    by: &crate::model::Actor,
) -> Result<Option<ChangeOutcome>> {
    let ident = &row.ident;
    let current = row.current_snapshot_id;
    let snapshot_exists = |id: i64| async move {
        match shared.db.snapshot(row.table_id, id).await? {
            Some(s) if s.sequence_number <= row.last_sequence_number => Ok(s.sequence_number),
            _ => Err(Error::not_found(
                ObjectKind::Snapshot,
                format!("{id} of table {ident}"),
            )),
        }
    };
    let existing_ref = |name: &str| {
        let name = name.to_string();
        async move {
            Ok::<_, Error>(
                refs(&shared.db, row)
                    .await?
                    .into_iter()
                    .find(|r| r.name == name),
            )
        }
    };
    let or_current = |id: Option<i64>| {
        id.or(current).ok_or_else(|| {
            Error::FailedPrecondition(format!("table {ident} has no snapshot to point a ref at"))
        })
    };
    // (new current snapshot, ref to upsert, ref to delete)
    let mut new_current = None;
    let mut upsert: Option<(String, i64, &str)> = None;
    let mut delete: Option<String> = None;
    match change {
        SnapshotChange::RollbackTo(id) => {
            snapshot_exists(*id).await?;
            let anc = ancestors(shared, row.table_id, current).await?;
            if !anc.iter().any(|(a, _)| a == id) {
                return Err(Error::FailedPrecondition(format!(
                    "snapshot {id} is not an ancestor of the current snapshot of {ident}; \
                     use set_current_snapshot to make it current anyway"
                )));
            }
            new_current = Some(*id);
        }
        SnapshotChange::RollbackToTimestamp(ms) => {
            let anc = ancestors(shared, row.table_id, current).await?;
            let Some((id, _)) = anc.iter().find(|(_, ts)| ts < ms) else {
                return Err(Error::FailedPrecondition(format!(
                    "table {ident} has no snapshot older than {ms} ms in its current history"
                )));
            };
            new_current = Some(*id);
        }
        SnapshotChange::SetCurrent(id) => {
            snapshot_exists(*id).await?;
            new_current = Some(*id);
        }
        SnapshotChange::SetCurrentRef(name) => {
            // Read in the same attempt as the swap: a ref moved meanwhile fails the swap.
            let r = existing_ref(name).await?.ok_or_else(|| {
                Error::not_found(ObjectKind::Ref, format!("{name} of table {ident}"))
            })?;
            new_current = Some(r.snapshot_id);
        }
        SnapshotChange::CreateTag { name, snapshot_id }
        | SnapshotChange::CreateBranch { name, snapshot_id } => {
            validate_ref_name(name)?;
            let id = or_current(*snapshot_id)?;
            snapshot_exists(id).await?;
            if name == "main" || existing_ref(name).await?.is_some() {
                return Err(Error::AlreadyExists {
                    kind: ObjectKind::Ref,
                    name: format!("{name} of table {ident}"),
                });
            }
            let kind = if matches!(change, SnapshotChange::CreateTag { .. }) {
                "tag"
            } else {
                "branch"
            };
            upsert = Some((name.clone(), id, kind));
        }
        SnapshotChange::DropTag(name) | SnapshotChange::DropBranch(name) => {
            let want = if matches!(change, SnapshotChange::DropTag(_)) {
                "tag"
            } else {
                "branch"
            };
            if name == "main" {
                return Err(Error::FailedPrecondition(
                    "main is the table's current branch and cannot be dropped".into(),
                ));
            }
            match existing_ref(name).await? {
                Some(r) if r.ref_type == want => delete = Some(name.clone()),
                Some(r) => {
                    return Err(Error::FailedPrecondition(format!(
                        "{name} of table {ident} is a {}, not a {want}",
                        r.ref_type
                    )));
                }
                None => {
                    return Err(Error::not_found(
                        ObjectKind::Ref,
                        format!("{want} {name} of table {ident}"),
                    ));
                }
            }
        }
    }
    let now = shared.env.clock.now_ms();
    let version = row.version + 1;
    let after = new_current.or(current);
    let after_seq = match after {
        Some(id) => Some(snapshot_exists(id).await?),
        None => None,
    };
    let mut tx = shared.db.pool.begin().await?;
    let target = Target {
        version,
        current_snapshot_id: after,
        last_sequence_number: None,
        last_updated_ms: now,
        base_metadata: None,
    };
    let Some(mut moved) = pointer::swap(&mut tx, Expected::of(row), &target).await? else {
        return Ok(None);
    };
    if let Some(id) = new_current {
        moved.insert_snapshot_log(version, id, now).await?;
        upsert = Some(("main".into(), id, "branch"));
    }
    if let Some((name, id, kind)) = &upsert {
        moved.upsert_ref(name, *id, kind, None).await?;
    }
    if let Some(name) = &delete {
        moved.delete_refs(Some(name)).await?;
    }
    if let (Some(id), Some(seq)) = (after, after_seq) {
        let commit_id = shared.env.ids.uuid().to_string();
        moved
            .insert_commit_log(&CommitLog {
                version,
                commit_id: &commit_id,
                snapshot_id: id,
                sequence_number: seq,
                parent_snapshot_id: current,
                operation: change.operation(),
                by,
                committed_at_ms: now,
                request_digest: None,
            })
            .await?;
    }
    pointer::commit(tx, &format!("changing the refs of {ident}")).await?;
    Ok(Some(ChangeOutcome {
        previous_snapshot_id: current,
        current_snapshot_id: after,
    }))
}
