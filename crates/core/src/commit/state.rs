//! What the committer knows of a table between batches: its row, its current manifests
//! and totals, and what planned commits have added that the database may not hold yet.

use std::collections::HashSet;
use std::sync::Arc;

use iceberg::spec::{ManifestFile, TableMetadata};

use crate::db::TableRow;
use crate::error::{Error, Result};
use crate::storage::Warehouse;
use crate::storage::manifests::read_manifest_list;
use crate::table::parse_base;
use crate::table::{FileContext, Shared};

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Totals {
    pub(super) records: u64,
    pub(super) files: u64,
    pub(super) size: u64,
}

/// What the committer knows of a table: its row as of `row.version` and the manifests of its
/// current snapshot.
#[derive(Clone)]
pub(super) struct TableState {
    pub(super) row: TableRow,
    /// The warehouse holding the table (every object of it is read and written there).
    pub(super) warehouse: Arc<Warehouse>,
    /// The row's base metadata (schemas and specs, to read manifests with).
    pub(super) meta: Arc<TableMetadata>,
    pub(super) ctx: FileContext,
    pub(super) schema_id: i32,
    pub(super) manifests: Arc<Vec<ManifestFile>>,
    pub(super) totals: Totals,
    /// Paths added by planned commits not yet known to be in the database.
    pub(super) inflight_paths: HashSet<String>,
    /// Commit ids of planned commits not yet known to be in the database.
    pub(super) inflight_commits: HashSet<String>,
}

impl TableState {
    pub(super) async fn load(shared: &Shared, table_id: i64) -> Result<Option<Self>> {
        // A row read just before an expiry removed its (then no longer) current snapshot is
        // stale: read it again.
        for _ in 0..crate::table::metadata::MAX_STALE_READS {
            let Some(row) = shared.db.table_by_id(table_id).await? else {
                return Ok(None);
            };
            if let Some(state) = Self::load_row(shared, row).await? {
                return Ok(Some(state));
            }
        }
        Err(Error::Unavailable {
            what: "table",
            source: "the table kept changing while its state was read; try again".into(),
        })
    }

    /// The state as of `row`; `None` when the row is stale.
    pub(super) async fn load_row(shared: &Shared, row: TableRow) -> Result<Option<Self>> {
        let table_id = row.table_id;
        // Another replica's last commits may not be in the store yet.
        shared.publish_table(&row.location).await?;
        let warehouse = shared.warehouse_of(&row.location).await?;
        let (meta, ctx) = parse_base(&row)?;
        let (manifests, totals) = match row.current_snapshot_id {
            None => (Vec::new(), Totals::default()),
            Some(id) => {
                let Some(snap) = shared.db.snapshot(table_id, id).await? else {
                    return Ok(None);
                };
                let list = read_manifest_list(&warehouse, &snap.manifest_list).await?;
                let num = |k: &str| {
                    snap.summary
                        .get(k)
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0)
                };
                let totals = Totals {
                    records: num("total-records"),
                    files: num("total-data-files"),
                    size: num("total-files-size"),
                };
                (list.consume_entries().into_iter().collect(), totals)
            }
        };
        Ok(Some(Self {
            schema_id: meta.current_schema_id(),
            meta: Arc::new(meta),
            row,
            warehouse,
            ctx,
            manifests: Arc::new(manifests),
            totals,
            inflight_paths: HashSet::new(),
            inflight_commits: HashSet::new(),
        }))
    }
}
