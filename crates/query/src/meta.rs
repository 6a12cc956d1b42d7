//! Metadata tables, named like Spark's: `"t$snapshots"`, `"t$history"`, `"t$refs"`,
//! `"t$files"`, `"t$manifests"`, `"t$partitions"`, and `"t$commits"`, the commit log (who
//! committed what, when). They are ordinary tables to DataFusion
//! (projection, filters, aggregates), built from the table's committed metadata when a
//! statement is planned. Files, manifests and partitions describe the current snapshot.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Int32Array, Int64Array, MapBuilder, RecordBatch, StringArray,
    StringBuilder, TimestampMillisecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::datasource::{MemTable, TableProvider};
use firn_client::{FirnClient, TableIdent};
use firn_core::Warehouse;
use firn_core::commit::files::partition_to_json;
use iceberg::spec::{
    FormatVersion, ManifestContentType, ManifestList, ManifestStatus, TableMetadata,
};

use crate::error::{QueryError, Result};

/// Which metadata table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataKind {
    Snapshots,
    History,
    Refs,
    Files,
    Manifests,
    Partitions,
    Commits,
}

impl MetadataKind {
    const ALL: [(&'static str, MetadataKind); 7] = [
        ("snapshots", MetadataKind::Snapshots),
        ("history", MetadataKind::History),
        ("refs", MetadataKind::Refs),
        ("files", MetadataKind::Files),
        ("manifests", MetadataKind::Manifests),
        ("partitions", MetadataKind::Partitions),
        ("commits", MetadataKind::Commits),
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(s))
            .map(|(_, k)| *k)
    }

    pub fn names() -> String {
        Self::ALL
            .iter()
            .map(|(n, _)| format!("${n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

fn ts(values: Vec<i64>) -> ArrayRef {
    Arc::new(TimestampMillisecondArray::from(values).with_timezone("UTC"))
}

/// The metadata table `kind` of `ident`.
pub(crate) async fn table(
    client: &FirnClient,
    ident: &TableIdent,
    kind: MetadataKind,
) -> Result<Arc<dyn TableProvider>> {
    let batch = if kind == MetadataKind::Refs {
        refs(&client.list_refs(ident).await?)?
    } else if kind == MetadataKind::Commits {
        commits(
            &client
                .list_commits(ident, firn_core::catalog::MAX_PAGE_SIZE)
                .await?,
        )?
    } else {
        let t = client.load_table(ident, true).await?;
        let meta: TableMetadata = serde_json::from_str(&t.metadata_json).map_err(|e| {
            QueryError::Invalid(format!(
                "the server sent unreadable metadata of {ident}: {e}"
            ))
        })?;
        match kind {
            MetadataKind::Snapshots => snapshots(&meta)?,
            MetadataKind::History => history(&meta)?,
            _ => contents(&meta, kind, &client.storage(ident).await?).await?,
        }
    };
    let table = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
    Ok(Arc::new(table))
}

fn batch(fields: Vec<Field>, columns: Vec<ArrayRef>) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// The newest commits first: when, who (the authenticated principal, null with
/// authentication off), which client, the operation, the snapshot after it, the commit id.
fn commits(log: &[firn_client::proto::CommitRecord]) -> Result<RecordBatch> {
    batch(
        vec![
            Field::new("committed_at", ts_type(), false),
            Field::new("principal", DataType::Utf8, true),
            Field::new("client", DataType::Utf8, false),
            Field::new("operation", DataType::Utf8, false),
            Field::new("snapshot_id", DataType::Int64, true),
            Field::new("parent_id", DataType::Int64, true),
            Field::new("sequence_number", DataType::Int64, false),
            Field::new("commit_id", DataType::Utf8, false),
        ],
        vec![
            ts(log.iter().map(|c| c.committed_at_ms).collect()),
            Arc::new(StringArray::from_iter(log.iter().map(|c| {
                (!c.principal.is_empty()).then_some(c.principal.as_str())
            }))),
            Arc::new(StringArray::from_iter_values(
                log.iter().map(|c| c.client.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                log.iter().map(|c| c.operation.as_str()),
            )),
            Arc::new(Int64Array::from_iter(
                log.iter()
                    .map(|c| (c.snapshot_id != 0).then_some(c.snapshot_id)),
            )),
            Arc::new(Int64Array::from_iter(
                log.iter().map(|c| c.parent_snapshot_id),
            )),
            Arc::new(Int64Array::from_iter_values(
                log.iter().map(|c| c.sequence_number),
            )),
            Arc::new(StringArray::from_iter_values(
                log.iter().map(|c| c.commit_id.as_str()),
            )),
        ],
    )
}

fn snapshots(meta: &TableMetadata) -> Result<RecordBatch> {
    let mut snaps: Vec<_> = meta.snapshots().collect();
    snaps.sort_by_key(|s| (s.sequence_number(), s.timestamp_ms()));
    let mut summary = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
    for s in &snaps {
        let sm = s.summary();
        let mut props: BTreeMap<&str, &str> = sm
            .additional_properties
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let op = sm.operation.as_str();
        props.insert("operation", op);
        for (k, v) in props {
            summary.keys().append_value(k);
            summary.values().append_value(v);
        }
        summary.append(true)?;
    }
    let summary = Arc::new(summary.finish());
    let summary_field = Field::new("summary", summary.data_type().clone(), false);
    batch(
        vec![
            Field::new("committed_at", ts_type(), false),
            Field::new("snapshot_id", DataType::Int64, false),
            Field::new("parent_id", DataType::Int64, true),
            Field::new("operation", DataType::Utf8, false),
            Field::new("manifest_list", DataType::Utf8, false),
            summary_field,
        ],
        vec![
            ts(snaps.iter().map(|s| s.timestamp_ms()).collect()),
            Arc::new(Int64Array::from_iter_values(
                snaps.iter().map(|s| s.snapshot_id()),
            )),
            Arc::new(Int64Array::from_iter(
                snaps.iter().map(|s| s.parent_snapshot_id()),
            )),
            Arc::new(StringArray::from_iter_values(
                snaps.iter().map(|s| s.summary().operation.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                snaps.iter().map(|s| s.manifest_list()),
            )),
            summary,
        ],
    )
}

/// Snapshot ids reachable from the current snapshot through parents.
fn current_ancestors(meta: &TableMetadata) -> HashSet<i64> {
    let mut out = HashSet::new();
    let mut next = meta.current_snapshot_id();
    while let Some(id) = next {
        if !out.insert(id) {
            break;
        }
        next = meta.snapshot_by_id(id).and_then(|s| s.parent_snapshot_id());
    }
    out
}

fn history(meta: &TableMetadata) -> Result<RecordBatch> {
    let log = meta.history();
    let anc = current_ancestors(meta);
    batch(
        vec![
            Field::new("made_current_at", ts_type(), false),
            Field::new("snapshot_id", DataType::Int64, false),
            Field::new("parent_id", DataType::Int64, true),
            Field::new("is_current_ancestor", DataType::Boolean, false),
        ],
        vec![
            ts(log.iter().map(|l| l.timestamp_ms).collect()),
            Arc::new(Int64Array::from_iter_values(
                log.iter().map(|l| l.snapshot_id),
            )),
            Arc::new(Int64Array::from_iter(log.iter().map(|l| {
                meta.snapshot_by_id(l.snapshot_id)
                    .and_then(|s| s.parent_snapshot_id())
            }))),
            Arc::new(BooleanArray::from_iter(
                log.iter().map(|l| Some(anc.contains(&l.snapshot_id))),
            )),
        ],
    )
}

fn refs(refs: &[firn_client::proto::Ref]) -> Result<RecordBatch> {
    batch(
        vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("type", DataType::Utf8, false),
            Field::new("snapshot_id", DataType::Int64, false),
        ],
        vec![
            Arc::new(StringArray::from_iter_values(
                refs.iter().map(|r| r.name.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                refs.iter().map(|r| r.r#type.to_uppercase()),
            )),
            Arc::new(Int64Array::from_iter_values(
                refs.iter().map(|r| r.snapshot_id),
            )),
        ],
    )
}

/// `$files`, `$manifests` and `$partitions` of the current snapshot, read from its
/// manifest list and manifests.
async fn contents(
    meta: &TableMetadata,
    kind: MetadataKind,
    storage: &Arc<Warehouse>,
) -> Result<RecordBatch> {
    let file_io = storage.file_io();
    let manifests = match meta.current_snapshot() {
        Some(s) => {
            let bad = |e: iceberg::Error| {
                QueryError::Invalid(format!("reading manifest list {}: {e}", s.manifest_list()))
            };
            let bytes = file_io
                .new_input(s.manifest_list())
                .map_err(bad)?
                .read()
                .await
                .map_err(bad)?;
            ManifestList::parse_with_version(&bytes, FormatVersion::V2)
                .map_err(bad)?
                .entries()
                .to_vec()
        }
        None => Vec::new(),
    };
    if kind == MetadataKind::Manifests {
        let m = &manifests;
        let int = |f: &dyn Fn(&iceberg::spec::ManifestFile) -> Option<u32>| -> ArrayRef {
            Arc::new(Int32Array::from_iter(
                m.iter().map(|x| f(x).map(|v| v as i32)),
            ))
        };
        let data = |x: &iceberg::spec::ManifestFile| x.content == ManifestContentType::Data;
        return batch(
            vec![
                Field::new("content", DataType::Int32, false),
                Field::new("path", DataType::Utf8, false),
                Field::new("length", DataType::Int64, false),
                Field::new("partition_spec_id", DataType::Int32, false),
                Field::new("added_snapshot_id", DataType::Int64, false),
                Field::new("added_data_files_count", DataType::Int32, true),
                Field::new("existing_data_files_count", DataType::Int32, true),
                Field::new("deleted_data_files_count", DataType::Int32, true),
                Field::new("added_delete_files_count", DataType::Int32, true),
                Field::new("existing_delete_files_count", DataType::Int32, true),
                Field::new("deleted_delete_files_count", DataType::Int32, true),
            ],
            vec![
                Arc::new(Int32Array::from_iter_values(
                    m.iter().map(|x| if data(x) { 0 } else { 1 }),
                )),
                Arc::new(StringArray::from_iter_values(
                    m.iter().map(|x| x.manifest_path.as_str()),
                )),
                Arc::new(Int64Array::from_iter_values(
                    m.iter().map(|x| x.manifest_length),
                )),
                Arc::new(Int32Array::from_iter_values(
                    m.iter().map(|x| x.partition_spec_id),
                )),
                Arc::new(Int64Array::from_iter_values(
                    m.iter().map(|x| x.added_snapshot_id),
                )),
                int(&|x| x.added_files_count.filter(|_| data(x))),
                int(&|x| x.existing_files_count.filter(|_| data(x))),
                int(&|x| x.deleted_files_count.filter(|_| data(x))),
                int(&|x| x.added_files_count.filter(|_| !data(x))),
                int(&|x| x.existing_files_count.filter(|_| !data(x))),
                int(&|x| x.deleted_files_count.filter(|_| !data(x))),
            ],
        );
    }
    let partition_type = meta.default_partition_type();
    // (content, path, format, spec id, partition JSON, records, bytes)
    let mut files: Vec<(i32, String, String, i32, String, i64, i64)> = Vec::new();
    for m in &manifests {
        // Read as the server reads it: with the table's schema and the listed spec, not the
        // manifest's own headers (which DuckDB 1.4 gets wrong).
        let read = async {
            let bytes = file_io.new_input(&m.manifest_path)?.read().await?;
            firn_core::storage::manifests::parse_manifest(&bytes, meta, Some(m))
        };
        let manifest = read.await.map_err(|e| {
            QueryError::Invalid(format!("reading manifest {}: {e}", m.manifest_path))
        })?;
        for e in manifest.entries() {
            if e.status() == ManifestStatus::Deleted {
                continue;
            }
            let f = e.data_file();
            let partition = partition_to_json(partition_type, f.partition())
                .map(|p| serde_json::Value::Object(p).to_string())
                .unwrap_or_default();
            files.push((
                f.content_type() as i32,
                f.file_path().to_string(),
                format!("{:?}", f.file_format()).to_uppercase(),
                m.partition_spec_id,
                partition,
                f.record_count() as i64,
                f.file_size_in_bytes() as i64,
            ));
        }
    }
    files.sort_by(|a, b| a.1.cmp(&b.1));
    if kind == MetadataKind::Files {
        return batch(
            vec![
                Field::new("content", DataType::Int32, false),
                Field::new("file_path", DataType::Utf8, false),
                Field::new("file_format", DataType::Utf8, false),
                Field::new("spec_id", DataType::Int32, false),
                Field::new("partition", DataType::Utf8, false),
                Field::new("record_count", DataType::Int64, false),
                Field::new("file_size_in_bytes", DataType::Int64, false),
            ],
            vec![
                Arc::new(Int32Array::from_iter_values(files.iter().map(|f| f.0))),
                Arc::new(StringArray::from_iter_values(
                    files.iter().map(|f| f.1.as_str()),
                )),
                Arc::new(StringArray::from_iter_values(
                    files.iter().map(|f| f.2.as_str()),
                )),
                Arc::new(Int32Array::from_iter_values(files.iter().map(|f| f.3))),
                Arc::new(StringArray::from_iter_values(
                    files.iter().map(|f| f.4.as_str()),
                )),
                Arc::new(Int64Array::from_iter_values(files.iter().map(|f| f.5))),
                Arc::new(Int64Array::from_iter_values(files.iter().map(|f| f.6))),
            ],
        );
    }
    // $partitions: data files grouped by partition.
    let mut parts: BTreeMap<(String, i32), (i64, i64, i64)> = BTreeMap::new();
    let mut deletes: HashMap<(String, i32), i64> = HashMap::new();
    for f in &files {
        let key = (f.4.clone(), f.3);
        if f.0 == 0 {
            let e = parts.entry(key).or_default();
            e.0 += f.5;
            e.1 += 1;
            e.2 += f.6;
        } else {
            *deletes.entry(key).or_default() += 1;
        }
    }
    let rows: Vec<_> = parts.into_iter().collect();
    batch(
        vec![
            Field::new("partition", DataType::Utf8, false),
            Field::new("spec_id", DataType::Int32, false),
            Field::new("record_count", DataType::Int64, false),
            Field::new("file_count", DataType::Int64, false),
            Field::new("total_data_file_size_in_bytes", DataType::Int64, false),
            Field::new("delete_file_count", DataType::Int64, false),
        ],
        vec![
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.0.0.as_str()),
            )),
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.0.1))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1.0))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1.1))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1.2))),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| deletes.get(&r.0).copied().unwrap_or(0)),
            )),
        ],
    )
}
