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
use crate::storage::{Location, ObjectPath, Warehouse};

/// How often a row is read again before giving up when it went stale: an expiry removed
/// the snapshot it names as current (a commit had made it non-current just before). Used
/// wherever a row's current snapshot is looked up.
pub(crate) const MAX_STALE_READS: usize = 20;

/// The metadata JSON of `row`'s version; `None` when the row is stale: a later commit
/// (expiry) has removed the snapshot it names as current, so read the row again.
pub(crate) async fn render(db: &Db, row: &TableRow) -> Result<Option<String>> {
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
    if row
        .current_snapshot_id
        .is_some_and(|id| !known.contains(&id))
    {
        return Ok(None);
    }
    let refs: serde_json::Map<String, Value> = crate::table::refs::refs(db, row)
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
    Ok(Some(text))
}

/// The table's row and the metadata JSON of its version, reading the row again while it
/// is stale (see [`render`]).
pub(crate) async fn render_current(
    db: &Db,
    ident: &crate::ident::TableIdent,
) -> Result<(TableRow, String)> {
    for _ in 0..MAX_STALE_READS {
        let row = db.table(ident).await?;
        if let Some(text) = render(db, &row).await? {
            return Ok((row, text));
        }
    }
    Err(stale(ident))
}

fn stale(ident: &crate::ident::TableIdent) -> Error {
    Error::Unavailable {
        what: "table",
        source: format!("table {ident} kept changing while its metadata was read; try again")
            .into(),
    }
}

/// Writes the metadata file for the row's version unless it exists, and returns its
/// location and, when `want_json`, its content. A stale row is read again (by table id), so
/// the row returned may be newer than the one given.
pub(crate) async fn materialize(
    db: &Db,
    warehouse: &Warehouse,
    env: &Env,
    row: TableRow,
    want_json: bool,
) -> Result<(TableRow, String, Option<String>)> {
    let mut row = row;
    for _ in 0..MAX_STALE_READS {
        if let Some((location, json)) =
            materialize_version(db, warehouse, env, &row, want_json).await?
        {
            return Ok((row, location, json));
        }
        row = db.table_by_id(row.table_id).await?.ok_or_else(|| {
            Error::not_found(crate::error::ObjectKind::Table, row.ident.to_string())
        })?;
    }
    Err(stale(&row.ident))
}

/// [`materialize`] for exactly `row`'s version; `None`: the row is stale.
async fn materialize_version(
    db: &Db,
    warehouse: &Warehouse,
    env: &Env,
    row: &TableRow,
    want_json: bool,
) -> Result<Option<(String, Option<String>)>> {
    if row.metadata_version >= row.version {
        let json = if want_json {
            Some(read_metadata_file(warehouse, &row.metadata_location).await?)
        } else {
            None
        };
        return Ok(Some((row.metadata_location.clone(), json)));
    }
    let Some(text) = render(db, row).await? else {
        return Ok(None);
    };
    let dir = warehouse.location("location", &row.location)?;
    let path = metadata_path(&dir, row.version, env)?;
    warehouse.put_durable(&path, text.clone().into()).await?;
    let path = path.uri().to_string();
    db.set_metadata_location(row.table_id, &path, row.version, env.clock.now_ms())
        .await?;
    Ok(Some((path, want_json.then_some(text))))
}

/// The text of a table's metadata file, to be served as it is: so it must at least be
/// JSON (a syntax check only: the file was parsed as metadata when it was written or
/// registered). A file that is not is `Corrupt`, naming it.
pub(crate) async fn read_metadata_file(warehouse: &Warehouse, location: &str) -> Result<String> {
    let path = warehouse.object_in("metadata-location", location)?;
    let bytes = match warehouse.get(&path).await {
        Err(Error::NotFound { .. }) => {
            return Err(Error::corrupt(
                path.uri(),
                "the table's metadata file is missing",
            ));
        }
        r => r?,
    };
    // No copy: the bytes are this read's own.
    let text = String::from_utf8(Vec::from(bytes))
        .map_err(|e| Error::corrupt(path.uri(), format!("not UTF-8: {e}")))?;
    serde_json::from_str::<serde::de::IgnoredAny>(&text)
        .map_err(|e| Error::corrupt(path.uri(), format!("not JSON: {e}")))?;
    Ok(text)
}

/// Where the metadata file of a table version goes.
pub(crate) fn metadata_path(location: &Location, version: i64, env: &Env) -> Result<ObjectPath> {
    location
        .child(&format!(
            "metadata/{version:05}-{}.metadata.json",
            env.ids.uuid()
        ))
        .map_err(|e| Error::invalid("location", e.0))
}

#[cfg(test)]
mod tests {
    use crate::maintenance::expire::ExpireOptions;

    /// A reader that read the table's row just before an expiry removed that row's current
    /// snapshot (a commit made it non-current first) gets the newer version's metadata,
    /// never an invalid one.
    #[tokio::test]
    async fn a_row_made_stale_by_expiry_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let (catalog, ident, t) = crate::testing::catalog_with_table(dir.path()).await;
        let append = |i| crate::testing::append_one(&ident, &t, i, true);
        catalog
            .commit(&crate::auth::Caller::unrestricted(), append(1))
            .await
            .unwrap();
        let stale = catalog.shared().db.table(&ident).await.unwrap();
        let second = catalog
            .commit(&crate::auth::Caller::unrestricted(), append(2))
            .await
            .unwrap()
            .snapshot_id;
        let opts = ExpireOptions {
            older_than_ms: Some(i64::MAX),
            retain_last: Some(1),
            ..Default::default()
        };
        let r = catalog
            .expire_snapshots(&crate::auth::Caller::unrestricted(), &ident, &opts, "test")
            .await
            .unwrap();
        assert_eq!(
            r.expired_snapshots,
            vec![stale.current_snapshot_id.unwrap()]
        );
        // The stale row names a snapshot that is gone: rendering it is refused...
        assert!(
            super::render(&catalog.shared().db, &stale)
                .await
                .unwrap()
                .is_none()
        );
        // ...and materialising it serves the current version instead.
        let shared = catalog.shared();
        let (row, _, json) = super::materialize(
            &shared.db,
            shared.warehouses.default_warehouse(),
            &shared.env,
            stale,
            true,
        )
        .await
        .unwrap();
        assert_eq!(row.current_snapshot_id, Some(second));
        let meta: iceberg::spec::TableMetadata = serde_json::from_str(&json.unwrap()).unwrap();
        assert_eq!(meta.current_snapshot_id(), Some(second));
    }
}
