//! Materialising Iceberg `metadata.json` files from the catalog.
//!
//! The catalog database is the source of truth for a table's snapshots, log and refs; a
//! commit does not rewrite the ever-growing metadata file. When a reader asks for the
//! table's metadata location, the file for the current version is written (once per
//! version) from the database rows, so every Iceberg engine sees exactly the committed state.

use serde_json::{Value, json};

use crate::db::{Db, TableRow};
use crate::env::Env;
use crate::error::{Error, Result};
use crate::storage::Warehouse;

/// The metadata JSON of `row`'s version.
pub(crate) async fn render(db: &Db, row: &TableRow) -> Result<String> {
    let mut v: Value = serde_json::from_str(&row.base_metadata)
        .map_err(|e| Error::internal_from("corrupt base metadata", e))?;
    let obj = v
        .as_object_mut()
        .ok_or_else(|| Error::internal("base metadata is not a JSON object"))?;
    let snapshots = db.snapshots(row.table_id, -1, i64::MAX).await?;
    let snaps: Vec<Value> = snapshots
        .iter()
        .filter(|s| s.sequence_number <= row.last_sequence_number)
        .map(|s| {
            let mut summary = serde_json::Map::new();
            for (k, val) in &s.summary {
                summary.insert(k.clone(), Value::String(val.clone()));
            }
            let mut o = json!({
                "snapshot-id": s.snapshot_id,
                "sequence-number": s.sequence_number,
                "timestamp-ms": s.timestamp_ms,
                "manifest-list": s.manifest_list,
                "summary": summary,
                "schema-id": s.schema_id,
            });
            if let Some(p) = s.parent_snapshot_id {
                o["parent-snapshot-id"] = json!(p);
            }
            o
        })
        .collect();
    let log: Vec<Value> = db
        .snapshot_log(row.table_id, row.version)
        .await?
        .into_iter()
        .map(|(id, ts)| json!({"snapshot-id": id, "timestamp-ms": ts}))
        .collect();
    obj.insert("snapshots".into(), Value::Array(snaps));
    obj.insert("snapshot-log".into(), Value::Array(log));
    obj.insert(
        "last-sequence-number".into(),
        json!(row.last_sequence_number),
    );
    obj.insert("last-updated-ms".into(), json!(row.last_updated_ms));
    match row.current_snapshot_id {
        Some(id) => {
            obj.insert("current-snapshot-id".into(), json!(id));
        }
        None => {
            obj.remove("current-snapshot-id");
        }
    }
    // Refs are read after the row: one made since may name a snapshot this version does
    // not hold yet; it belongs to a later version's metadata.
    let known: std::collections::HashSet<i64> = snapshots
        .iter()
        .filter(|s| s.sequence_number <= row.last_sequence_number)
        .map(|s| s.snapshot_id)
        .collect();
    let refs: serde_json::Map<String, Value> = crate::refs::refs(db, row)
        .await?
        .into_iter()
        .filter(|r| known.contains(&r.snapshot_id))
        .map(|r| {
            let mut v = json!({"snapshot-id": r.snapshot_id, "type": r.ref_type});
            r.retention.to_json(&mut v);
            (r.name, v)
        })
        .collect();
    obj.insert("refs".into(), Value::Object(refs));
    let text = serde_json::to_string(&v).expect("JSON value serialises");
    // What we hand out must be valid Iceberg metadata.
    serde_json::from_str::<iceberg::spec::TableMetadata>(&text).map_err(|e| {
        Error::internal_from(format!("rendered metadata of {} is invalid", row.ident), e)
    })?;
    Ok(text)
}

/// Writes the metadata file for `row`'s version unless it exists, and returns its location
/// and, when `want_json`, its content.
pub(crate) async fn materialize(
    db: &Db,
    warehouse: &Warehouse,
    env: &Env,
    row: &TableRow,
    want_json: bool,
) -> Result<(String, Option<String>)> {
    if row.metadata_version >= row.version {
        let json = if want_json {
            let bytes = warehouse.get(&row.metadata_location).await?;
            Some(
                String::from_utf8(bytes.to_vec())
                    .map_err(|e| Error::internal_from("metadata file is not UTF-8", e))?,
            )
        } else {
            None
        };
        return Ok((row.metadata_location.clone(), json));
    }
    let text = render(db, row).await?;
    let path = metadata_path(&row.location, row.version, env);
    warehouse.put_durable(&path, text.clone().into()).await?;
    db.set_metadata_location(row.table_id, &path, row.version, env.clock.now_ms())
        .await?;
    Ok((path, want_json.then_some(text)))
}

/// Where the metadata file of a table version goes.
pub(crate) fn metadata_path(location: &str, version: i64, env: &Env) -> String {
    format!(
        "{}/metadata/{version:05}-{}.metadata.json",
        location.trim_end_matches('/'),
        env.ids.uuid()
    )
}
