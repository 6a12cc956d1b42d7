//! Fixtures of the core's unit tests: a catalog on a temp dir with one table, and appends
//! of real (tiny) Parquet files to it.

use std::collections::HashMap;
use std::sync::Arc;

use crate::catalog::{Catalog, CatalogConfig};
use crate::ident::TableIdent;
use crate::model::*;
use crate::storage::WarehouseConfig;

/// A Parquet file of one nullable `long` column `id` (field id 1) holding `ids`.
pub(crate) fn test_parquet(ids: &[i64]) -> Vec<u8> {
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema as ArrowSchema};
    let field = Field::new("id", DataType::Int64, true).with_metadata(HashMap::from([(
        parquet::arrow::PARQUET_FIELD_ID_META_KEY.to_string(),
        "1".to_string(),
    )]));
    let schema = Arc::new(ArrowSchema::new(vec![field]));
    let batch = arrow::record_batch::RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(Int64Array::from(ids.to_vec()))],
    )
    .unwrap();
    let mut out = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    out
}

/// A catalog in `dir` (SQLite + local warehouse) with table `ns.t` of one `id long` column.
pub(crate) async fn catalog_with_table(dir: &std::path::Path) -> (Catalog, TableIdent, TableInfo) {
    let root = format!("file://{}", dir.join("w").display());
    let catalog = Catalog::open(
        CatalogConfig {
            catalog_url: format!("sqlite://{}", dir.join("c.db").display()),
            warehouse: WarehouseConfig::new(&root),
        },
        crate::env::Env::default(),
    )
    .await
    .unwrap();
    catalog
        .create_namespace(&crate::auth::Caller::unrestricted(), "ns", HashMap::new())
        .await
        .unwrap();
    let ident = TableIdent::new("ns", "t");
    let t = catalog
        .create_table(
            &crate::auth::Caller::unrestricted(),
            &ident,
            CreateTable {
                fields: vec![FieldSpec {
                    name: "id".into(),
                    type_json: "long".into(),
                    required: false,
                    doc: None,
                }],
                partition_by: vec![],
                location: None,
                properties: HashMap::new(),
                table_uuid: None,
            },
        )
        .await
        .unwrap();
    (catalog, ident, t)
}

/// Writes `data/f<i>.parquet` (holding id `i`) under `t` and returns the request appending
/// it with commit id `c<i>`, with statistics or for the footer to be read.
pub(crate) fn append_one(
    ident: &TableIdent,
    t: &TableInfo,
    i: i64,
    with_stats: bool,
) -> CommitRequest {
    let path = format!("{}/data/f{i}.parquet", t.location);
    let bytes = test_parquet(&[i]);
    let local = path.strip_prefix("file://").unwrap().to_string();
    std::fs::create_dir_all(std::path::Path::new(&local).parent().unwrap()).unwrap();
    std::fs::write(&local, &bytes).unwrap();
    CommitRequest {
        ident: ident.clone(),
        commit_id: format!("c{i}"),
        base_snapshot_id: None,
        operation: Operation::Append {
            add: vec![NewFile {
                path,
                file_size_bytes: bytes.len() as u64,
                stats: with_stats.then(|| FileStatsSpec {
                    record_count: 1,
                    columns: HashMap::new(),
                    partition: serde_json::Map::new(),
                    split_offsets: vec![],
                }),
            }],
        },
        summary: HashMap::new(),
        client: "test".into(),
    }
}

/// The live data files of snapshot `id` of `ident`.
pub(crate) async fn files_of(catalog: &Catalog, ident: &TableIdent, id: i64) -> Vec<String> {
    let plan = catalog
        .plan_scan(
            &crate::auth::Caller::unrestricted(),
            ident,
            &crate::scan::SnapshotSelector::Id(id),
            None,
        )
        .await
        .unwrap();
    plan.files.into_iter().map(|f| f.path).collect()
}

/// The seed of a seeded randomized test: `FIRN_SEED` when set (to replay a run), else
/// `default`.
pub(crate) fn seed(default: u64) -> u64 {
    std::env::var("FIRN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
