//! The table pointer: the one owner of a table's row in `tables` and of the rows that move
//! with it (snapshots, the snapshot log, refs, the commit log).
//!
//! Every change of a table goes through here: the commit pipeline, metadata commits (REST),
//! rollback/tags/branches, expiry, create and register. Each runs in a database transaction
//! of its caller and gets a [`Moved`] only if the pointer moved; the row writers are methods
//! of [`Moved`], so no snapshot, log, ref or commit-log row can be written for a table whose
//! pointer this transaction did not move. The committer moves a batch's tables at once
//! with [`move_all`], which writes each row only for a table whose swap passed (one
//! statement on PostgreSQL).
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
    let swaps = [(from, to.clone())];
    check_swaps(&swaps)?;
    let moved = swap_all(&mut *conn, &swaps).await?.contains(&from.table_id);
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
#[derive(Clone, Copy)]
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
#[derive(Clone, Copy)]
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
        write_snapshots(self.conn, &[(self.table_id, *r)]).await
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
        let entry = LogEntry {
            seq,
            snapshot_id,
            timestamp_ms,
        };
        write_snapshot_log(self.conn, &[(self.table_id, entry)]).await
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
        let head = RefHead {
            name,
            snapshot_id,
            ref_type,
        };
        write_refs(self.conn, &[(self.table_id, head)], retention).await
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
        check_commit_version(r, self.version)?;
        write_commit_log(self.conn, &[(self.table_id, *r)]).await
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

/// A snapshot-log entry: table version `seq` made `snapshot_id` current at `timestamp_ms`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogEntry {
    pub seq: i64,
    pub snapshot_id: i64,
    pub timestamp_ms: i64,
}

/// Where a ref points.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RefHead<'a> {
    pub name: &'a str,
    pub snapshot_id: i64,
    pub ref_type: &'a str,
}

/// Everything a batch of commits writes with its pointer swaps, each row keyed by its table:
/// the rows that move with a pointer, and those that ride along in the same transaction
/// (the file index, and objects kept in the catalog until their store holds them). Rows of
/// a table whose swap does not pass are not written.
#[derive(Default)]
pub(crate) struct BatchRows<'a> {
    pub snapshots: Vec<(i64, NewSnapshot<'a>)>,
    pub log: Vec<(i64, LogEntry)>,
    pub commits: Vec<(i64, CommitLog<'a>)>,
    /// (table, snapshot, path, size): the live files snapshots removed.
    pub removals: Vec<(i64, i64, &'a str, i64)>,
    /// Refs pointed at snapshots; an existing ref keeps its retention settings.
    pub heads: Vec<(i64, RefHead<'a>)>,
    /// (table, path, snapshot): data files added, for the file index.
    pub files: Vec<(i64, &'a str, i64)>,
    /// (table, path, bytes): objects not yet durable in their store.
    pub staged: Vec<(i64, &'a str, &'a [u8])>,
}

impl BatchRows<'_> {
    /// Every row's table is swapped, and no commit-log row is past its move's version.
    fn check(&self, swaps: &[(Expected, Target<'_>)]) -> Result<()> {
        let to: HashMap<i64, i64> = swaps.iter().map(|(f, t)| (f.table_id, t.version)).collect();
        let version = |t: i64| {
            to.get(&t).copied().ok_or_else(|| {
                Error::internal(format!("a row for table {t}, whose pointer is not swapped"))
            })
        };
        let tables = (self.snapshots.iter().map(|r| r.0))
            .chain(self.log.iter().map(|r| r.0))
            .chain(self.removals.iter().map(|r| r.0))
            .chain(self.heads.iter().map(|r| r.0))
            .chain(self.files.iter().map(|r| r.0))
            .chain(self.staged.iter().map(|r| r.0));
        for t in tables {
            version(t)?;
        }
        for (t, c) in &self.commits {
            check_commit_version(c, version(*t)?)?;
        }
        Ok(())
    }
}

/// Moves the pointers of several tables at once, each as [`swap`] does (the same predicate),
/// writes `rows` for the tables that moved, and commits; returns the tables that moved. A
/// table may appear once. Unlike the other
/// writers here this runs its own transaction: an error may leave the outcome unknown (the
/// caller reports it so).
///
/// On PostgreSQL, where every statement is a round trip to the server, this is one
/// statement whatever the batch holds (the swaps and each kind of row bound as JSON, the
/// inserts data-modifying CTEs that see only the tables the swap moved), atomic on its own:
/// a batch costs one round trip and one WAL flush. On SQLite (in process) it is a statement
/// per kind of row in one transaction.
pub(crate) async fn move_all(
    db: &crate::db::Db,
    swaps: &[(Expected, Target<'_>)],
    rows: &BatchRows<'_>,
) -> Result<std::collections::HashSet<i64>> {
    check_swaps(swaps)?;
    rows.check(swaps)?;
    if swaps.is_empty() {
        return Ok(Default::default());
    }
    match db.backend() {
        crate::db::Backend::Postgres => {
            let mut conn = db.pool.acquire().await?;
            move_all_in_one_statement(&mut conn, swaps, rows).await
        }
        crate::db::Backend::Sqlite => {
            let mut tx = db.pool.begin().await?;
            let moved = swap_all(&mut tx, swaps).await?;
            write_rows(&mut tx, &moved, rows).await?;
            tx.commit().await?;
            Ok(moved)
        }
    }
}

/// Each swap moves its table forward, and no table is swapped twice.
fn check_swaps(swaps: &[(Expected, Target<'_>)]) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for (from, to) in swaps {
        if to.version <= from.version || !seen.insert(from.table_id) {
            return Err(Error::internal(format!(
                "a pointer swap moves its table forward, once (table {}, version {} to {})",
                from.table_id, from.version, to.version
            )));
        }
    }
    Ok(())
}

/// The pointer swap: the update from a relation `v` of (id, old_version, old_snapshot,
/// new_version, new_snapshot, updated_ms, seq, base), row by row, returning the tables that
/// moved. The one text of the predicate (see the module doc): a macro so both forms of the
/// statement ([`swap_all`] and [`MOVE_ALL_POSTGRES`]) embed it.
macro_rules! swap_from_v {
    () => {
        "UPDATE tables SET version = v.new_version, \
         current_snapshot_id = v.new_snapshot, last_updated_ms = v.updated_ms, \
         last_sequence_number = COALESCE(v.seq, tables.last_sequence_number), \
         base_metadata = COALESCE(v.base, tables.base_metadata) \
         FROM v WHERE tables.table_id = v.id AND tables.version = v.old_version \
         AND COALESCE(tables.current_snapshot_id, -1) = v.old_snapshot \
         RETURNING tables.table_id"
    };
}

/// The swaps as `VALUES` lists, in as few statements as [`crate::db::row_runs`] allows
/// (checked by the caller); returns the tables that moved.
async fn swap_all(
    conn: &mut sqlx::AnyConnection,
    swaps: &[(Expected, Target<'_>)],
) -> Result<std::collections::HashSet<i64>> {
    let mut moved = std::collections::HashSet::with_capacity(swaps.len());
    for run in crate::db::row_runs(swaps.len()) {
        let sql = format!(
            "WITH v (id, old_version, old_snapshot, new_version, new_snapshot, updated_ms, \
             seq, base) AS (VALUES {}) {}",
            crate::db::row_placeholders(run.len(), 8),
            swap_from_v!()
        );
        let mut q = sqlx::query(&sql);
        for (from, to) in &swaps[run] {
            q = q
                .bind(from.table_id)
                .bind(from.version)
                .bind(from.current_snapshot_id.unwrap_or(-1))
                .bind(to.version)
                .bind(to.current_snapshot_id)
                .bind(to.last_updated_ms)
                .bind(to.last_sequence_number)
                .bind(to.base_metadata);
        }
        for r in q.fetch_all(&mut *conn).await? {
            moved.insert(r.try_get::<i64, _>(0)?);
        }
    }
    Ok(moved)
}

/// SQLite: the rows of the tables in `moved`, a statement per kind (per run of rows).
async fn write_rows(
    conn: &mut sqlx::AnyConnection,
    moved: &std::collections::HashSet<i64>,
    rows: &BatchRows<'_>,
) -> Result<()> {
    fn of<T: Copy>(
        moved: &std::collections::HashSet<i64>,
        rows: &[T],
        table: impl Fn(&T) -> i64,
    ) -> Vec<T> {
        rows.iter()
            .filter(|r| moved.contains(&table(r)))
            .copied()
            .collect()
    }
    write_snapshots(conn, &of(moved, &rows.snapshots, |r| r.0)).await?;
    write_snapshot_log(conn, &of(moved, &rows.log, |r| r.0)).await?;
    write_commit_log(conn, &of(moved, &rows.commits, |r| r.0)).await?;
    write_refs(conn, &of(moved, &rows.heads, |r| r.0), None).await?;
    crate::db::insert_rows(
        conn,
        "INSERT INTO file_removals (table_id, snapshot_id, path, size_bytes)",
        "ON CONFLICT (table_id, snapshot_id, path) DO NOTHING",
        4,
        &of(moved, &rows.removals, |r| r.0),
        |q, (t, s, path, size)| q.bind(*t).bind(*s).bind(*path).bind(*size),
    )
    .await?;
    crate::db::insert_rows(
        conn,
        "INSERT INTO table_files (table_id, path, snapshot_id)",
        "",
        3,
        &of(moved, &rows.files, |r| r.0),
        |q, (t, path, id)| q.bind(*t).bind(*path).bind(*id),
    )
    .await?;
    crate::db::insert_rows(
        conn,
        "INSERT INTO pending_objects (path, bytes)",
        "ON CONFLICT (path) DO NOTHING",
        2,
        &of(moved, &rows.staged, |r| r.0),
        |q, (_, path, bytes)| q.bind(*path).bind(*bytes),
    )
    .await
}

/// PostgreSQL: the swaps and every row in one statement. Each relation is bound as one JSON
/// array (read with `json_array_elements`), so the statement has one shape, prepared once per
/// connection, whatever the batch holds; bytes travel hex-encoded.
async fn move_all_in_one_statement(
    conn: &mut sqlx::AnyConnection,
    swaps: &[(Expected, Target<'_>)],
    rows: &BatchRows<'_>,
) -> Result<std::collections::HashSet<i64>> {
    use serde_json::json;
    let array = |v: Vec<serde_json::Value>| serde_json::Value::Array(v).to_string();
    let swaps = array(
        swaps
            .iter()
            .map(|(f, t)| {
                json!([
                    f.table_id,
                    f.version,
                    f.current_snapshot_id.unwrap_or(-1),
                    t.version,
                    t.current_snapshot_id,
                    t.last_updated_ms,
                    t.last_sequence_number,
                    t.base_metadata
                ])
            })
            .collect(),
    );
    let snapshots = array(
        rows.snapshots
            .iter()
            .map(|(t, r)| {
                json!([
                    t,
                    r.snapshot_id,
                    r.parent_snapshot_id,
                    r.sequence_number,
                    r.timestamp_ms,
                    r.operation,
                    serde_json::to_string(r.summary).expect("map serialises"),
                    r.schema_id,
                    r.manifest_list,
                    r.commit_id,
                    i64::from(r.removals_recorded)
                ])
            })
            .collect(),
    );
    let log = array(
        rows.log
            .iter()
            .map(|(t, e)| json!([t, e.seq, e.snapshot_id, e.timestamp_ms]))
            .collect(),
    );
    let commits = array(
        rows.commits
            .iter()
            .map(|(t, r)| {
                json!([
                    t,
                    r.commit_id,
                    r.snapshot_id,
                    r.sequence_number,
                    r.version,
                    r.parent_snapshot_id,
                    r.operation,
                    r.by.client,
                    r.committed_at_ms,
                    r.request_digest,
                    r.by.principal
                ])
            })
            .collect(),
    );
    let heads = array(
        rows.heads
            .iter()
            .map(|(t, h)| json!([t, h.name, h.snapshot_id, h.ref_type]))
            .collect(),
    );
    let removals = array(
        rows.removals
            .iter()
            .map(|(t, s, path, size)| json!([t, s, path, size]))
            .collect(),
    );
    let files = array(
        rows.files
            .iter()
            .map(|(t, path, s)| json!([t, path, s]))
            .collect(),
    );
    let staged = array(
        rows.staged
            .iter()
            .map(|(t, path, bytes)| json!([t, path, hex::encode(bytes)]))
            .collect(),
    );
    let moved: Vec<sqlx::any::AnyRow> = sqlx::query(MOVE_ALL_POSTGRES)
        .bind(swaps)
        .bind(snapshots)
        .bind(log)
        .bind(commits)
        .bind(heads)
        .bind(removals)
        .bind(files)
        .bind(staged)
        .fetch_all(&mut *conn)
        .await?;
    moved.iter().map(|r| Ok(r.try_get::<i64, _>(0)?)).collect()
}

/// The one statement of [`move_all_in_one_statement`]. Each relation is a JSON array of
/// rows, each row an array: `r->>n` is column n as text, cast to the column's type.
const MOVE_ALL_POSTGRES: &str = concat!(
    "WITH v AS (
    SELECT (r->>0)::BIGINT AS id, (r->>1)::BIGINT AS old_version,
        (r->>2)::BIGINT AS old_snapshot, (r->>3)::BIGINT AS new_version,
        (r->>4)::BIGINT AS new_snapshot, (r->>5)::BIGINT AS updated_ms, (r->>6)::BIGINT AS seq,
        r->>7 AS base
    FROM json_array_elements($1::json) AS r),
moved AS (",
    swap_from_v!(),
    "),
s AS (INSERT INTO snapshots (table_id, snapshot_id, parent_snapshot_id, sequence_number,
        timestamp_ms, operation, summary, schema_id, manifest_list, commit_id, removals_recorded)
    SELECT (r->>0)::BIGINT, (r->>1)::BIGINT, (r->>2)::BIGINT, (r->>3)::BIGINT, (r->>4)::BIGINT,
        r->>5, r->>6, (r->>7)::BIGINT, r->>8, r->>9, (r->>10)::BIGINT
    FROM json_array_elements($2::json) AS r
    WHERE (r->>0)::BIGINT IN (SELECT table_id FROM moved)),
l AS (INSERT INTO snapshot_log (table_id, seq, snapshot_id, timestamp_ms)
    SELECT (r->>0)::BIGINT, (r->>1)::BIGINT, (r->>2)::BIGINT, (r->>3)::BIGINT
    FROM json_array_elements($3::json) AS r
    WHERE (r->>0)::BIGINT IN (SELECT table_id FROM moved)),
c AS (INSERT INTO commits (table_id, commit_id, snapshot_id, sequence_number, version,
        parent_snapshot_id, operation, client, committed_at_ms, request_digest, principal)
    SELECT (r->>0)::BIGINT, r->>1, (r->>2)::BIGINT, (r->>3)::BIGINT, (r->>4)::BIGINT,
        (r->>5)::BIGINT, r->>6, r->>7, (r->>8)::BIGINT, r->>9, r->>10
    FROM json_array_elements($4::json) AS r
    WHERE (r->>0)::BIGINT IN (SELECT table_id FROM moved)),
h AS (INSERT INTO refs (table_id, name, snapshot_id, ref_type)
    SELECT (r->>0)::BIGINT, r->>1, (r->>2)::BIGINT, r->>3
    FROM json_array_elements($5::json) AS r
    WHERE (r->>0)::BIGINT IN (SELECT table_id FROM moved)
    ON CONFLICT (table_id, name) DO UPDATE SET snapshot_id = excluded.snapshot_id,
        ref_type = excluded.ref_type),
x AS (INSERT INTO file_removals (table_id, snapshot_id, path, size_bytes)
    SELECT (r->>0)::BIGINT, (r->>1)::BIGINT, r->>2, (r->>3)::BIGINT
    FROM json_array_elements($6::json) AS r
    WHERE (r->>0)::BIGINT IN (SELECT table_id FROM moved)
    ON CONFLICT (table_id, snapshot_id, path) DO NOTHING),
f AS (INSERT INTO table_files (table_id, path, snapshot_id)
    SELECT (r->>0)::BIGINT, r->>1, (r->>2)::BIGINT
    FROM json_array_elements($7::json) AS r
    WHERE (r->>0)::BIGINT IN (SELECT table_id FROM moved)),
p AS (INSERT INTO pending_objects (path, bytes)
    SELECT r->>1, decode(r->>2, 'hex')
    FROM json_array_elements($8::json) AS r
    WHERE (r->>0)::BIGINT IN (SELECT table_id FROM moved)
    ON CONFLICT (path) DO NOTHING)
SELECT table_id FROM moved"
);

fn check_commit_version(r: &CommitLog<'_>, moved_to: i64) -> Result<()> {
    if r.version > moved_to {
        return Err(Error::internal(format!(
            "commit-log version {} is past the move's version {moved_to}",
            r.version
        )));
    }
    Ok(())
}

// The one writer of each kind of row that moves with a pointer; callers have checked that
// their transaction moved each row's table.

async fn write_snapshots(
    conn: &mut sqlx::AnyConnection,
    rows: &[(i64, NewSnapshot<'_>)],
) -> Result<()> {
    crate::db::insert_rows(
        conn,
        "INSERT INTO snapshots (table_id, snapshot_id, parent_snapshot_id, sequence_number, \
         timestamp_ms, operation, summary, schema_id, manifest_list, commit_id, \
         removals_recorded)",
        "",
        11,
        rows,
        |q, (t, r)| {
            q.bind(*t)
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
        },
    )
    .await
}

async fn write_snapshot_log(
    conn: &mut sqlx::AnyConnection,
    rows: &[(i64, LogEntry)],
) -> Result<()> {
    crate::db::insert_rows(
        conn,
        "INSERT INTO snapshot_log (table_id, seq, snapshot_id, timestamp_ms)",
        "",
        4,
        rows,
        |q, (t, e)| {
            q.bind(*t)
                .bind(e.seq)
                .bind(e.snapshot_id)
                .bind(e.timestamp_ms)
        },
    )
    .await
}

async fn write_commit_log(
    conn: &mut sqlx::AnyConnection,
    rows: &[(i64, CommitLog<'_>)],
) -> Result<()> {
    crate::db::insert_rows(
        conn,
        "INSERT INTO commits (table_id, commit_id, snapshot_id, sequence_number, version, \
         parent_snapshot_id, operation, client, committed_at_ms, request_digest, principal)",
        "",
        11,
        rows,
        |q, (t, r)| {
            q.bind(*t)
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
        },
    )
    .await
}

/// With `retention`, the refs' retention settings are set to it; without, an existing ref
/// keeps its own (a new one gets the defaults).
async fn write_refs(
    conn: &mut sqlx::AnyConnection,
    rows: &[(i64, RefHead<'_>)],
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
    crate::db::insert_rows(
        conn,
        "INSERT INTO refs (table_id, name, snapshot_id, ref_type, min_snapshots_to_keep, \
         max_snapshot_age_ms, max_ref_age_ms)",
        &format!(
            "ON CONFLICT (table_id, name) DO UPDATE SET snapshot_id = excluded.snapshot_id, \
             ref_type = excluded.ref_type{keep}"
        ),
        7,
        rows,
        |q, (t, h)| {
            q.bind(*t)
                .bind(h.name)
                .bind(h.snapshot_id)
                .bind(h.ref_type)
                .bind(r.min_snapshots_to_keep)
                .bind(r.max_snapshot_age_ms)
                .bind(r.max_ref_age_ms)
        },
    )
    .await
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

    /// A catalog whose table `ns.t` has one snapshot.
    async fn table_with_a_snapshot(
        dir: &std::path::Path,
    ) -> (crate::Catalog, crate::ident::TableIdent) {
        let (catalog, ident, t) = catalog_with_table(dir).await;
        catalog
            .commit(
                &crate::auth::Caller::unrestricted(),
                append_one(&ident, &t, 1, true),
            )
            .await
            .unwrap();
        (catalog, ident)
    }

    #[tokio::test]
    async fn a_swap_passes_only_from_the_version_and_snapshot_it_expects() {
        let dir = tempfile::tempdir().unwrap();
        let (catalog, ident) = table_with_a_snapshot(dir.path()).await;
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

    #[tokio::test]
    async fn a_batched_move_writes_rows_only_for_the_tables_it_moved() {
        let dir = tempfile::tempdir().unwrap();
        let (catalog, ident) = table_with_a_snapshot(dir.path()).await;
        let db = &catalog.shared().db;
        let row = db.table(&ident).await.unwrap();
        let at = Expected::of(&row);
        // A table that is not as expected (here: gone) moves nothing and gets no rows.
        let gone = Expected {
            table_id: at.table_id + 1000,
            ..at
        };
        let to = target(at.version + 1, row.current_snapshot_id);
        let rows = |tables: &[i64]| BatchRows {
            log: tables
                .iter()
                .map(|t| {
                    let e = LogEntry {
                        seq: at.version + 1,
                        snapshot_id: row.current_snapshot_id.unwrap(),
                        timestamp_ms: 1,
                    };
                    (*t, e)
                })
                .collect(),
            ..Default::default()
        };
        let twice = [(at, to.clone()), (at, to.clone())];
        assert!(
            move_all(db, &twice, &rows(&[])).await.is_err(),
            "one swap a table"
        );
        let back = [(at, target(at.version, None))];
        assert!(
            move_all(db, &back, &rows(&[])).await.is_err(),
            "forward only"
        );
        let unswapped = move_all(db, &[(gone, to.clone())], &rows(&[at.table_id])).await;
        assert!(
            matches!(unswapped, Err(Error::Internal { .. })),
            "{unswapped:?}"
        );
        assert_eq!(db.table(&ident).await.unwrap().version, at.version);

        let both = [(gone, to.clone()), (at, to.clone())];
        let moved = move_all(db, &both, &rows(&[gone.table_id, at.table_id]))
            .await
            .unwrap();
        assert_eq!(moved, [at.table_id].into());
        assert_eq!(db.table(&ident).await.unwrap().version, at.version + 1);
        let logged: Vec<(i64,)> =
            sqlx::query_as("SELECT table_id FROM snapshot_log WHERE seq = $1")
                .bind(at.version + 1)
                .fetch_all(&db.pool)
                .await
                .unwrap();
        assert_eq!(logged, [(at.table_id,)]);
        // The old expectation is stale now: a second batch moves nothing.
        let again = [(at, target(at.version + 2, None))];
        assert!(move_all(db, &again, &rows(&[])).await.unwrap().is_empty());
    }
}
