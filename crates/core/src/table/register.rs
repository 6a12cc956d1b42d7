//! Registering an existing Iceberg table (a metadata file another catalog or engine wrote)
//! under a Firn name, as the REST `register` endpoint does.
//!
//! Contract: the metadata file is read once and its snapshots, snapshot log and refs become
//! catalog rows in ONE transaction with the table row, so the table is either fully there
//! or not at all; the live data files of its current snapshot are recorded so a later
//! commit cannot add one of them again. The metadata file itself is served as the table's
//! metadata until the first commit. Nothing is copied or moved.
//!
//! Errors: `InvalidArgument` (missing or unreadable metadata file, format version other
//! than 2, location outside the warehouse or overlapping another table's), `NotFound` (namespace), `AlreadyExists` (the
//! name, or the table's uuid is registered already).

use std::collections::HashSet;

use iceberg::spec::{FormatVersion, TableMetadata};

use crate::db::TableRow;
use crate::error::{Error, ObjectKind, Result};
use crate::ident::TableIdent;
use crate::table::Shared;
use crate::table::pointer::{self, CommitLog};

pub(crate) async fn register(
    shared: &Shared,
    ident: &TableIdent,
    metadata_location: &str,
    by: &crate::model::Actor,
) -> Result<()> {
    ident.validate()?;
    let ns = shared.db.get_namespace(&ident.namespace).await?;
    // The table is adopted into its namespace's warehouse, and must lie in it.
    let warehouse = shared.warehouse_named(&ns.warehouse).await?;
    let metadata_path = warehouse.object_in("metadata-location", metadata_location)?;
    let location_uri = metadata_path.uri().to_string();
    let bytes = match warehouse.get(&metadata_path).await {
        Ok(b) => b,
        Err(Error::NotFound { .. }) => {
            return Err(Error::invalid(
                "metadata-location",
                format!("{metadata_location} does not exist"),
            ));
        }
        Err(e) => return Err(e),
    };
    let meta: TableMetadata = serde_json::from_slice(&bytes).map_err(|e| {
        Error::invalid(
            "metadata-location",
            format!("{metadata_location} is not Iceberg table metadata: {e}"),
        )
    })?;
    if meta.format_version() != FormatVersion::V2 {
        return Err(Error::invalid(
            "metadata-location",
            format!(
                "{metadata_location} is format version {}; Firn keeps version 2 tables",
                meta.format_version()
            ),
        ));
    }
    crate::validate::metadata("metadata-location", &meta)?;
    let dir = warehouse
        .location("metadata-location", meta.location())
        .map_err(|e| Error::invalid("metadata-location", format!("the table's location: {e}")))?;
    let location = dir.uri().to_string();
    // The base keeps what is not in rows, as for every table.
    let full = serde_json::to_value(&meta).map_err(|e| Error::internal_from("metadata", e))?;
    let (base, refs) = crate::table::split_metadata(full);
    // Live files of the current snapshot, so they cannot be added a second time.
    let mut live = HashSet::new();
    if let Some(s) = meta.current_snapshot() {
        let list =
            crate::storage::manifests::read_manifest_list(&warehouse, s.manifest_list()).await?;
        for m in list.entries() {
            live.extend(shared.manifests.live_paths(&warehouse, &meta, m).await?);
        }
    }
    let now = shared.env.clock.now_ms();
    let mut tx = shared.db.pool.begin().await?;
    crate::table::locations::claim(&mut tx, &warehouse, "metadata-location", &dir).await?;
    let new_row = TableRow {
        table_id: 0,
        ident: ident.clone(),
        table_uuid: meta.uuid().to_string(),
        location,
        version: 0,
        base_metadata: base.to_string(),
        current_snapshot_id: meta.current_snapshot_id(),
        last_sequence_number: meta.last_sequence_number(),
        last_updated_ms: meta.last_updated_ms(),
        metadata_location: location_uri.clone(),
        metadata_version: 0,
        history_rewritten_version: 0,
    };
    let mut moved = match pointer::insert(&mut tx, &new_row, now).await {
        Ok(m) => m,
        Err(Error::AlreadyExists { .. }) => {
            return Err(Error::AlreadyExists {
                kind: ObjectKind::Table,
                name: format!("{ident} (or table uuid {} registered already)", meta.uuid()),
            });
        }
        Err(e) => return Err(e),
    };
    let table_id = moved.table_id();
    let commit_id = format!("register-{}", shared.env.ids.uuid());
    for s in meta.snapshots() {
        moved
            .insert_iceberg_snapshot(s, meta.current_schema_id(), &commit_id)
            .await?;
    }
    // The log's entries predate every Firn version: negative sequence numbers keep them
    // first and visible at version 0.
    let history = meta.history();
    for (i, l) in history.iter().enumerate() {
        let seq = i as i64 - history.len() as i64;
        moved
            .insert_snapshot_log(seq, l.snapshot_id, l.timestamp_ms)
            .await?;
    }
    for (name, r) in &refs {
        if let (Some(id), Some(kind)) = (r["snapshot-id"].as_i64(), r["type"].as_str()) {
            let retention = crate::table::refs::RefRetention::from_json(r);
            moved.upsert_ref(name, id, kind, Some(&retention)).await?;
        }
    }
    for path in &live {
        sqlx::query("INSERT INTO table_files (table_id, path, snapshot_id) VALUES ($1, $2, $3)")
            .bind(table_id)
            .bind(path)
            .bind(meta.current_snapshot_id().unwrap_or_default())
            .execute(moved.conn())
            .await?;
    }
    crate::db::insert_metadata_file(moved.conn(), table_id, &location_uri, 0, now).await?;
    if let Some(s) = meta.current_snapshot() {
        moved
            .insert_commit_log(&CommitLog {
                version: 0,
                commit_id: &commit_id,
                snapshot_id: s.snapshot_id(),
                sequence_number: s.sequence_number(),
                parent_snapshot_id: s.parent_snapshot_id(),
                operation: "register",
                by,
                committed_at_ms: now,
                request_digest: None,
            })
            .await?;
    }
    pointer::commit(tx, &format!("registering {ident}")).await?;
    Ok(())
}
