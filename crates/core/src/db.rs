//! The catalog database (SQLite or PostgreSQL through sqlx).
//!
//! The schema lives in `catalog-schema/<backend>/` as versioned migrations, applied at
//! start. Every statement here is written once, in the dialect both backends accept.
//!
//! Durability: SQLite runs in WAL mode with `synchronous=FULL`, so a transaction is on disk
//! (fsynced) when `COMMIT` returns; PostgreSQL's defaults do the same.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor, Row};

use crate::error::{Error, ObjectKind, Result};
use crate::ident::TableIdent;
use crate::model::{DEFAULT_WAREHOUSE, NamespaceInfo, SnapshotInfo};
use crate::storage::{Root, WarehouseConfig};

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../catalog-schema/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator =
    sqlx::migrate!("../../catalog-schema/postgres");

/// Which database the catalog runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A connection pool to the catalog database.
#[derive(Debug, Clone)]
pub struct Db {
    pub(crate) pool: AnyPool,
    backend: Backend,
}

/// A table's catalog row.
#[derive(Debug, Clone)]
pub(crate) struct TableRow {
    pub table_id: i64,
    pub ident: TableIdent,
    pub table_uuid: String,
    pub location: String,
    pub version: i64,
    pub base_metadata: String,
    pub current_snapshot_id: Option<i64>,
    pub last_sequence_number: i64,
    pub last_updated_ms: i64,
    pub metadata_location: String,
    pub metadata_version: i64,
    /// The last version that did more than append to the history (0: none); see
    /// `table::history`.
    pub history_rewritten_version: i64,
}

/// A commit already recorded in the commit log.
#[derive(Debug, Clone)]
pub(crate) struct RecordedCommit {
    pub commit_id: String,
    pub snapshot_id: i64,
    pub sequence_number: i64,
    pub version: i64,
    pub parent_snapshot_id: Option<i64>,
    /// The digest of the request that made it (none for commits recorded before digests).
    pub request_digest: Option<String>,
}

impl RecordedCommit {
    /// The outcome to answer a retry with digest `digest`: the recorded one, or, when the
    /// id was used for a different request, `InvalidArgument` (final: use a new id).
    pub(crate) fn replay(&self, digest: &str) -> crate::error::Result<crate::model::CommitOutcome> {
        match &self.request_digest {
            Some(d) if d != digest => Err(Error::invalid(
                "commit_id",
                format!(
                    "{} was used for a different request (snapshot {}); a retry must send the \
                     same request, and a new request needs a new commit id",
                    self.commit_id, self.snapshot_id
                ),
            )),
            _ => Ok(self.outcome()),
        }
    }

    /// The outcome to answer a retry of this commit with.
    pub(crate) fn outcome(&self) -> crate::model::CommitOutcome {
        crate::model::CommitOutcome {
            snapshot_id: self.snapshot_id,
            sequence_number: self.sequence_number,
            version: self.version,
            parent_snapshot_id: self.parent_snapshot_id,
            replayed: true,
        }
    }
}

const TABLE_COLUMNS: &str = "table_id, namespace, name, table_uuid, location, version, \
    base_metadata, current_snapshot_id, last_sequence_number, last_updated_ms, \
    metadata_location, metadata_version, history_rewritten_version";

fn table_row(r: &sqlx::any::AnyRow) -> Result<TableRow> {
    Ok(TableRow {
        table_id: r.try_get("table_id")?,
        ident: TableIdent::new(
            r.try_get::<String, _>("namespace")?,
            r.try_get::<String, _>("name")?,
        ),
        table_uuid: r.try_get("table_uuid")?,
        location: r.try_get("location")?,
        version: r.try_get("version")?,
        base_metadata: r.try_get("base_metadata")?,
        current_snapshot_id: r.try_get("current_snapshot_id")?,
        last_sequence_number: r.try_get("last_sequence_number")?,
        last_updated_ms: r.try_get("last_updated_ms")?,
        metadata_location: r.try_get("metadata_location")?,
        metadata_version: r.try_get("metadata_version")?,
        history_rewritten_version: r.try_get("history_rewritten_version")?,
    })
}

pub(crate) fn snapshot_row(r: &sqlx::any::AnyRow) -> Result<SnapshotInfo> {
    let summary: String = r.try_get("summary")?;
    Ok(SnapshotInfo {
        snapshot_id: r.try_get("snapshot_id")?,
        parent_snapshot_id: r.try_get("parent_snapshot_id")?,
        sequence_number: r.try_get("sequence_number")?,
        timestamp_ms: r.try_get("timestamp_ms")?,
        operation: r.try_get("operation")?,
        summary: serde_json::from_str(&summary)
            .map_err(|e| Error::internal_from("corrupt snapshot summary in catalog", e))?,
        manifest_list: r.try_get("manifest_list")?,
        schema_id: r.try_get::<i64, _>("schema_id")? as i32,
        commit_id: r.try_get("commit_id")?,
    })
}

pub(crate) const SNAPSHOT_COLUMNS: &str = "snapshot_id, parent_snapshot_id, sequence_number, \
    timestamp_ms, operation, summary, schema_id, manifest_list, commit_id";

/// Deletes the rows of `table` (one keyed by `(table_id, path)`: `pending_deletes`,
/// `write_intents`, `metadata_files`) for `paths`.
pub(crate) async fn forget_paths(
    conn: &mut sqlx::AnyConnection,
    table: &'static str,
    table_id: i64,
    paths: &[impl AsRef<str>],
) -> Result<()> {
    for chunk in paths.chunks(500) {
        let q = format!(
            "DELETE FROM {table} WHERE table_id = $1 AND path IN ({})",
            placeholders(2, chunk.len())
        );
        let mut query = sqlx::query(&q).bind(table_id);
        for p in chunk {
            query = query.bind(p.as_ref());
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// [`Db::record_metadata_file`] in the caller's transaction (create, register).
pub(crate) async fn insert_metadata_file(
    conn: &mut sqlx::AnyConnection,
    table_id: i64,
    location: &str,
    version: i64,
    now_ms: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO metadata_files (table_id, path, version, created_at_ms) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (table_id, path) DO NOTHING",
    )
    .bind(table_id)
    .bind(location)
    .bind(version)
    .bind(now_ms)
    .execute(conn)
    .await?;
    Ok(())
}

// ---- objects awaiting deletion (`pending_deletes`) --------------------------------

/// What kind of object a [`Doomed`] is (its `pending_deletes.kind`).
pub(crate) const KIND_DATA: &str = "data";
pub(crate) const KIND_DELETE: &str = "delete";
pub(crate) const KIND_MANIFEST: &str = "manifest";
pub(crate) const KIND_MANIFEST_LIST: &str = "manifest-list";
pub(crate) const KIND_METADATA: &str = "metadata";

/// An object to delete.
#[derive(Debug, Clone)]
pub(crate) struct Doomed {
    pub path: String,
    pub kind: &'static str,
    /// Bytes, or -1 when unknown (read before deleting).
    pub size: i64,
}

/// Records objects to delete in `pending_deletes` (every expiry run deletes them first).
pub(crate) async fn record_doomed(
    conn: &mut sqlx::AnyConnection,
    table_id: i64,
    doomed: &[Doomed],
    now_ms: i64,
) -> Result<()> {
    insert_rows(
        conn,
        "INSERT INTO pending_deletes (table_id, path, kind, size_bytes, recorded_at_ms)",
        "ON CONFLICT (table_id, path) DO NOTHING",
        5,
        doomed,
        |q, d| {
            q.bind(table_id)
                .bind(&d.path)
                .bind(d.kind)
                .bind(d.size)
                .bind(now_ms)
        },
    )
    .await?;
    // A doomed object's copy in the catalog (if not yet written behind its commit) goes with
    // the decision, so nothing writes the object again after it is deleted.
    let paths: Vec<String> = doomed.iter().map(|d| d.path.clone()).collect();
    delete_pending(conn, &paths).await
}

/// A statement with its arguments, as sqlx builds one for either backend.
pub(crate) type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// Most rows one multi-row statement carries (at 11 columns, well under SQLite's 32,766
/// parameters).
const MAX_ROWS_PER_STATEMENT: usize = 256;

/// Splits `n` rows into consecutive runs whose lengths are powers of two, at most
/// [`MAX_ROWS_PER_STATEMENT`], longest first. A multi-row statement then comes in at most
/// nine shapes, which each connection prepares once and keeps in its statement cache; one
/// shape per row count would be prepared afresh (a round trip more) on PostgreSQL.
pub(crate) fn row_runs(n: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let mut start = 0;
    std::iter::from_fn(move || {
        let left = n - start;
        if left == 0 {
            return None;
        }
        let len = if left >= MAX_ROWS_PER_STATEMENT {
            MAX_ROWS_PER_STATEMENT
        } else {
            1 << left.ilog2()
        };
        start += len;
        Some(start - len..start)
    })
}

/// Inserts `rows` with as few statements as [`row_runs`] allows: `{head} VALUES (...), ...
/// {tail}`, each row's `cols` values bound by `bind` in column order. The one writer of
/// multi-row `VALUES` lists.
pub(crate) async fn insert_rows<T>(
    conn: &mut sqlx::AnyConnection,
    head: &str,
    tail: &str,
    cols: usize,
    rows: &[T],
    bind: impl for<'q> Fn(AnyQuery<'q>, &'q T) -> AnyQuery<'q>,
) -> Result<()> {
    for run in row_runs(rows.len()) {
        let sql = format!("{head} VALUES {} {tail}", row_placeholders(run.len(), cols));
        let mut query = sqlx::query(&sql);
        for r in &rows[run] {
            query = bind(query, r);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// `$first, $first+1, ...` — `n` placeholders for an `IN (...)` list.
pub(crate) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `($1, ..., $cols), ($cols+1, ...), ...` — placeholders for a multi-row `VALUES` list of
/// `rows` rows, bound row by row.
pub(crate) fn row_placeholders(rows: usize, cols: usize) -> String {
    (0..rows)
        .map(|i| format!("({})", placeholders(i * cols + 1, cols)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Forgets pending objects that are now durable in the store.
pub(crate) async fn delete_pending(conn: &mut sqlx::AnyConnection, paths: &[String]) -> Result<()> {
    for chunk in paths.chunks(500) {
        let q = format!(
            "DELETE FROM pending_objects WHERE path IN ({})",
            placeholders(1, chunk.len())
        );
        let mut query = sqlx::query(&q);
        for p in chunk {
            query = query.bind(p);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

impl Db {
    /// Connects to `url` (`sqlite://path` or `postgres://...`) and applies the migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(Error::invalid(
                "catalog-url",
                format!("{url:?}: use sqlite://PATH or postgres://..."),
            ));
        };
        let mut url = url.to_string();
        if backend == Backend::Sqlite && !url.contains("mode=") && !url.contains(":memory:") {
            url.push_str(if url.contains('?') {
                "&mode=rwc"
            } else {
                "?mode=rwc"
            });
        }
        let opts = AnyConnectOptions::from_str(&url)
            .map_err(|e| Error::invalid("catalog-url", format!("{url:?}: {e}")))?;
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 8 } else { 16 })
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute(
                            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; \
                             PRAGMA busy_timeout=30000; PRAGMA foreign_keys=ON;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(opts)
            .await?;
        let migrator = match backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator
            .run(&pool)
            .await
            .map_err(|e| Error::internal_from("applying catalog migrations", e))?;
        Ok(Self { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Runs one statement as a transaction of its own (autocommit: durable when it returns;
    /// for tools and benchmarks).
    pub async fn execute_durable(&self, sql: &str) -> Result<()> {
        sqlx::query(sql).execute(&self.pool).await?;
        Ok(())
    }

    // ---- warehouses ------------------------------------------------------------------

    /// Records a named warehouse at `root`; `AlreadyExists` when the name or the URL is
    /// taken, `InvalidArgument` when `root` nests with a recorded warehouse's root. The check
    /// and the insert hold the catalog's warehouses lock, so replicas creating warehouses at
    /// once cannot record nesting roots.
    pub(crate) async fn create_warehouse(
        &self,
        name: &str,
        config: &WarehouseConfig,
        root: &Root,
        now_ms: i64,
    ) -> Result<()> {
        let options = serde_json::to_string(&config.options).expect("string map serialises");
        let mut tx = self.pool.begin().await?;
        lock_warehouses(&mut tx).await?;
        for r in sqlx::query("SELECT name, url FROM warehouses")
            .fetch_all(&mut *tx)
            .await?
        {
            let (other, url): (String, String) = (r.try_get(0)?, r.try_get(1)?);
            if Root::parse(&url).is_ok_and(|r| r.overlaps(root)) {
                return Err(crate::storage::registry::overlap(&root.url(), &other, &url));
            }
        }
        sqlx::query(
            "INSERT INTO warehouses (name, url, options, created_at_ms) VALUES ($1, $2, $3, $4)",
        )
        .bind(name)
        .bind(&config.url)
        .bind(options)
        .bind(now_ms)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                Error::AlreadyExists {
                    kind: ObjectKind::Warehouse,
                    name: format!("{name} (or one at {})", config.url),
                }
            } else {
                e.into()
            }
        })?;
        tx.commit().await?;
        Ok(())
    }

    /// Every named warehouse recorded in the catalog, by name.
    pub(crate) async fn list_warehouses(&self) -> Result<Vec<(String, WarehouseConfig)>> {
        let rows = sqlx::query("SELECT name, url, options FROM warehouses ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let options: String = r.try_get(2)?;
                Ok((
                    r.try_get(0)?,
                    WarehouseConfig {
                        url: r.try_get(1)?,
                        options: serde_json::from_str(&options).map_err(|e| {
                            Error::internal_from("corrupt warehouse options in catalog", e)
                        })?,
                    },
                ))
            })
            .collect()
    }

    /// Forgets a named warehouse; `FailedPrecondition` while a namespace is bound to it.
    pub(crate) async fn drop_warehouse(&self, name: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        // Serialised with namespace creation in recorded warehouses (see create_namespace).
        lock_warehouses(&mut tx).await?;
        let exists = sqlx::query("SELECT 1 FROM warehouses WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if !exists {
            return Err(Error::not_found(ObjectKind::Warehouse, name));
        }
        let used = sqlx::query("SELECT 1 FROM namespaces WHERE warehouse = $1")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if used {
            return Err(Error::FailedPrecondition(format!(
                "warehouse {name} still holds namespaces: drop them first"
            )));
        }
        sqlx::query("DELETE FROM warehouses WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- namespaces ------------------------------------------------------------------

    /// Inserts a namespace. With `recorded`, its warehouse is one recorded in the catalog,
    /// and the insert holds the warehouses lock and refuses (`NotFound`) a warehouse dropped
    /// meanwhile, so a namespace is never bound to a warehouse that is gone.
    pub(crate) async fn create_namespace(
        &self,
        ns: &NamespaceInfo,
        recorded: bool,
        now_ms: i64,
    ) -> Result<()> {
        let props = serde_json::to_string(&ns.properties).expect("string map serialises");
        let mut tx = self.pool.begin().await?;
        if recorded {
            lock_warehouses(&mut tx).await?;
            sqlx::query("SELECT 1 FROM warehouses WHERE name = $1")
                .bind(&ns.warehouse)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| Error::not_found(ObjectKind::Warehouse, &ns.warehouse))?;
        }
        sqlx::query(
            "INSERT INTO namespaces (name, properties, created_at_ms, warehouse) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&ns.name)
        .bind(props)
        .bind(now_ms)
        .bind(warehouse_column(&ns.warehouse))
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                Error::AlreadyExists {
                    kind: ObjectKind::Namespace,
                    name: ns.name.clone(),
                }
            } else {
                e.into()
            }
        })?;
        tx.commit().await?;
        Ok(())
    }

    /// One trivial query: whether the database answers (`Unavailable` if not).
    pub(crate) async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| Error::Unavailable {
                what: "catalog database",
                source: Box::new(e),
            })?;
        Ok(())
    }

    pub(crate) async fn list_namespaces(&self) -> Result<Vec<NamespaceInfo>> {
        let rows = sqlx::query("SELECT name, properties, warehouse FROM namespaces ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(namespace_row).collect()
    }

    pub(crate) async fn get_namespace(&self, name: &str) -> Result<NamespaceInfo> {
        let row = sqlx::query("SELECT name, properties, warehouse FROM namespaces WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::not_found(ObjectKind::Namespace, name))?;
        namespace_row(&row)
    }

    pub(crate) async fn update_namespace_properties(
        &self,
        name: &str,
        removals: &[String],
        updates: HashMap<String, String>,
    ) -> Result<crate::model::PropertiesUpdate> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query("SELECT name, properties, warehouse FROM namespaces WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| Error::not_found(ObjectKind::Namespace, name))?;
        let mut props = namespace_row(&row)?.properties;
        let mut out = crate::model::PropertiesUpdate::default();
        for k in removals {
            if props.remove(k).is_some() {
                out.removed.push(k.clone());
            } else {
                out.missing.push(k.clone());
            }
        }
        for (k, v) in updates {
            props.insert(k.clone(), v);
            out.updated.push(k);
        }
        out.updated.sort();
        let text = serde_json::to_string(&props).expect("string map serialises");
        sqlx::query("UPDATE namespaces SET properties = $1 WHERE name = $2")
            .bind(text)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(out)
    }

    pub(crate) async fn drop_namespace(&self, name: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let deleted = sqlx::query(
            "DELETE FROM namespaces WHERE name = $1 \
             AND NOT EXISTS (SELECT 1 FROM tables WHERE namespace = $1)",
        )
        .bind(name)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if deleted == 0 {
            let exists = sqlx::query("SELECT 1 FROM namespaces WHERE name = $1")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
            return Err(if exists {
                Error::FailedPrecondition(format!(
                    "namespace {name} is not empty: drop its tables first"
                ))
            } else {
                Error::not_found(ObjectKind::Namespace, name)
            });
        }
        // Grants go with the namespace, as in PostgreSQL.
        sqlx::query("DELETE FROM grants WHERE namespace = $1 AND table_id = 0")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- tables ----------------------------------------------------------------------

    /// Every table's id and location.
    pub(crate) async fn table_locations(&self) -> Result<Vec<(i64, String)>> {
        let rows = sqlx::query("SELECT table_id, location FROM tables")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    pub(crate) async fn table(&self, ident: &TableIdent) -> Result<TableRow> {
        let q = format!("SELECT {TABLE_COLUMNS} FROM tables WHERE namespace = $1 AND name = $2");
        let row = sqlx::query(&q)
            .bind(&ident.namespace)
            .bind(&ident.name)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(r) => table_row(&r),
            None => {
                // Say which part is missing.
                self.get_namespace(&ident.namespace).await?;
                Err(Error::not_found(ObjectKind::Table, ident.to_string()))
            }
        }
    }

    pub(crate) async fn table_by_id(&self, table_id: i64) -> Result<Option<TableRow>> {
        let q = format!("SELECT {TABLE_COLUMNS} FROM tables WHERE table_id = $1");
        let row = sqlx::query(&q)
            .bind(table_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(table_row).transpose()
    }

    pub(crate) async fn list_tables(&self, namespace: &str) -> Result<Vec<TableIdent>> {
        self.get_namespace(namespace).await?;
        let rows =
            sqlx::query("SELECT namespace, name FROM tables WHERE namespace = $1 ORDER BY name")
                .bind(namespace)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok(TableIdent::new(
                    r.try_get::<String, _>(0)?,
                    r.try_get::<String, _>(1)?,
                ))
            })
            .collect()
    }

    pub(crate) async fn drop_table(&self, ident: &TableIdent) -> Result<()> {
        let row = self.table(ident).await?;
        let mut tx = self.pool.begin().await?;
        for t in [
            "snapshots",
            "snapshot_log",
            "refs",
            "commits",
            "table_files",
            "file_removals",
            // A grant goes with its table: one made later with the name is another table.
            "grants",
        ] {
            sqlx::query(&format!("DELETE FROM {t} WHERE table_id = $1"))
                .bind(row.table_id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("DELETE FROM tables WHERE table_id = $1")
            .bind(row.table_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn rename_table(&self, from: &TableIdent, to: &TableIdent) -> Result<()> {
        let row = self.table(from).await?;
        self.get_namespace(&to.namespace).await?;
        sqlx::query("UPDATE tables SET namespace = $1, name = $2 WHERE table_id = $3")
            .bind(&to.namespace)
            .bind(&to.name)
            .bind(row.table_id)
            .execute(&self.pool)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    Error::AlreadyExists {
                        kind: ObjectKind::Table,
                        name: to.to_string(),
                    }
                } else {
                    e.into()
                }
            })?;
        Ok(())
    }

    /// Records a newer materialised metadata file, unless a newer one is recorded already.
    pub(crate) async fn set_metadata_location(
        &self,
        table_id: i64,
        location: &str,
        version: i64,
        now_ms: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE tables SET metadata_location = $1, metadata_version = $2 \
             WHERE table_id = $3 AND metadata_version < $2",
        )
        .bind(location)
        .bind(version)
        .bind(table_id)
        .execute(&self.pool)
        .await?;
        self.record_metadata_file(table_id, location, version, now_ms)
            .await
    }

    /// Remembers a metadata file written for the table, so expiry can delete it later
    /// without listing (every file, also one that lost a race to be the newest).
    pub(crate) async fn record_metadata_file(
        &self,
        table_id: i64,
        location: &str,
        version: i64,
        now_ms: i64,
    ) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        insert_metadata_file(&mut conn, table_id, location, version, now_ms).await
    }

    // ---- snapshots -------------------------------------------------------------------

    /// Snapshots in commit order (by sequence number), after `after_seq`.
    pub(crate) async fn snapshots(
        &self,
        table_id: i64,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<SnapshotInfo>> {
        let q = format!(
            "SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE table_id = $1 AND sequence_number > $2 \
             ORDER BY sequence_number LIMIT $3"
        );
        let rows = sqlx::query(&q)
            .bind(table_id)
            .bind(after_seq)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(snapshot_row).collect()
    }

    pub(crate) async fn snapshot(
        &self,
        table_id: i64,
        snapshot_id: i64,
    ) -> Result<Option<SnapshotInfo>> {
        let q = format!(
            "SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE table_id = $1 AND snapshot_id = $2"
        );
        let row = sqlx::query(&q)
            .bind(table_id)
            .bind(snapshot_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(snapshot_row).transpose()
    }

    /// The snapshots of `ids` that the table has, in sequence order.
    pub(crate) async fn snapshots_by_id(
        &self,
        table_id: i64,
        ids: &[i64],
    ) -> Result<Vec<SnapshotInfo>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let q = format!(
                "SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE table_id = $1 \
                 AND snapshot_id IN ({})",
                placeholders(2, chunk.len())
            );
            let mut q = sqlx::query(&q).bind(table_id);
            for id in chunk {
                q = q.bind(*id);
            }
            for r in q.fetch_all(&self.pool).await? {
                out.push(snapshot_row(&r)?);
            }
        }
        out.sort_by_key(|s| s.sequence_number);
        Ok(out)
    }

    /// The snapshot-log entries of versions in `(after_version, max_version]`, oldest
    /// first: `(version, snapshot id, timestamp)`.
    pub(crate) async fn snapshot_log_between(
        &self,
        table_id: i64,
        after_version: i64,
        max_version: i64,
    ) -> Result<Vec<(i64, i64, i64)>> {
        let rows = sqlx::query(
            "SELECT seq, snapshot_id, timestamp_ms FROM snapshot_log WHERE table_id = $1 \
             AND seq > $2 AND seq <= $3 ORDER BY seq",
        )
        .bind(table_id)
        .bind(after_version)
        .bind(max_version)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
    }

    /// The last snapshot-log entry up to `max_version`: `(version, snapshot id, timestamp)`.
    pub(crate) async fn last_snapshot_log(
        &self,
        table_id: i64,
        max_version: i64,
    ) -> Result<Option<(i64, i64, i64)>> {
        let row = sqlx::query(
            "SELECT seq, snapshot_id, timestamp_ms FROM snapshot_log WHERE table_id = $1 \
             AND seq <= $2 ORDER BY seq DESC LIMIT 1",
        )
        .bind(table_id)
        .bind(max_version)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .transpose()
    }

    /// The snapshot a tag or branch points at.
    pub(crate) async fn ref_snapshot(&self, table_id: i64, name: &str) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT snapshot_id FROM refs WHERE table_id = $1 AND name = $2")
            .bind(table_id)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// The snapshot the snapshot log says was current at `ms` (up to table version
    /// `max_version`).
    pub(crate) async fn snapshot_as_of(
        &self,
        table_id: i64,
        ms: i64,
        max_version: i64,
    ) -> Result<Option<i64>> {
        let row = sqlx::query(
            "SELECT snapshot_id FROM snapshot_log WHERE table_id = $1 AND timestamp_ms <= $2 \
             AND seq <= $3 ORDER BY seq DESC LIMIT 1",
        )
        .bind(table_id)
        .bind(ms)
        .bind(max_version)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    // ---- commits ---------------------------------------------------------------------

    /// The newest `limit` entries of a table's commit log, newest first.
    pub(crate) async fn commit_log(
        &self,
        table_id: i64,
        limit: i64,
    ) -> Result<Vec<crate::model::CommitRecord>> {
        let rows = sqlx::query(
            "SELECT commit_id, snapshot_id, parent_snapshot_id, sequence_number, operation, \
             principal, client, committed_at_ms FROM commits WHERE table_id = $1 \
             ORDER BY version DESC, committed_at_ms DESC, commit_id LIMIT $2",
        )
        .bind(table_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(crate::model::CommitRecord {
                    commit_id: r.try_get(0)?,
                    snapshot_id: r.try_get(1)?,
                    parent_snapshot_id: r.try_get(2)?,
                    sequence_number: r.try_get(3)?,
                    operation: r.try_get(4)?,
                    principal: r.try_get(5)?,
                    client: r.try_get(6)?,
                    committed_at_ms: r.try_get(7)?,
                })
            })
            .collect()
    }

    /// Rows of `table` whose `(table_id, key_col)` is among `keys`, in few round trips:
    /// one `UNION ALL` arm per table, so every arm uses the primary-key index.
    async fn lookup_keys(
        &self,
        columns: &str,
        table: &str,
        key_col: &str,
        keys: &[(i64, Vec<&str>)],
    ) -> Result<Vec<sqlx::any::AnyRow>> {
        const MAX_PARAMS: usize = 900;
        let mut rows = Vec::new();
        let mut arms: Vec<String> = Vec::new();
        let mut binds: Vec<(i64, Vec<&str>)> = Vec::new();
        let mut n = 0usize;
        type Binds<'a> = Vec<(i64, Vec<&'a str>)>;
        fn flush<'a>(
            arms: &mut Vec<String>,
            binds: &mut Binds<'a>,
            n: &mut usize,
        ) -> (String, Binds<'a>) {
            let q = arms.join(" UNION ALL ");
            arms.clear();
            *n = 0;
            (q, std::mem::take(binds))
        }
        let mut queries = Vec::new();
        for (table_id, values) in keys {
            for chunk in values.chunks(MAX_PARAMS / 2) {
                if n + chunk.len() + 1 > MAX_PARAMS && !arms.is_empty() {
                    queries.push(flush(&mut arms, &mut binds, &mut n));
                }
                arms.push(format!(
                    "SELECT {columns} FROM {table} WHERE table_id = ${} AND {key_col} IN ({})",
                    n + 1,
                    placeholders(n + 2, chunk.len())
                ));
                n += chunk.len() + 1;
                binds.push((*table_id, chunk.to_vec()));
            }
        }
        if !arms.is_empty() {
            queries.push(flush(&mut arms, &mut binds, &mut n));
        }
        for (q, binds) in queries {
            let mut query = sqlx::query(&q);
            for (table_id, values) in binds {
                query = query.bind(table_id);
                for v in values {
                    query = query.bind(v);
                }
            }
            rows.extend(query.fetch_all(&self.pool).await?);
        }
        Ok(rows)
    }

    /// The recorded commits among `ids` (per table).
    pub(crate) async fn recorded_commits(
        &self,
        ids: &[(i64, Vec<&str>)],
    ) -> Result<HashMap<(i64, String), RecordedCommit>> {
        let rows = self
            .lookup_keys(
                "table_id, commit_id, snapshot_id, sequence_number, version, parent_snapshot_id, \
                 request_digest",
                "commits",
                "commit_id",
                ids,
            )
            .await?;
        rows.iter()
            .map(|r| {
                let c = RecordedCommit {
                    commit_id: r.try_get(1)?,
                    snapshot_id: r.try_get(2)?,
                    sequence_number: r.try_get(3)?,
                    version: r.try_get(4)?,
                    parent_snapshot_id: r.try_get(5)?,
                    request_digest: r.try_get(6)?,
                };
                Ok(((r.try_get(0)?, c.commit_id.clone()), c))
            })
            .collect()
    }

    /// Which of `paths` were ever committed to their table.
    pub(crate) async fn known_paths(
        &self,
        paths: &[(i64, Vec<&str>)],
    ) -> Result<HashSet<(i64, String)>> {
        let rows = self
            .lookup_keys("table_id, path", "table_files", "path", paths)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// [`forget_paths`] on a pooled connection.
    pub(crate) async fn forget_paths(
        &self,
        table: &'static str,
        table_id: i64,
        paths: &[String],
    ) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        forget_paths(&mut conn, table, table_id, paths).await
    }

    /// Object bytes kept until the store held them durably.
    pub(crate) async fn pending_objects(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let rows = sqlx::query("SELECT path, bytes FROM pending_objects")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Paths of pending objects below `location` (a table's).
    pub(crate) async fn pending_paths_under(&self, location: &str) -> Result<Vec<String>> {
        let prefix = format!("{}/", location.trim_end_matches('/'));
        // A plain comparison of a prefix: no LIKE escaping, no collation-dependent ranges.
        let rows = sqlx::query("SELECT path FROM pending_objects WHERE substr(path, 1, $2) = $1")
            .bind(&prefix)
            // INTEGER: PostgreSQL has no substr(text, int, bigint).
            .bind(i32::try_from(prefix.chars().count()).unwrap_or(i32::MAX))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// The bytes of one pending object, if it is still pending.
    pub(crate) async fn pending_object(&self, path: &str) -> Result<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT bytes FROM pending_objects WHERE path = $1")
            .bind(path)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    pub(crate) async fn clear_pending_objects(&self, paths: &[String]) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        delete_pending(&mut conn, paths).await
    }
}

fn namespace_row(r: &sqlx::any::AnyRow) -> Result<NamespaceInfo> {
    let props: String = r.try_get(1)?;
    let warehouse: String = r.try_get(2)?;
    Ok(NamespaceInfo {
        name: r.try_get(0)?,
        properties: serde_json::from_str(&props)
            .map_err(|e| Error::internal_from("corrupt namespace properties in catalog", e))?,
        warehouse: if warehouse.is_empty() {
            DEFAULT_WAREHOUSE.to_string()
        } else {
            warehouse
        },
    })
}

/// Takes the catalog's warehouses lock for the rest of `tx`: recording a warehouse, dropping
/// one and binding a namespace to one are serialised by it.
async fn lock_warehouses(tx: &mut sqlx::AnyConnection) -> Result<()> {
    sqlx::query("UPDATE catalog_locks SET n = n + 1 WHERE name = 'warehouses'")
        .execute(tx)
        .await?;
    Ok(())
}

/// How `namespaces.warehouse` spells a warehouse: '' for the server's configured one, so a
/// catalog keeps its namespaces in place when the operator moves the default elsewhere.
fn warehouse_column(name: &str) -> &str {
    if name == DEFAULT_WAREHOUSE { "" } else { name }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_runs_cover_every_row_once_in_powers_of_two() {
        for n in [0usize, 1, 2, 3, 7, 9, 255, 256, 257, 1000] {
            let runs: Vec<_> = row_runs(n).collect();
            let mut next = 0;
            for r in &runs {
                assert_eq!(r.start, next, "{n}: {runs:?}");
                assert!(r.len().is_power_of_two() && r.len() <= MAX_ROWS_PER_STATEMENT);
                next = r.end;
            }
            assert_eq!(next, n, "{n}: {runs:?}");
            assert!(
                runs.len() <= n.div_ceil(MAX_ROWS_PER_STATEMENT) + 8,
                "{n}: {runs:?}"
            );
        }
    }
}
