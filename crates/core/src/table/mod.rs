//! Table state: what a table is in the catalog and what it owns.
//!
//! - [`pointer`]: the one owner of a table's row and its compare-and-swap: every change of a
//!   table (data commits, metadata commits, refs, expiry, create and register) goes through
//!   it, with the rows that move with the pointer.
//! - [`refs`]: rollback, tags and branches.
//! - [`metadata`]: Iceberg `metadata.json` files from the catalog rows, written once per
//!   version and served from memory.
//! - [`history`]: tables' rendered snapshot lists and logs, extended version by version.
//! - [`locations`]: tables never overlap; what a table owns (and so may delete).
//! - [`register`]: adopting a table another engine wrote.
//!
//! [`Shared`] is what the service, the committer and maintenance share: the catalog
//! database, the warehouse, the clock and ids, the manifest cache and the write-behind queue.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::Mutex;

use iceberg::spec::{PartitionSpec, Schema, StructType, TableMetadata};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::db::{Db, TableRow};
use crate::env::Env;
use crate::error::{Error, Result};
use crate::storage::manifests::ManifestCache;
use crate::storage::registry::Source;
use crate::storage::{ObjectPath, Owned, TableScope, Warehouse, Warehouses};

pub(crate) mod history;
pub(crate) mod locations;
pub(crate) mod metadata;
pub(crate) mod pointer;
pub mod refs;
pub(crate) mod register;

/// The parts of a table's metadata needed to check and describe its files.
#[derive(Debug, Clone)]
pub struct FileContext {
    pub location: String,
    pub schema: Arc<Schema>,
    pub spec: Arc<PartitionSpec>,
    pub partition_type: StructType,
}

impl FileContext {
    /// The checked path of an object under the table's location; refuses any other.
    pub fn check_path(&self, warehouse: &Warehouse, field: &str, path: &str) -> Result<ObjectPath> {
        let dir = warehouse.location("location", &self.location)?;
        let object = warehouse.object(path).map_err(|e| match e {
            Error::InvalidArgument { reason, .. } => Error::invalid(
                field,
                format!("{reason}, so outside the table's location {dir}"),
            ),
            other => other,
        })?;
        if !object.is_under(&dir) {
            return Err(Error::invalid(
                field,
                format!("{path} is outside the table's location {dir}"),
            ));
        }
        Ok(object)
    }
}

/// Splits a table's full Iceberg metadata into the base the `tables` row keeps (schemas,
/// specs, properties: everything that is not in rows) and its refs (kept as rows).
pub(crate) fn split_metadata(
    mut full: serde_json::Value,
) -> (
    serde_json::Value,
    serde_json::Map<String, serde_json::Value>,
) {
    let refs = match full["refs"].take() {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    if let Some(o) = full.as_object_mut() {
        for k in ["snapshots", "snapshot-log", "metadata-log"] {
            o.insert(k.into(), serde_json::json!([]));
        }
        o.insert("refs".into(), serde_json::json!({}));
        o.remove("current-snapshot-id");
    }
    (full, refs)
}

/// Parses the stored base metadata of a table.
pub(crate) fn parse_base(row: &TableRow) -> Result<(TableMetadata, FileContext)> {
    let meta: TableMetadata = serde_json::from_str(&row.base_metadata)
        .map_err(|e| Error::internal_from(format!("corrupt metadata of table {}", row.ident), e))?;
    let ctx = FileContext {
        location: row.location.clone(),
        schema: meta.current_schema().clone(),
        spec: meta.default_partition_spec().clone(),
        partition_type: meta.default_partition_type().clone(),
    };
    Ok((meta, ctx))
}

/// What the service, the committer and maintenance share.
pub(crate) struct Shared {
    pub db: Db,
    pub warehouses: Warehouses,
    pub env: Env,
    pub manifests: ManifestCache,
    /// Tables' rendered snapshot lists and logs, extended version by version.
    pub history: history::HistoryCache,
    /// Metadata files' texts lately written or read.
    pub texts: metadata::Texts,
    /// Objects written durably whose catalog copies the materializer has yet to drop.
    pub synced: Mutex<Vec<String>>,
    /// Committed staged objects, for the materializer task.
    pub to_sync: mpsc::UnboundedSender<Vec<String>>,
}

impl Shared {
    /// The warehouse holding `uri` (a table's location, or an object of a table). One that
    /// another replica created since this process last looked is loaded on the way.
    /// `FailedPrecondition` when none holds it (e.g. a warehouse declared only in another
    /// server's config file).
    pub(crate) async fn warehouse_of(&self, uri: &str) -> Result<Arc<Warehouse>> {
        if let Some(w) = self.warehouses.of(uri) {
            return Ok(w);
        }
        self.load_warehouses().await?;
        self.warehouses.of(uri).ok_or_else(|| {
            let shown: String = uri.chars().take(300).collect();
            Error::FailedPrecondition(format!(
                "{shown} is in no warehouse this server knows (one declared only in another \
                 server's config file?)"
            ))
        })
    }

    /// The warehouse called `name`, loading it from the catalog if another replica created
    /// it; `NotFound` if there is none.
    pub(crate) async fn warehouse_named(&self, name: &str) -> Result<Arc<Warehouse>> {
        if let Some(w) = self.warehouses.get(name) {
            return Ok(w);
        }
        self.load_warehouses().await?;
        self.warehouses
            .get(name)
            .ok_or_else(|| Error::not_found(crate::error::ObjectKind::Warehouse, name))
    }

    /// Opens every warehouse recorded in the catalog that this process does not know yet.
    pub(crate) async fn load_warehouses(&self) -> Result<()> {
        load_recorded(&self.db, &self.warehouses, false).await
    }

    /// Makes every committed object below a table's location readable in the store: this
    /// process's staged objects, and those another replica committed but has not written
    /// yet (from their copies in the catalog). Call before handing the table's metadata to
    /// a reader outside this process. Errors are storage errors: retry.
    pub(crate) async fn publish_table(&self, location: &str) -> Result<()> {
        let warehouse = self.warehouse_of(location).await?;
        if !warehouse.needs_sync() {
            return Ok(());
        }
        let mut attempt = 0;
        loop {
            match self.publish_table_once(&warehouse, location).await {
                Err(e) if e.is_retryable() && attempt < PUBLISH_ATTEMPTS => {
                    attempt += 1;
                    debug!(error = %e, attempt, "publishing a table's objects failed; retrying");
                    tokio::time::sleep(PUBLISH_RETRY * attempt).await;
                }
                r => return r,
            }
        }
    }

    async fn publish_table_once(&self, warehouse: &Warehouse, location: &str) -> Result<()> {
        let dir = warehouse.location("location", location)?;
        // Readable is enough: the materializer makes them durable before their catalog
        // copies go, and the reader does not wait for the disk.
        warehouse.expose(&warehouse.staged_under(&dir)).await?;
        let mut others = Vec::new();
        let rows = self.db.pending_paths_under(location).await?;
        // Rows of objects this process wrote go at the materializer's next round.
        let written: HashSet<String> = {
            let synced = self.synced.lock().expect("poisoned");
            let rows: HashSet<&String> = rows.iter().collect();
            synced
                .iter()
                .filter(|p| rows.contains(p))
                .cloned()
                .collect()
        };
        for path in rows {
            // This process's own: written (or being written) already.
            if written.contains(&path) || warehouse.is_unsynced(&path) {
                continue;
            }
            let object = warehouse.object(&path)?;
            match warehouse.head(&object).await {
                Ok(_) => continue,
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
            if let Some(bytes) = self.db.pending_object(&path).await? {
                warehouse.put(&object, bytes.into()).await?;
                others.push(object);
            }
        }
        warehouse.sync(&others).await
    }

    /// What the table of `row` owns (see [`crate::table::locations`]).
    pub(crate) async fn scope(&self, warehouse: &Warehouse, row: &TableRow) -> Result<TableScope> {
        let (props, extra) = crate::table::locations::row_properties(row);
        let others: Vec<String> = if extra {
            let all = self.db.table_locations().await?;
            all.into_iter()
                .filter(|(id, _)| *id != row.table_id)
                .map(|(_, l)| l)
                .collect()
        } else {
            Vec::new()
        };
        crate::table::locations::scope(warehouse, &row.location, props.as_ref(), &others)
    }

    /// Writes every staged object.
    pub(crate) async fn publish_all(&self) -> Result<()> {
        let all = self.warehouses.staged_all();
        self.record_published(self.warehouses.publish(&all).await)
    }

    /// Drops the catalog copies of objects now durable in the store (or deleted).
    pub(crate) async fn forget_written(&self) -> Result<()> {
        let mut done = std::mem::take(&mut *self.synced.lock().expect("poisoned"));
        done.extend(self.warehouses.take_released());
        if let Err(e) = self.db.clear_pending_objects(&done).await {
            self.synced.lock().expect("poisoned").extend(done);
            return Err(e);
        }
        Ok(())
    }

    /// Notes what a publish wrote (its catalog copies go at the materializer's next round).
    pub(crate) fn record_published(&self, p: crate::storage::Published) -> Result<()> {
        self.synced.lock().expect("poisoned").extend(p.written);
        p.error.map_or(Ok(()), Err)
    }
}

/// The objects among `paths` that the table at `location` owns (each as a deletable
/// path); any other is logged and left alone.
pub(crate) fn owned(
    warehouse: &Warehouse,
    table_id: i64,
    location: &str,
    paths: Vec<String>,
) -> Vec<(i64, Owned)> {
    let Ok(dir) = warehouse.location("location", location) else {
        warn!(
            location,
            "a table's location does not parse; deleting nothing of it"
        );
        return Vec::new();
    };
    let scope = TableScope::new(dir, []);
    paths
        .into_iter()
        .filter_map(|p| {
            let owned = warehouse.object(&p).ok().and_then(|o| scope.own(&o));
            if owned.is_none() {
                warn!(
                    path = p,
                    location, "not deleting an object outside the table"
                );
            }
            owned.map(|o| (table_id, o))
        })
        .collect()
}

/// Opens every warehouse recorded in the catalog that `warehouses` lacks. Their
/// configuration was checked against the store when they were created, so this sends no
/// request. A recorded name this server declares in its config file is refused with
/// `strict` (at start) and skipped with a warning otherwise.
pub(crate) async fn load_recorded(db: &Db, warehouses: &Warehouses, strict: bool) -> Result<()> {
    for (name, config) in db.list_warehouses().await? {
        match warehouses.source(&name) {
            None => {}
            Some(Source::Config) if strict => {
                return Err(Error::FailedPrecondition(format!(
                    "warehouse {name} is declared in the config file and also recorded in the \
                     catalog (firn warehouse create): rename one"
                )));
            }
            Some(_) => continue,
        }
        let warehouse = Warehouse::open(config).map_err(|e| {
            Error::FailedPrecondition(format!("warehouse {name} recorded in the catalog: {e}"))
        })?;
        match warehouses.insert(&name, Arc::new(warehouse), Source::Catalog) {
            Ok(()) | Err(Error::AlreadyExists { .. }) => {}
            Err(e) if strict => return Err(e),
            Err(e) => warn!(warehouse = name, error = %e, "not using a recorded warehouse"),
        }
    }
    Ok(())
}

/// How often [`Shared::publish_table`] tries again after a transient storage error.
const PUBLISH_ATTEMPTS: u32 = 5;
/// The pause before the first retry (later ones wait longer).
const PUBLISH_RETRY: std::time::Duration = std::time::Duration::from_millis(50);
