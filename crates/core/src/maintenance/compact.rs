//! Compaction: rewriting a table's small data files into fewer, larger ones.
//!
//! Contract:
//! - Files of the current snapshot (optionally only those a filter may match) that are
//!   smaller than 3/4 of the target size are grouped by partition and bin-packed up to the
//!   target size; each bin of two or more files becomes one new file with exactly their
//!   rows (columns matched to the table's current schema by Parquet field id, else by
//!   name). Files that delete files apply to are left alone.
//! - New files get paths reserved in the catalog (so a failed run leaves only orphans that
//!   `remove-orphans` finds) and are committed as ONE `replace` commit based on the
//!   snapshot that was read: appends and other commits that land meanwhile stay (the
//!   replace goes on top of them); it fails with `Conflict` only if a rewritten file was
//!   removed meanwhile or delete files were added — then nothing changed and the run can
//!   simply be repeated. Older snapshots keep their files, so time travel is unchanged.
//!
//! - Bounded memory: files are read a batch at a time and written a row group at a time
//!   (`write.parquet.row-group-size-bytes`, default 128 MiB), large ones as multipart
//!   uploads, so a run holds about one row group whatever the sizes of the files.
//!
//! Errors: `NotFound` (table), `InvalidArgument` (options), `Conflict` (retry), storage
//! errors while reading or writing files (nothing committed).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, new_null_array};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{Schema as ArrowSchema, SchemaRef as ArrowSchemaRef};
use futures::TryStreamExt;
use iceberg::arrow::schema_to_arrow_schema;
use iceberg::spec::{DataContentType, DataFile, ManifestContentType, ManifestStatus, Struct};
use parquet::arrow::{AsyncArrowWriter, ParquetRecordBatchStreamBuilder};

use crate::error::{Error, Result};
use crate::ident::TableIdent;
use crate::model::NewFile;
use crate::scan::ScanFilter;
use crate::storage::Warehouse;
use crate::table::Shared;

/// Default target size of compacted files: Iceberg's `write.target-file-size-bytes`.
pub const DEFAULT_TARGET_FILE_SIZE: u64 = 512 << 20;

/// Default row-group size of compacted files: Iceberg's `write.parquet.row-group-size-bytes`.
/// A run holds about one row group of the file it writes in memory.
pub const DEFAULT_ROW_GROUP_BYTES: usize = 128 << 20;

/// What to compact.
#[derive(Debug, Clone, Default)]
pub struct CompactOptions {
    /// Size files are packed up to (default: the table property
    /// `write.target-file-size-bytes`, else 512 MiB).
    pub target_file_size: Option<u64>,
    /// Only files that may hold rows matching this filter.
    pub filter: Option<ScanFilter>,
    /// Report the plan; write and commit nothing.
    pub dry_run: bool,
}

/// What a compaction did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CompactReport {
    pub table: String,
    pub dry_run: bool,
    /// The snapshot the files were read from.
    pub base_snapshot_id: Option<i64>,
    /// The `replace` snapshot committed (none when nothing was worth rewriting).
    pub snapshot_id: Option<i64>,
    pub files_rewritten: u64,
    pub files_written: u64,
    pub bytes_rewritten: u64,
    pub bytes_written: u64,
    pub records: u64,
    /// Small files left alone because delete files apply to them.
    pub skipped_with_deletes: u64,
}

/// A file considered for compaction.
pub(crate) struct Candidate {
    file: DataFile,
}

/// The rewrite: bins of files to merge, and the planning facts.
pub(crate) struct Plan {
    pub report: CompactReport,
    /// The table's schema the files were read for (the new files are written in it).
    target: ArrowSchemaRef,
    /// Row groups of the new files close at this size (`write.parquet.row-group-size-bytes`).
    row_group_bytes: usize,
    /// The table's warehouse: the files are read from and written to it.
    warehouse: Arc<Warehouse>,
    pub bins: Vec<(String, Vec<Candidate>)>,
}

/// Chooses the files to rewrite from the current snapshot.
pub(crate) async fn plan(
    shared: &Shared,
    ident: &TableIdent,
    opts: &CompactOptions,
) -> Result<Plan> {
    let row = shared.db.table(ident).await?;
    // Manifests another replica committed are read from the store.
    shared.publish_table(&row.location).await?;
    let warehouse = shared.warehouse_of(&row.location).await?;
    let (meta, _) = crate::table::parse_base(&row)?;
    let target: ArrowSchemaRef = Arc::new(schema_to_arrow_schema(meta.current_schema())?);
    let target_size = match opts.target_file_size {
        Some(0) => return Err(Error::invalid("target_file_size", "must be positive")),
        Some(n) => n,
        None => meta
            .properties()
            .get("write.target-file-size-bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_TARGET_FILE_SIZE),
    };
    let row_group_bytes = meta
        .properties()
        .get("write.parquet.row-group-size-bytes")
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or(DEFAULT_ROW_GROUP_BYTES);
    let mut report = CompactReport {
        table: ident.to_string(),
        dry_run: opts.dry_run,
        base_snapshot_id: row.current_snapshot_id,
        ..Default::default()
    };
    let Some(current) = row.current_snapshot_id else {
        return Ok(Plan {
            report,
            target,
            row_group_bytes,
            warehouse,
            bins: Vec::new(),
        });
    };
    // Which files the filter keeps, and which have deletes: the scan planner decides both.
    let resolved = crate::scan::resolve(
        shared,
        &row,
        &meta,
        &crate::scan::SnapshotSelector::Id(current),
    )
    .await?;
    let scan = crate::scan::plan(shared, &meta, resolved, opts.filter.as_ref()).await?;
    let mut wanted: HashMap<&str, bool> = HashMap::new();
    for f in &scan.files {
        wanted.insert(f.path.as_str(), !f.deletes.is_empty());
    }
    let snap = shared
        .db
        .snapshot(row.table_id, current)
        .await?
        .ok_or_else(|| Error::internal("current snapshot missing from the catalog"))?;
    let list =
        crate::storage::manifests::read_manifest_list(&warehouse, &snap.manifest_list).await?;
    let spec = meta.default_partition_spec();
    let schema = meta.current_schema();
    let small = target_size * 3 / 4;
    let mut groups: HashMap<Struct, Vec<Candidate>> = HashMap::new();
    for m in list.entries() {
        if m.content != ManifestContentType::Data || m.partition_spec_id != spec.spec_id() {
            continue;
        }
        let entries = shared.manifests.get(&warehouse, &meta, m).await?;
        for e in entries
            .iter()
            .filter(|e| e.status() != ManifestStatus::Deleted)
        {
            let f = e.data_file();
            if f.content_type() != DataContentType::Data
                || f.file_size_in_bytes() >= small
                || !f.file_path().ends_with(".parquet")
            {
                continue;
            }
            match wanted.get(f.file_path()) {
                None => continue,
                Some(true) => report.skipped_with_deletes += 1,
                Some(false) => groups
                    .entry(f.partition().clone())
                    .or_default()
                    .push(Candidate { file: f.clone() }),
            }
        }
    }
    let mut bins = Vec::new();
    for (partition, mut files) in groups {
        files.sort_by_key(|c| (c.file.file_size_in_bytes(), c.file.file_path().to_string()));
        let dir = if spec.is_unpartitioned() {
            String::new()
        } else {
            spec.partition_to_path(&partition, schema.clone())
        };
        let mut bin: Vec<Candidate> = Vec::new();
        let mut size = 0u64;
        for c in files {
            if !bin.is_empty() && size + c.file.file_size_in_bytes() > target_size {
                if bin.len() > 1 {
                    bins.push((dir.clone(), std::mem::take(&mut bin)));
                } else {
                    bin.clear();
                }
                size = 0;
            }
            size += c.file.file_size_in_bytes();
            bin.push(c);
        }
        if bin.len() > 1 {
            bins.push((dir, bin));
        }
    }
    bins.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, bin) in &bins {
        report.files_rewritten += bin.len() as u64;
        report.files_written += 1;
        for c in bin {
            report.bytes_rewritten += c.file.file_size_in_bytes();
            report.records += c.file.record_count();
        }
    }
    Ok(Plan {
        report,
        target,
        row_group_bytes,
        warehouse,
        bins,
    })
}

/// Writes the new files of `plan`; returns the commit operation's files (added, removed).
pub(crate) async fn write(
    shared: &Shared,
    ident: &TableIdent,
    plan: &mut Plan,
) -> Result<(Vec<NewFile>, Vec<String>)> {
    let target = plan.target.clone();
    let warehouse = plan.warehouse.clone();
    let dirs: Vec<String> = plan.bins.iter().map(|(d, _)| d.clone()).collect();
    let paths = crate::maintenance::orphans::reserve(shared, ident, &dirs).await?;
    let mut added = Vec::new();
    let mut removed = Vec::new();
    for ((_, bin), path) in plan.bins.iter().zip(paths) {
        // Streamed both ways: one batch read at a time, written out a row group at a time
        // (multipart once large), so memory stays near one row group whatever the sizes.
        let object = warehouse.object(&path)?;
        let props = parquet::file::properties::WriterProperties::builder()
            .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
            .set_max_row_group_bytes(Some(plan.row_group_bytes))
            .build();
        let mut writer = AsyncArrowWriter::try_new(
            warehouse.parquet_sink(object.clone()),
            target.clone(),
            Some(props),
        )
        .map_err(pq)?;
        let mut records = 0u64;
        for c in bin {
            let source = warehouse.object_in("data file", c.file.file_path())?;
            let reader = warehouse
                .parquet_reader(&source, c.file.file_size_in_bytes())
                .await?;
            let mut stream = ParquetRecordBatchStreamBuilder::new(reader)
                .await
                .map_err(pq)?
                .build()
                .map_err(pq)?;
            while let Some(b) = stream.try_next().await.map_err(pq)? {
                let b = align(&b, &target, c.file.file_path())?;
                records += b.num_rows() as u64;
                writer.write(&b).await.map_err(pq)?;
            }
            removed.push(c.file.file_path().to_string());
        }
        let expected: u64 = bin.iter().map(|c| c.file.record_count()).sum();
        if records != expected {
            // The writer is dropped unfinished: its upload is aborted.
            return Err(Error::internal(format!(
                "compaction read {records} rows where the manifests say {expected}"
            )));
        }
        writer.finish().await.map_err(pq)?;
        let size = writer.bytes_written() as u64;
        warehouse.sync(std::slice::from_ref(&object)).await?;
        plan.report.bytes_written += size;
        added.push(NewFile {
            path,
            file_size_bytes: size,
            stats: None,
        });
    }
    Ok((added, removed))
}

fn pq(e: parquet::errors::ParquetError) -> Error {
    Error::internal_from("reading or writing Parquet while compacting", e)
}

/// `batch` in the table's current schema: columns matched by Parquet field id (else by
/// name), cast to the table's types; columns the file lacks are null.
fn align(batch: &RecordBatch, target: &ArrowSchemaRef, file: &str) -> Result<RecordBatch> {
    let src: &ArrowSchema = &batch.schema();
    let field_id = |f: &arrow::datatypes::Field| {
        f.metadata()
            .get(parquet::arrow::PARQUET_FIELD_ID_META_KEY)
            .cloned()
    };
    let has_ids = src.fields().iter().any(|f| field_id(f).is_some());
    let opts = CastOptions {
        safe: false,
        ..Default::default()
    };
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(target.fields().len());
    for t in target.fields() {
        let idx = if has_ids {
            let id = field_id(t);
            src.fields().iter().position(|f| field_id(f) == id)
        } else {
            src.index_of(t.name()).ok()
        };
        cols.push(match idx {
            Some(i) if batch.column(i).data_type() == t.data_type() => batch.column(i).clone(),
            Some(i) => cast_with_options(batch.column(i), t.data_type(), &opts).map_err(|e| {
                Error::invalid(
                    "compact",
                    format!(
                        "{file}: column {} cannot be read as {}: {e}",
                        t.name(),
                        t.data_type()
                    ),
                )
            })?,
            None => new_null_array(t.data_type(), batch.num_rows()),
        });
    }
    RecordBatch::try_new(target.clone(), cols)
        .map_err(|e| Error::invalid("compact", format!("{file}: {e}")))
}
