//! [`TableWriter`]: Arrow batches in, Parquet files and one commit out.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use arrow::array::{ArrayRef, RecordBatch, new_null_array};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::SchemaRef as ArrowSchemaRef;
use firn_core::TableIdent;
use firn_core::commit::files::file_stats;
use firn_proto::v1 as pb;
use iceberg::arrow::{RecordBatchPartitionSplitter, schema_to_arrow_schema};
use iceberg::spec::{
    DataFile, DataFileFormat, PartitionKey, PartitionSpecRef, SchemaRef, Struct, StructType,
    TableMetadata,
};
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator, LocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::partitioning::PartitioningWriter;
use iceberg::writer::partitioning::fanout_writer::FanoutWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::client::{FirnClient, ident};
use crate::error::{ClientError, Result};

/// What a [`TableWriter`]'s commit does with the table's existing rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteMode {
    /// Add the rows.
    #[default]
    Append,
    /// Replace every row of the table.
    Overwrite,
    /// Replace the rows of the partitions the new rows fall into.
    OverwritePartitions,
    /// Replace the files in [`WriterOptions::replace_files`] with the new rows (copy-on-write
    /// DELETE and UPDATE). Not re-based after a conflict: the caller read those files as of
    /// its base snapshot and must read again.
    ReplaceFiles,
}

/// Options of a [`TableWriter`].
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Roll to a new file past this many bytes.
    pub target_file_size: usize,
    pub mode: WriteMode,
    /// Extra snapshot summary properties.
    pub summary: HashMap<String, String>,
    /// The files a [`WriteMode::ReplaceFiles`] commit removes.
    pub replace_files: Vec<String>,
    /// The snapshot the written rows were derived from (default: the table's current one
    /// when the writer is created).
    pub base_snapshot_id: Option<i64>,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            target_file_size: 128 << 20,
            mode: WriteMode::Append,
            summary: HashMap::new(),
            replace_files: Vec::new(),
            base_snapshot_id: None,
        }
    }
}

type Inner = FanoutWriter<
    DataFileWriterBuilder<ParquetWriterBuilder, ReservedLocations, DefaultFileNameGenerator>,
>;

/// File locations reserved from the server (`ReserveDataFiles`), per partition directory,
/// so every file this writer writes is recorded before it is written and can be cleaned up
/// if the commit never happens. Should a pool run dry, a client-named path is used (the
/// file still commits; only orphan tracking misses it) and a warning logged.
#[derive(Clone)]
struct ReservedLocations {
    pools: Arc<Mutex<HashMap<String, VecDeque<String>>>>,
    fallback: DefaultLocationGenerator,
}

fn partition_dir(key: Option<&PartitionKey>) -> String {
    match key {
        Some(k) if !PartitionKey::is_effectively_none(key) => k.to_path(),
        _ => String::new(),
    }
}

impl LocationGenerator for ReservedLocations {
    fn generate_location(&self, key: Option<&PartitionKey>, file_name: &str) -> String {
        let dir = partition_dir(key);
        let reserved = self
            .pools
            .lock()
            .expect("pool poisoned")
            .get_mut(&dir)
            .and_then(VecDeque::pop_front);
        reserved.unwrap_or_else(|| {
            tracing::warn!(dir, "no reserved path left; naming the file on the client");
            self.fallback.generate_location(key, file_name)
        })
    }
}

/// Writes Parquet files for one table and commits them as one snapshot.
///
/// Files get Iceberg field ids and column statistics, are split by the table's partition
/// spec and rolled at the target size, and are named `<uuid>-<n>.parquet` so that writers
/// never collide. Nothing is visible to readers until [`TableWriter::commit`] returns.
pub struct TableWriter {
    client: FirnClient,
    table: TableIdent,
    options: WriterOptions,
    base_snapshot_id: Option<i64>,
    schema: SchemaRef,
    spec: PartitionSpecRef,
    partition_type: StructType,
    arrow_schema: ArrowSchemaRef,
    splitter: Option<RecordBatchPartitionSplitter>,
    writer: Inner,
    locations: ReservedLocations,
    rows: u64,
}

impl TableWriter {
    /// Prepares to write to `table` as of its current snapshot.
    pub async fn new(
        client: &FirnClient,
        table: &TableIdent,
        options: WriterOptions,
    ) -> Result<Self> {
        let t = client.load_table(table, true).await?;
        let base_snapshot_id = options.base_snapshot_id.or(t.current_snapshot_id);
        let meta: TableMetadata = serde_json::from_str(&t.metadata_json).map_err(|e| {
            ClientError::InvalidData(format!("the server sent unreadable table metadata: {e}"))
        })?;
        let schema = meta.current_schema().clone();
        let spec = meta.default_partition_spec().clone();
        let arrow_schema = Arc::new(schema_to_arrow_schema(&schema)?);
        let file_io = client.storage(table).await?.file_io();
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .build();
        let locations = ReservedLocations {
            pools: Arc::default(),
            fallback: DefaultLocationGenerator::new(&meta)?,
        };
        let rolling = RollingFileWriterBuilder::new(
            ParquetWriterBuilder::new(props, schema.clone()),
            options.target_file_size,
            file_io,
            locations.clone(),
            DefaultFileNameGenerator::new(
                uuid::Uuid::now_v7().to_string(),
                None,
                DataFileFormat::Parquet,
            ),
        );
        let splitter = if spec.is_unpartitioned() {
            None
        } else {
            Some(RecordBatchPartitionSplitter::try_new_with_computed_values(
                schema.clone(),
                spec.clone(),
            )?)
        };
        Ok(Self {
            client: client.clone(),
            table: table.clone(),
            options,
            base_snapshot_id,
            partition_type: meta.default_partition_type().clone(),
            schema,
            spec,
            arrow_schema,
            splitter,
            writer: FanoutWriter::new(DataFileWriterBuilder::new(rolling)),
            locations,
            rows: 0,
        })
    }

    /// The table's Arrow schema (with Iceberg field ids), which batches are aligned to.
    pub fn arrow_schema(&self) -> &ArrowSchemaRef {
        &self.arrow_schema
    }

    /// Writes a batch. Columns are matched to the table by name and cast to its types.
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let batch = align_batch(batch, &self.arrow_schema)?;
        self.rows += batch.num_rows() as u64;
        let parts = match &self.splitter {
            Some(s) => s.split(&batch)?,
            None => vec![(
                PartitionKey::new((*self.spec).clone(), self.schema.clone(), Struct::empty()),
                batch,
            )],
        };
        reserve_for(
            &self.client,
            &self.table,
            &self.locations,
            self.options.target_file_size,
            &parts,
        )
        .await?;
        for (key, part) in parts {
            self.writer.write(key, part).await?;
        }
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Closes the files and commits them (retrying safely); returns the commit's result.
    pub async fn commit(self) -> Result<pb::CommitResponse> {
        let files = self.writer.close().await?;
        if files.is_empty()
            && !matches!(
                self.options.mode,
                WriteMode::Overwrite | WriteMode::ReplaceFiles
            )
        {
            return Err(ClientError::InvalidData(
                "nothing was written: no rows to commit".into(),
            ));
        }
        let add = files
            .iter()
            .map(|f| proto_file(&self.partition_type, f))
            .collect::<Result<Vec<_>>>()?;
        use pb::commit_request::Operation as Op;
        use pb::overwrite_op::Remove;
        let operation = match self.options.mode {
            WriteMode::Append => Op::Append(pb::AppendOp { add }),
            WriteMode::Overwrite => Op::Overwrite(pb::OverwriteOp {
                add,
                remove: Some(Remove::All(true)),
            }),
            WriteMode::OverwritePartitions => Op::Overwrite(pb::OverwriteOp {
                add,
                remove: Some(Remove::AddedPartitions(true)),
            }),
            WriteMode::ReplaceFiles => Op::Overwrite(pb::OverwriteOp {
                add,
                remove: Some(Remove::Files(pb::FileList {
                    paths: self.options.replace_files.clone(),
                })),
            }),
        };
        let rebase = self.options.mode != WriteMode::ReplaceFiles;
        let req = pb::CommitRequest {
            ident: Some(ident(&self.table)),
            commit_id: uuid::Uuid::now_v7().to_string(),
            base_snapshot_id: self.base_snapshot_id,
            operation: Some(operation),
            summary: self.options.summary.clone(),
        };
        let client = self.client.clone();
        let table = self.table.clone();
        // An overwrite states the table's (or partitions') new content, so after a conflict
        // it is re-based on the current snapshot and tried again.
        self.client
            .commit(req, move |mut req| {
                let client = client.clone();
                let table = table.clone();
                async move {
                    if !rebase {
                        return Ok(None);
                    }
                    req.base_snapshot_id =
                        client.load_table(&table, false).await?.current_snapshot_id;
                    Ok(Some(req))
                }
            })
            .await
    }
}

/// The proto description of a written data file, statistics included.
fn proto_file(partition_type: &StructType, f: &DataFile) -> Result<pb::DataFile> {
    let stats =
        file_stats(f, partition_type).map_err(|e| ClientError::InvalidData(e.to_string()))?;
    let columns: BTreeMap<i32, pb::ColumnStats> = stats
        .columns
        .into_iter()
        .map(|(id, c)| {
            (
                id,
                pb::ColumnStats {
                    column_size: c.column_size,
                    value_count: c.value_count,
                    null_count: c.null_count,
                    nan_count: c.nan_count,
                    lower_bound: c.lower_bound,
                    upper_bound: c.upper_bound,
                },
            )
        })
        .collect();
    Ok(pb::DataFile {
        path: f.file_path().to_string(),
        file_size_bytes: f.file_size_in_bytes(),
        stats: Some(pb::FileStats {
            record_count: stats.record_count,
            columns: columns.into_iter().collect(),
            partition_json: if stats.partition.is_empty() {
                String::new()
            } else {
                serde_json::Value::Object(stats.partition).to_string()
            },
            split_offsets: stats.split_offsets,
        }),
    })
}

/// Aligns `batch` to `target`: columns matched by name (exactly, else ignoring case), cast
/// to the target types (failing on lossy casts), missing nullable columns filled with nulls.
pub fn align_batch(batch: &RecordBatch, target: &ArrowSchemaRef) -> Result<RecordBatch> {
    let src = batch.schema();
    for f in src.fields() {
        if target.field_with_name(f.name()).is_err()
            && !target
                .fields()
                .iter()
                .any(|t| t.name().eq_ignore_ascii_case(f.name()))
        {
            return Err(ClientError::InvalidData(format!(
                "column {} is not in the table (columns: {})",
                f.name(),
                target
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let opts = CastOptions {
        safe: false,
        ..Default::default()
    };
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(target.fields().len());
    for t in target.fields() {
        let idx = src.index_of(t.name()).ok().or_else(|| {
            src.fields()
                .iter()
                .position(|f| f.name().eq_ignore_ascii_case(t.name()))
        });
        let col = match idx {
            Some(i) => {
                let c = batch.column(i);
                if c.data_type() == t.data_type() {
                    c.clone()
                } else {
                    cast_with_options(c, t.data_type(), &opts).map_err(|e| {
                        ClientError::InvalidData(format!(
                            "column {}: cannot convert {} to the table's {}: {e}",
                            t.name(),
                            c.data_type(),
                            t.data_type()
                        ))
                    })?
                }
            }
            None if t.is_nullable() => new_null_array(t.data_type(), batch.num_rows()),
            None => {
                return Err(ClientError::InvalidData(format!(
                    "required column {} is missing",
                    t.name()
                )));
            }
        };
        if !t.is_nullable() && col.null_count() > 0 {
            return Err(ClientError::InvalidData(format!(
                "required column {} holds {} nulls",
                t.name(),
                col.null_count()
            )));
        }
        cols.push(col);
    }
    Ok(RecordBatch::try_new(target.clone(), cols)?)
}

/// Makes sure each partition of `parts` has a reserved path for every file writing it
/// may open (at least one, more when the part is larger than the target size).
async fn reserve_for(
    client: &FirnClient,
    table: &TableIdent,
    locations: &ReservedLocations,
    target_file_size: usize,
    parts: &[(PartitionKey, RecordBatch)],
) -> Result<()> {
    let mut want: Vec<String> = Vec::new();
    {
        let pools = locations.pools.lock().expect("pool poisoned");
        let mut asked: HashMap<String, usize> = HashMap::new();
        for (key, part) in parts {
            let dir = partition_dir(Some(key));
            // Memory size over-estimates the file size; capped, the pool refills next time.
            let need = (part.get_array_memory_size() / target_file_size.max(1) + 1).min(64);
            let have = pools.get(&dir).map_or(0, VecDeque::len) + asked.get(&dir).unwrap_or(&0);
            if have < need {
                *asked.entry(dir.clone()).or_default() += need - have;
                want.extend(std::iter::repeat_n(dir, need - have));
            }
        }
    }
    if want.is_empty() {
        return Ok(());
    }
    let paths = client.reserve_data_files(table, want.clone()).await?;
    let mut pools = locations.pools.lock().expect("pool poisoned");
    for (dir, path) in want.into_iter().zip(paths) {
        pools.entry(dir).or_default().push_back(path);
    }
    Ok(())
}
