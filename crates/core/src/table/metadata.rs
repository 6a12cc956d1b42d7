//! Materialising Iceberg `metadata.json` files from the catalog.
//!
//! The catalog database is the source of truth for a table's snapshots, log and refs; a
//! commit does not rewrite the ever-growing metadata file. When a reader asks for the
//! table's metadata location, the file for the current version is written (once per
//! version) from the database rows, so every Iceberg engine sees exactly the committed state.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::db::TableRow;
use crate::env::Env;
use crate::error::{Error, Result};
use crate::storage::{Location, ObjectPath, Warehouse};
use crate::table::Shared;
use crate::table::history::Rendered;

/// How often a row is read again before giving up when it went stale: an expiry removed
/// the snapshot it names as current (a commit had made it non-current just before). Used
/// wherever a row's current snapshot is looked up.
pub(crate) const MAX_STALE_READS: usize = 20;

/// A row kept going stale while it was read: retry.
pub(crate) fn stale(ident: &crate::ident::TableIdent) -> Error {
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
    shared: &Shared,
    warehouse: &Warehouse,
    row: TableRow,
    want_json: bool,
) -> Result<(TableRow, String, Option<Arc<str>>)> {
    let mut row = row;
    for _ in 0..MAX_STALE_READS {
        if let Some((location, json)) =
            materialize_version(shared, warehouse, &row, want_json).await?
        {
            return Ok((row, location, json));
        }
        row = shared.db.table_by_id(row.table_id).await?.ok_or_else(|| {
            Error::not_found(crate::error::ObjectKind::Table, row.ident.to_string())
        })?;
    }
    Err(stale(&row.ident))
}

/// [`materialize`] for exactly `row`'s version; `None`: the row is stale.
async fn materialize_version(
    shared: &Shared,
    warehouse: &Warehouse,
    row: &TableRow,
    want_json: bool,
) -> Result<Option<(String, Option<Arc<str>>)>> {
    if row.metadata_version >= row.version {
        let json = if want_json {
            Some(text(shared, warehouse, &row.metadata_location, false).await?)
        } else {
            None
        };
        return Ok(Some((row.metadata_location.clone(), json)));
    }
    let Some(rendered) = shared.history.render(&shared.db, row).await? else {
        return Ok(None);
    };
    let dir = warehouse.location("location", &row.location)?;
    let path = metadata_path(&dir, row.version, &shared.env)?;
    // No copy of the text: the store reads it where the renderings keep it.
    let bytes = bytes::Bytes::from_owner(Text(rendered.all.clone()));
    // Durable before anyone is told: engines keep metadata locations, and nothing would
    // rewrite this name after a crash.
    warehouse.put_durable(&path, bytes).await?;
    let path = path.uri().to_string();
    shared
        .db
        .set_metadata_location(row.table_id, &path, row.version, shared.env.clock.now_ms())
        .await?;
    let json = want_json.then(|| rendered.all.clone());
    shared.texts.insert(&path, rendered);
    Ok(Some((path, json)))
}

/// A rendering's text as the bytes of a store write.
struct Text(Arc<str>);

impl AsRef<[u8]> for Text {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// The text of the metadata file at `location` (whole, or for `snapshots=refs` with only
/// the snapshots its refs name), to be served as it is: from memory when this server wrote
/// or read it lately, else read from the store. A file read must at least be JSON (a syntax
/// check only: it was parsed as metadata when it was written or registered); one that is
/// not is `Corrupt`, naming it.
pub(crate) async fn text(
    shared: &Shared,
    warehouse: &Warehouse,
    location: &str,
    refs_only: bool,
) -> Result<Arc<str>> {
    if let Some(t) = shared.texts.get(location) {
        return Ok(if refs_only {
            t.refs_only.clone()
        } else {
            t.all
        });
    }
    let all = read_metadata_file(warehouse, location).await?;
    let mut v: Value = serde_json::from_str(&all)
        .map_err(|e| Error::corrupt(location, format!("not JSON: {e}")))?;
    only_ref_snapshots(&mut v);
    let rendered = Rendered {
        all: all.into(),
        refs_only: v.to_string().into(),
    };
    let out = if refs_only {
        rendered.refs_only.clone()
    } else {
        rendered.all.clone()
    };
    shared.texts.insert(location, rendered);
    Ok(out)
}

/// Keeps only the snapshots a branch or tag points at (`snapshots=refs`).
fn only_ref_snapshots(metadata: &mut Value) {
    let referenced: HashSet<i64> = metadata["refs"]
        .as_object()
        .map(|refs| {
            refs.values()
                .filter_map(|r| r["snapshot-id"].as_i64())
                .collect()
        })
        .unwrap_or_default();
    if let Some(snaps) = metadata.get_mut("snapshots").and_then(Value::as_array_mut) {
        snaps.retain(|s| {
            s["snapshot-id"]
                .as_i64()
                .is_some_and(|id| referenced.contains(&id))
        });
    }
}

/// Metadata files' texts lately written or read, by location (files never change, so an
/// entry is never stale); at most [`TEXT_BUDGET_BYTES`], emptied when full.
#[derive(Default)]
pub(crate) struct Texts {
    inner: Mutex<(HashMap<String, Arc<Rendered>>, usize)>,
}

/// Bytes of metadata text kept in memory.
const TEXT_BUDGET_BYTES: usize = 256 << 20;

impl Texts {
    fn get(&self, location: &str) -> Option<Rendered> {
        let kept = self.inner.lock().expect("poisoned");
        kept.0.get(location).map(|r| Rendered {
            all: r.all.clone(),
            refs_only: r.refs_only.clone(),
        })
    }

    fn insert(&self, location: &str, r: Rendered) {
        let size = r.all.len() + r.refs_only.len();
        let mut kept = self.inner.lock().expect("poisoned");
        if kept.1 + size > TEXT_BUDGET_BYTES {
            kept.0.clear();
            kept.1 = 0;
        }
        if kept.0.insert(location.to_string(), Arc::new(r)).is_none() {
            kept.1 += size;
        }
    }
}

/// The text of a table's metadata file, as stored. It must at least be JSON (a syntax
/// check only: the file was parsed as metadata when it was written or registered). A file
/// that is not is `Corrupt`, naming it.
async fn read_metadata_file(warehouse: &Warehouse, location: &str) -> Result<String> {
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
    use serde_json::json;

    #[test]
    fn snapshots_refs_keeps_what_branches_and_tags_point_at() {
        let mut m = json!({
            "refs": {"main": {"snapshot-id": 3, "type": "branch"}, "v1": {"snapshot-id": 1, "type": "tag"}},
            "snapshots": [{"snapshot-id": 1}, {"snapshot-id": 2}, {"snapshot-id": 3}]
        });
        super::only_ref_snapshots(&mut m);
        assert_eq!(
            m["snapshots"],
            json!([{"snapshot-id": 1}, {"snapshot-id": 3}])
        );
    }

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
        let shared = catalog.shared();
        assert!(
            shared
                .history
                .render(&shared.db, &stale)
                .await
                .unwrap()
                .is_none()
        );
        // ...and materialising it serves the current version instead.
        let (row, _, json) =
            super::materialize(shared, shared.warehouses.default_warehouse(), stale, true)
                .await
                .unwrap();
        assert_eq!(row.current_snapshot_id, Some(second));
        let meta: iceberg::spec::TableMetadata = serde_json::from_str(&json.unwrap()).unwrap();
        assert_eq!(meta.current_snapshot_id(), Some(second));
    }

    /// A version's file is written once, from the rendering, and recorded as the version's
    /// file before it is handed out: every later reader gets the same file.
    #[tokio::test]
    async fn a_metadata_file_is_written_once_and_recorded_before_it_is_handed_out() {
        let dir = tempfile::tempdir().unwrap();
        let (catalog, ident, t) = crate::testing::catalog_with_table(dir.path()).await;
        catalog
            .commit(
                &crate::auth::Caller::unrestricted(),
                crate::testing::append_one(&ident, &t, 1, true),
            )
            .await
            .unwrap();
        let shared = catalog.shared();
        let warehouse = shared.warehouses.default_warehouse();
        let row = shared.db.table(&ident).await.unwrap();
        let (_, first, json) = super::materialize(shared, warehouse, row.clone(), true)
            .await
            .unwrap();
        let on_disk =
            std::fs::read_to_string(url::Url::parse(&first).unwrap().to_file_path().unwrap())
                .unwrap();
        assert_eq!(on_disk, &*json.unwrap());
        // Recorded before it was handed out: a reader of the row now gets the same file.
        let recorded = shared.db.table(&ident).await.unwrap();
        assert_eq!(recorded.metadata_location, first);
        assert!(recorded.metadata_version >= recorded.version);
        let (_, again, _) = super::materialize(shared, warehouse, recorded, false)
            .await
            .unwrap();
        assert_eq!(again, first, "one file per version");
    }
}
