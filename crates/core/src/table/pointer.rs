//! The table pointer: the one owner of a table's row in `tables` and of the rows that move
//! with it (snapshots, the snapshot log, refs, the commit log).
//!
//! Every change of a table goes through here: the commit pipeline, metadata commits (REST),
//! rollback/tags/branches, expiry, create and register. Each runs in a database transaction
//! of its caller and gets a [`Moved`] only if the pointer moved; the row writers are methods
//! of [`Moved`], so no snapshot, log, ref or commit-log row can be written for a table whose
//! pointer this transaction did not move.
//!
//! **The predicate** (chosen once, for every writer): a swap from [`Expected`] passes only
//! when the row still has the expected `version` *and* current snapshot id. The version
//! alone would do for a writer that read the row; the snapshot id makes a plan stacked on an
//! optimistic, not yet committed state fail too (the committer plans a batch on top of the
//! one in flight: if that one never commits, another writer may have reached the same
//! version number, but never the same random snapshot id).
//!
//! [`lock`] is the one other way to move a pointer, for expiry: it bumps the version
//! unconditionally (serialising with every other writer: SQLite's write lock, PostgreSQL's
//! row lock) and returns the fresh row, which the caller re-checks inside the transaction.
//!
//! Atomicity: nothing here commits; the caller's transaction makes the swap and its rows
//! visible together, or none of them. Errors are database errors (`Unavailable`, or
//! `Internal` for constraint violations), `AlreadyExists` / `NotFound` from [`insert`].

use std::collections::HashMap;

use sqlx::Row;

use crate::db::{TableRow, is_unique_violation, placeholders};
use crate::error::{Error, ObjectKind, Result};
use crate::table::refs::RefRetention;

/// Commits the transaction that moved a pointer. A failure of the `COMMIT` itself leaves the
/// outcome unknown (`Unavailable`: read the table again, or retry with the same commit id);
/// `what` names the change for the message.
pub(crate) async fn commit(tx: sqlx::Transaction<'_, sqlx::Any>, what: &str) -> Result<()> {
    tx.commit().await.map_err(|e| Error::Unavailable {
        what: "catalog database",
        source: format!("the outcome of {what} is unknown: {e}").into(),
    })
}

/// Where a writer saw the pointer: what [`swap`] compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Expected {
    pub table_id: i64,
    pub version: i64,
    pub current_snapshot_id: Option<i64>,
}

impl Expected {
    /// The pointer as `row` has it.
    pub(crate) fn of(row: &TableRow) -> Self {
        Self {
            table_id: row.table_id,
            version: row.version,
            current_snapshot_id: row.current_snapshot_id,
        }
    }
}

/// Where the pointer moves to.
#[derive(Debug, Clone)]
pub(crate) struct Target<'a> {
    /// The new version (later than the expected one).
    pub version: i64,
    pub current_snapshot_id: Option<i64>,
    /// The new last sequence number; `None` keeps the row's.
    pub last_sequence_number: Option<i64>,
    pub last_updated_ms: i64,
    /// The new base metadata (schemas, specs, properties); `None` keeps the row's.
    pub base_metadata: Option<&'a str>,
}

/// Proof that this transaction moved a table's pointer: the rows that go with the move are
/// written through it.
pub(crate) struct Moved<'c> {
    conn: &'c mut sqlx::AnyConnection,
    table_id: i64,
    version: i64,
}

/// Compares and swaps the pointer of `from.table_id`. `None`: the row is not as expected
/// (another writer moved it, or the table is gone); nothing was written.
pub(crate) async fn swap<'c>(
    conn: &'c mut sqlx::AnyConnection,
    from: Expected,
    to: &Target<'_>,
) -> Result<Option<Moved<'c>>> {
    if to.version <= from.version {
        return Err(Error::internal(format!(
            "a pointer swap must move forward (version {} to {})",
            from.version, to.version
        )));
    }
    let sql = format!(
        "UPDATE tables SET version = $1, current_snapshot_id = $2, last_updated_ms = $3, \
         last_sequence_number = COALESCE($4, last_sequence_number){} \
         WHERE table_id = $5 AND version = $6 AND COALESCE(current_snapshot_id, -1) = $7",
        if to.base_metadata.is_some() {
            ", base_metadata = $8"
        } else {
            ""
        }
    );
    let mut q = sqlx::query(&sql)
        .bind(to.version)
        .bind(to.current_snapshot_id)
        .bind(to.last_updated_ms)
        .bind(to.last_sequence_number)
        .bind(from.table_id)
        .bind(from.version)
        .bind(from.current_snapshot_id.unwrap_or(-1));
    if let Some(base) = to.base_metadata {
        q = q.bind(base);
    }
    let moved = q.execute(&mut *conn).await?.rows_affected() == 1;
    Ok(moved.then_some(Moved {
        conn,
        table_id: from.table_id,
        version: to.version,
    }))
}

/// The pointer as [`lock`] found it (after its version bump).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Locked {
    pub version: i64,
    pub current_snapshot_id: Option<i64>,
    pub last_sequence_number: i64,
}

/// Takes the table's row in this transaction by bumping its version (expiry: it re-checks
/// its decision against the returned state under the lock, so it never starves behind a
/// stream of commits). `NotFound` when the table is gone.
pub(crate) async fn lock<'c>(
    conn: &'c mut sqlx::AnyConnection,
    table_id: i64,
    ident: &str,
    now_ms: i64,
) -> Result<(Locked, Moved<'c>)> {
    let row = sqlx::query(
        "UPDATE tables SET version = version + 1, last_updated_ms = $1 WHERE table_id = $2 \
         RETURNING version, current_snapshot_id, last_sequence_number",
    )
    .bind(now_ms)
    .bind(table_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| Error::not_found(ObjectKind::Table, ident))?;
    let locked = Locked {
        version: row.try_get(0)?,
        current_snapshot_id: row.try_get(1)?,
        last_sequence_number: row.try_get(2)?,
    };
    Ok((
        locked,
        Moved {
            conn,
            table_id,
            version: locked.version,
        },
    ))
}

/// Inserts a new table's row (create, register; the caller claimed its location in this
/// transaction). `AlreadyExists` for a taken name, `NotFound` for a missing namespace.
pub(crate) async fn insert<'c>(
    conn: &'c mut sqlx::AnyConnection,
    row: &TableRow,
    now_ms: i64,
) -> Result<Moved<'c>> {
    let r = sqlx::query(
        "INSERT INTO tables (namespace, name, table_uuid, location, version, base_metadata, \
         current_snapshot_id, last_sequence_number, last_updated_ms, metadata_location, \
         metadata_version, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING table_id",
    )
    .bind(&row.ident.namespace)
    .bind(&row.ident.name)
    .bind(&row.table_uuid)
    .bind(&row.location)
    .bind(row.version)
    .bind(&row.base_metadata)
    .bind(row.current_snapshot_id)
    .bind(row.last_sequence_number)
    .bind(row.last_updated_ms)
    .bind(&row.metadata_location)
    .bind(row.metadata_version)
    .bind(now_ms)
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| {
        if is_unique_violation(&e) {
            Error::AlreadyExists {
                kind: ObjectKind::Table,
                name: row.ident.to_string(),
            }
        } else if matches!(&e, sqlx::Error::Database(d) if d.is_foreign_key_violation()) {
            Error::not_found(ObjectKind::Namespace, &row.ident.namespace)
        } else {
            e.into()
        }
    })?;
    let table_id = r.try_get(0)?;
    Ok(Moved {
        conn,
        table_id,
        version: row.version,
    })
}

/// A snapshot row to insert (with the commit that made it).
pub(crate) struct NewSnapshot<'a> {
    pub snapshot_id: i64,
    pub parent_snapshot_id: Option<i64>,
    pub sequence_number: i64,
    pub timestamp_ms: i64,
    pub operation: &'a str,
    /// The Iceberg summary, `operation` included.
    pub summary: &'a HashMap<String, String>,
    pub schema_id: i32,
    pub manifest_list: &'a str,
    pub commit_id: &'a str,
    /// Every live file the snapshot removed is in `file_removals` (Firn's own commits).
    pub removals_recorded: bool,
}

/// A commit-log row (the table is the move's).
pub(crate) struct CommitLog<'a> {
    pub commit_id: &'a str,
    /// The table version the commit made (the move's, or one of the versions a batch's
    /// move spans).
    pub version: i64,
    /// The table's current snapshot after the commit (0: the table has none).
    pub snapshot_id: i64,
    pub sequence_number: i64,
    pub parent_snapshot_id: Option<i64>,
    pub operation: &'a str,
    pub by: &'a crate::model::Actor,
    pub committed_at_ms: i64,
    /// What was asked (see [`crate::model::CommitRequest::digest`]).
    pub request_digest: Option<&'a str>,
}

impl Moved<'_> {
    pub(crate) fn table_id(&self) -> i64 {
        self.table_id
    }

    /// The transaction, for rows keyed by the table that do not move with the pointer
    /// (file index, pending objects and deletes).
    pub(crate) fn conn(&mut self) -> &mut sqlx::AnyConnection {
        self.conn
    }

    pub(crate) async fn insert_snapshot(&mut self, r: &NewSnapshot<'_>) -> Result<()> {
        sqlx::query(
            "INSERT INTO snapshots (table_id, snapshot_id, parent_snapshot_id, sequence_number, \
             timestamp_ms, operation, summary, schema_id, manifest_list, commit_id, \
             removals_recorded) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(self.table_id)
        .bind(r.snapshot_id)
        .bind(r.parent_snapshot_id)
        .bind(r.sequence_number)
        .bind(r.timestamp_ms)
        .bind(r.operation)
        .bind(serde_json::to_string(r.summary).expect("map serialises"))
        .bind(r.schema_id as i64)
        .bind(r.manifest_list)
        .bind(r.commit_id)
        .bind(i64::from(r.removals_recorded))
        .execute(&mut *self.conn)
        .await?;
        Ok(())
    }

    /// Records the live files (path, size) snapshot `snapshot_id` removed.
    pub(crate) async fn insert_removals(
        &mut self,
        snapshot_id: i64,
        files: &[(String, i64)],
    ) -> Result<()> {
        // Four columns a row; stay well under SQLite's parameter limit.
        for chunk in files.chunks(200) {
            let q = format!(
                "INSERT INTO file_removals (table_id, snapshot_id, path, size_bytes) VALUES {} \
                 ON CONFLICT (table_id, snapshot_id, path) DO NOTHING",
                crate::db::row_placeholders(chunk.len(), 4)
            );
            let mut query = sqlx::query(&q);
            for (path, size) in chunk {
                query = query
                    .bind(self.table_id)
                    .bind(snapshot_id)
                    .bind(path)
                    .bind(*size);
            }
            query.execute(&mut *self.conn).await?;
        }
        Ok(())
    }

    /// Indexes a snapshot a client (REST) or another catalog (register) wrote.
    pub(crate) async fn insert_iceberg_snapshot(
        &mut self,
        s: &iceberg::spec::Snapshot,
        default_schema_id: i32,
        commit_id: &str,
    ) -> Result<()> {
        let mut summary = s.summary().additional_properties.clone();
        summary.insert(
            "operation".into(),
            s.summary().operation.as_str().to_string(),
        );
        self.insert_snapshot(&NewSnapshot {
            snapshot_id: s.snapshot_id(),
            parent_snapshot_id: s.parent_snapshot_id(),
            sequence_number: s.sequence_number(),
            timestamp_ms: s.timestamp_ms(),
            operation: s.summary().operation.as_str(),
            summary: &summary,
            schema_id: s.schema_id().unwrap_or(default_schema_id),
            manifest_list: s.manifest_list(),
            commit_id,
            removals_recorded: false,
        })
        .await
    }

    /// Records that table version `seq` made `snapshot_id` current at `timestamp_ms`.
    pub(crate) async fn insert_snapshot_log(
        &mut self,
        seq: i64,
        snapshot_id: i64,
        timestamp_ms: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO snapshot_log (table_id, seq, snapshot_id, timestamp_ms) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(self.table_id)
        .bind(seq)
        .bind(snapshot_id)
        .bind(timestamp_ms)
        .execute(&mut *self.conn)
        .await?;
        Ok(())
    }

    /// Points a tag or branch at a snapshot (creating it if needed). With `retention`, its
    /// retention settings are set too; without, an existing ref keeps its own.
    pub(crate) async fn upsert_ref(
        &mut self,
        name: &str,
        snapshot_id: i64,
        ref_type: &str,
        retention: Option<&RefRetention>,
    ) -> Result<()> {
        let keep = if retention.is_some() {
            ", min_snapshots_to_keep = excluded.min_snapshots_to_keep, \
             max_snapshot_age_ms = excluded.max_snapshot_age_ms, \
             max_ref_age_ms = excluded.max_ref_age_ms"
        } else {
            ""
        };
        let r = retention.copied().unwrap_or_default();
        sqlx::query(&format!(
            "INSERT INTO refs (table_id, name, snapshot_id, ref_type, min_snapshots_to_keep, \
             max_snapshot_age_ms, max_ref_age_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (table_id, name) DO UPDATE SET snapshot_id = excluded.snapshot_id, \
             ref_type = excluded.ref_type{keep}"
        ))
        .bind(self.table_id)
        .bind(name)
        .bind(snapshot_id)
        .bind(ref_type)
        .bind(r.min_snapshots_to_keep)
        .bind(r.max_snapshot_age_ms)
        .bind(r.max_ref_age_ms)
        .execute(&mut *self.conn)
        .await?;
        Ok(())
    }

    /// Removes one ref (`None`: every ref of the table).
    pub(crate) async fn delete_refs(&mut self, name: Option<&str>) -> Result<()> {
        match name {
            Some(name) => {
                sqlx::query("DELETE FROM refs WHERE table_id = $1 AND name = $2")
                    .bind(self.table_id)
                    .bind(name)
                    .execute(&mut *self.conn)
                    .await?
            }
            None => {
                sqlx::query("DELETE FROM refs WHERE table_id = $1")
                    .bind(self.table_id)
                    .execute(&mut *self.conn)
                    .await?
            }
        };
        Ok(())
    }

    /// Records a commit this move carries.
    pub(crate) async fn insert_commit_log(&mut self, r: &CommitLog<'_>) -> Result<()> {
        if r.version > self.version {
            return Err(Error::internal(format!(
                "commit-log version {} is past the move's version {}",
                r.version, self.version
            )));
        }
        sqlx::query(
            "INSERT INTO commits (table_id, commit_id, snapshot_id, sequence_number, version, \
             parent_snapshot_id, operation, client, committed_at_ms, request_digest, principal) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(self.table_id)
        .bind(r.commit_id)
        .bind(r.snapshot_id)
        .bind(r.sequence_number)
        .bind(r.version)
        .bind(r.parent_snapshot_id)
        .bind(r.operation)
        .bind(&r.by.client)
        .bind(r.committed_at_ms)
        .bind(r.request_digest)
        .bind(r.by.principal.as_deref())
        .execute(&mut *self.conn)
        .await?;
        Ok(())
    }

    /// Records that this move did more than append to the table's history (it removed
    /// snapshots, or added one with a sequence number below the table's), so no server
    /// extends a rendering of an earlier version with it (see `table::history`).
    pub(crate) async fn mark_history_rewritten(&mut self) -> Result<()> {
        sqlx::query("UPDATE tables SET history_rewritten_version = $1 WHERE table_id = $2")
            .bind(self.version)
            .bind(self.table_id)
            .execute(&mut *self.conn)
            .await?;
        Ok(())
    }

    /// Removes snapshot rows and the snapshot-log entries that would name them. As in
    /// Iceberg, the log keeps only the entries after the newest one that names a removed
    /// snapshot, so it never points at a snapshot that is gone.
    ///
    /// The move is marked as rewriting the history (see [`Moved::mark_history_rewritten`]).
    pub(crate) async fn delete_snapshots(&mut self, ids: &[i64]) -> Result<()> {
        let table_id = self.table_id;
        if ids.is_empty() {
            return Ok(());
        }
        self.mark_history_rewritten().await?;
        for chunk in ids.chunks(500) {
            let list = placeholders(2, chunk.len());
            let last_removed = format!(
                "SELECT MAX(seq) FROM snapshot_log WHERE table_id = $1 AND snapshot_id IN ({list})"
            );
            let mut q = sqlx::query(&last_removed).bind(table_id);
            for id in chunk {
                q = q.bind(*id);
            }
            let max_seq: Option<i64> = q.fetch_one(&mut *self.conn).await?.try_get(0)?;
            if let Some(seq) = max_seq {
                sqlx::query("DELETE FROM snapshot_log WHERE table_id = $1 AND seq <= $2")
                    .bind(table_id)
                    .bind(seq)
                    .execute(&mut *self.conn)
                    .await?;
            }
            // A snapshot's recorded removals go with it.
            for rows in ["snapshots", "file_removals"] {
                let del =
                    format!("DELETE FROM {rows} WHERE table_id = $1 AND snapshot_id IN ({list})");
                let mut q = sqlx::query(&del).bind(table_id);
                for id in chunk {
                    q = q.bind(*id);
                }
                q.execute(&mut *self.conn).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{append_one, catalog_with_table};

    fn target(version: i64, current: Option<i64>) -> Target<'static> {
        Target {
            version,
            current_snapshot_id: current,
            last_sequence_number: None,
            last_updated_ms: 1,
            base_metadata: None,
        }
    }

    #[tokio::test]
    async fn a_swap_passes_only_from_the_version_and_snapshot_it_expects() {
        let dir = tempfile::tempdir().unwrap();
        let (catalog, ident, t) = catalog_with_table(dir.path()).await;
        catalog
            .commit(
                &crate::auth::Caller::unrestricted(),
                append_one(&ident, &t, 1, true),
            )
            .await
            .unwrap();
        let db = &catalog.shared().db;
        let row = db.table(&ident).await.unwrap();
        let at = Expected::of(&row);
        let mut conn = db.pool.acquire().await.unwrap();

        let stale_version = Expected {
            version: at.version - 1,
            ..at
        };
        let other_snapshot = Expected {
            current_snapshot_id: Some(-7),
            ..at
        };
        for from in [stale_version, other_snapshot] {
            let moved = swap(&mut conn, from, &target(at.version + 1, None)).await;
            assert!(moved.unwrap().is_none(), "{from:?} must not swap");
        }
        assert!(
            swap(&mut conn, at, &target(at.version, None))
                .await
                .is_err(),
            "a swap must move forward"
        );
        assert_eq!(db.table(&ident).await.unwrap().version, at.version);

        let moved = swap(
            &mut conn,
            at,
            &target(at.version + 1, row.current_snapshot_id),
        )
        .await
        .unwrap();
        assert!(moved.is_some());
        let after = db.table(&ident).await.unwrap();
        assert_eq!(after.version, at.version + 1);
        assert_eq!(after.current_snapshot_id, row.current_snapshot_id);
        // Unchanged where the target keeps the row's values.
        assert_eq!(after.last_sequence_number, row.last_sequence_number);
        assert_eq!(after.base_metadata, row.base_metadata);
        // The old expectation is stale now.
        assert!(
            swap(&mut conn, at, &target(at.version + 2, None))
                .await
                .unwrap()
                .is_none()
        );
    }
}
