//! A Firn table as a DataFusion table provider, pinned to one snapshot.
//!
//! Planning asks the Firn server which files the snapshot holds (pruned by the query's
//! filters on the server); the files are then read straight from object storage with
//! DataFusion's own Parquet reader, in parallel. Columns are matched to the snapshot's
//! schema by Iceberg field id, so renamed, added and dropped columns read right in every
//! snapshot; files written without field ids are matched by name.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Field, Schema as ArrowSchema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::stats::Precision;
use datafusion::common::{Statistics, not_impl_err, project_schema};
use datafusion::datasource::TableProvider;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::sink::{DataSink, DataSinkExec};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr_adapter::{
    DefaultPhysicalExprAdapterFactory, PhysicalExprAdapter, PhysicalExprAdapterFactory,
};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, SendableRecordBatchStream,
};
use firn_client::{FirnClient, TableIdent, TableWriter, WriteMode, WriterOptions, proto as pb};
use firn_core::Warehouse;
use futures::StreamExt;
use object_store::ObjectMeta;

use crate::error::{QueryError, Result, external};
use crate::filter;
use crate::schema::{arrow_schema, field_id, parse_schema};

/// One snapshot of a Firn table.
#[derive(Clone)]
pub struct FirnTable {
    client: FirnClient,
    ident: TableIdent,
    /// `None`: the table had no snapshot (it reads empty).
    snapshot_id: Option<i64>,
    schema: SchemaRef,
    /// The same schema in Iceberg form (for the reader of files with row-level deletes).
    iceberg_schema: Arc<iceberg::spec::Schema>,
    /// The table's files, reached with the server's storage access (renewed by the client).
    warehouse: Arc<Warehouse>,
    /// Whether this is the table's current state (only then can it be written).
    current: bool,
}

impl fmt::Debug for FirnTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FirnTable")
            .field("ident", &self.ident)
            .field("snapshot_id", &self.snapshot_id)
            .finish()
    }
}

impl FirnTable {
    /// The snapshot `at` names (unset: the current one), with that snapshot's schema.
    pub async fn resolve(
        client: &FirnClient,
        ident: &TableIdent,
        at: Option<pb::SnapshotSelector>,
    ) -> Result<Self> {
        let current = at.is_none();
        // Both round trips at once: which snapshot, and how to reach the files.
        let (r, warehouse) =
            futures::try_join!(client.resolve_snapshot(ident, at), client.storage(ident))?;
        let iceberg_schema = Arc::new(parse_schema(&r.schema_json)?);
        let schema = arrow_schema(&iceberg_schema)?;
        Ok(Self {
            client: client.clone(),
            ident: ident.clone(),
            snapshot_id: r.snapshot.map(|s| s.snapshot_id),
            schema,
            iceberg_schema,
            warehouse,
            current,
        })
    }

    pub fn ident(&self) -> &TableIdent {
        &self.ident
    }

    pub fn snapshot_id(&self) -> Option<i64> {
        self.snapshot_id
    }

    /// The files of this snapshot that may hold rows matching `filters`.
    pub(crate) async fn plan_files(&self, filters: &[Expr]) -> Result<Vec<pb::ScanFile>> {
        let Some(id) = self.snapshot_id else {
            return Ok(Vec::new());
        };
        let at = pb::SnapshotSelector {
            kind: Some(pb::snapshot_selector::Kind::SnapshotId(id)),
        };
        let plan = self
            .client
            .plan_scan(&self.ident, Some(at), filter::to_proto(filters))
            .await?;
        Ok(plan.files)
    }

    /// A scan of exactly `files` of this table (which must belong to this snapshot).
    pub(crate) async fn scan_files(
        &self,
        state: &dyn Session,
        files: &[pb::ScanFile],
        projection: Option<&Vec<usize>>,
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if files.is_empty() {
            return Ok(Arc::new(EmptyExec::new(project_schema(
                &self.schema,
                projection,
            )?)));
        }
        // Files with row-level deletes are read by iceberg's reader, which applies them; the
        // rest by DataFusion's Parquet reader. One plan unions both.
        if files.iter().any(|f| !f.deletes.is_empty()) {
            let (with_deletes, plain): (Vec<_>, Vec<_>) =
                files.iter().cloned().partition(|f| !f.deletes.is_empty());
            let deleting: Arc<dyn ExecutionPlan> = Arc::new(StreamingTableExec::try_new(
                self.schema.clone(),
                vec![Arc::new(DeletingReader {
                    table: self.clone(),
                    files: with_deletes,
                })],
                projection,
                Vec::new(),
                false,
                limit,
            )?);
            if plain.is_empty() {
                return Ok(deleting);
            }
            let plain = Box::pin(self.scan_files(state, &plain, projection, limit)).await?;
            return UnionExec::try_new(vec![plain, deleting]);
        }
        let warehouse = &self.warehouse;
        // One store per table, never one per bucket: each table's credentials may be scoped
        // to its own location (STS), so another table's store could not read its files.
        let store_url = ObjectStoreUrl::parse(table_store_url(warehouse.root()))?;
        let runtime = state.runtime_env();
        if runtime.object_store(&store_url).is_err() {
            runtime.register_object_store(store_url.as_ref(), warehouse.store().clone());
        }
        // The same path check as the server's: a planned path names the object it names
        // for every Iceberg engine (its key as written), and never one outside the store.
        let location_of = |uri: &str| {
            warehouse
                .object(uri)
                .map(|p| p.key().clone())
                .map_err(|e| external(QueryError::Invalid(e.to_string())))
        };
        // Each file goes to the group with the fewest bytes so far, in the order the server
        // planned them.
        let n = state.config().target_partitions().clamp(1, files.len());
        let mut groups: Vec<(u64, Vec<PartitionedFile>)> = (0..n)
            .map(|_| (0, Vec::with_capacity(files.len() / n + 1)))
            .collect();
        let (mut rows, mut bytes) = (0usize, 0usize);
        for f in files {
            let meta = ObjectMeta {
                location: location_of(&f.path)?,
                last_modified: chrono::DateTime::<chrono::Utc>::MIN_UTC,
                size: f.file_size_bytes,
                e_tag: None,
                version: None,
            };
            rows += f.record_count as usize;
            bytes += f.file_size_bytes as usize;
            let g = groups
                .iter_mut()
                .min_by_key(|(size, _)| *size)
                .expect("at least one group");
            g.0 += f.file_size_bytes;
            g.1.push(PartitionedFile::new_from_meta(meta));
        }
        let groups: Vec<FileGroup> = groups
            .into_iter()
            .filter(|(_, fs)| !fs.is_empty())
            .map(|(_, fs)| FileGroup::new(fs))
            .collect();
        // The snapshot's row count is exact (no delete files): `count(*)` needs no scan.
        let mut total = Statistics::new_unknown(&self.schema);
        total.num_rows = Precision::Exact(rows);
        total.total_byte_size = Precision::Inexact(bytes);
        let source = Arc::new(ParquetSource::new(self.schema.clone()));
        let conf = FileScanConfigBuilder::new(store_url, source)
            .with_file_groups(groups)
            .with_statistics(total)
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .with_expr_adapter(Some(Arc::new(FieldIdAdapterFactory)))
            .build();
        ParquetFormat::default()
            .with_options(state.table_options().parquet.clone())
            .create_physical_plan(state, conf)
            .await
    }
}

/// Reads data files together with the delete files that apply to them, with iceberg's
/// Arrow reader (position and equality deletes), as batches of the table's schema.
#[derive(Debug)]
struct DeletingReader {
    table: FirnTable,
    files: Vec<pb::ScanFile>,
}

impl PartitionStream for DeletingReader {
    fn schema(&self) -> &SchemaRef {
        &self.table.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        use iceberg::scan::{FileScanTask, FileScanTaskDeleteFile};
        use iceberg::spec::{DataContentType, DataFileFormat};
        let schema = self.table.schema.clone();
        let ids: Vec<i32> = self
            .table
            .iceberg_schema
            .as_struct()
            .fields()
            .iter()
            .map(|f| f.id)
            .collect();
        let tasks: Vec<iceberg::Result<FileScanTask>> = self
            .files
            .iter()
            .map(|f| {
                Ok(FileScanTask {
                    file_size_in_bytes: f.file_size_bytes,
                    start: 0,
                    length: f.file_size_bytes,
                    record_count: Some(f.record_count),
                    data_file_path: f.path.clone(),
                    data_file_format: DataFileFormat::Parquet,
                    schema: self.table.iceberg_schema.clone(),
                    project_field_ids: ids.clone(),
                    predicate: None,
                    deletes: f
                        .deletes
                        .iter()
                        .map(|d| FileScanTaskDeleteFile {
                            file_path: d.path.clone(),
                            file_size_in_bytes: d.file_size_bytes,
                            file_type: if d.equality_ids.is_empty() {
                                DataContentType::PositionDeletes
                            } else {
                                DataContentType::EqualityDeletes
                            },
                            partition_spec_id: 0,
                            equality_ids: (!d.equality_ids.is_empty())
                                .then(|| d.equality_ids.clone()),
                        })
                        .collect(),
                    partition: None,
                    partition_spec: None,
                    name_mapping: None,
                    case_sensitive: true,
                })
            })
            .collect();
        let file_io = self.table.warehouse.file_io();
        let target = schema.clone();
        let stream = futures::stream::once(async move {
            let reader =
                iceberg::arrow::ArrowReaderBuilder::new(file_io, iceberg::Runtime::current())
                    .build();
            reader
                .read(Box::pin(futures::stream::iter(tasks)))
                .map(|r| r.stream())
                .map_err(|e| DataFusionError::External(Box::new(e)))
        })
        .map(move |s| {
            let target = target.clone();
            match s {
                Ok(batches) => batches
                    .map(move |b| {
                        b.map_err(|e| DataFusionError::External(Box::new(e)))
                            .and_then(|b| to_schema(&b, &target))
                    })
                    .boxed(),
                Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
            }
        })
        .flatten();
        Box::pin(RecordBatchStreamAdapter::new(schema, stream))
    }
}

/// `batch` with its columns cast to `target`'s types (e.g. strings to view types).
fn to_schema(batch: &RecordBatch, target: &SchemaRef) -> DfResult<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .zip(target.fields())
        .map(|(c, f)| datafusion::arrow::compute::cast(c, f.data_type()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(target.clone(), columns)?)
}

#[async_trait]
impl TableProvider for FirnTable {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                if filter::translatable(f) {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let files = self.plan_files(filters).await.map_err(external)?;
        // With filters the limit is applied after them, above this scan.
        let limit = if filters.is_empty() { limit } else { None };
        self.scan_files(state, &files, projection, limit).await
    }

    async fn insert_into(
        &self,
        _state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if !self.current {
            return not_impl_err!(
                "cannot write to a past snapshot of {}: time travel is read-only",
                self.ident
            );
        }
        let mode = match insert_op {
            InsertOp::Append => WriteMode::Append,
            InsertOp::Overwrite => WriteMode::Overwrite,
            InsertOp::Replace => {
                return not_impl_err!("REPLACE INTO is not supported; use INSERT OVERWRITE");
            }
        };
        let sink = FirnSink {
            client: self.client.clone(),
            ident: self.ident.clone(),
            schema: self.schema.clone(),
            options: WriterOptions {
                mode,
                base_snapshot_id: self.snapshot_id,
                ..Default::default()
            },
        };
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }
}

/// Writes the rows of an INSERT as Parquet files and commits them in one snapshot.
#[derive(Debug)]
pub(crate) struct FirnSink {
    pub client: FirnClient,
    pub ident: TableIdent,
    pub schema: SchemaRef,
    pub options: WriterOptions,
}

impl DisplayAs for FirnSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "FirnSink: table={} mode={:?}",
            self.ident, self.options.mode
        )
    }
}

impl FirnSink {
    /// Writes every batch of `data` and commits; returns the rows written.
    pub(crate) async fn write_stream(&self, mut data: SendableRecordBatchStream) -> Result<u64> {
        let mut writer = TableWriter::new(&self.client, &self.ident, self.options.clone()).await?;
        while let Some(batch) = data.next().await {
            let batch = batch?;
            if batch.num_rows() > 0 {
                writer.write(&batch).await?;
            }
        }
        let rows = writer.rows();
        if rows == 0 && self.options.mode == WriteMode::Append {
            return Ok(0);
        }
        writer.commit().await?;
        Ok(rows)
    }
}

#[async_trait]
impl DataSink for FirnSink {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    async fn write_all(
        &self,
        data: SendableRecordBatchStream,
        _context: &Arc<TaskContext>,
    ) -> DfResult<u64> {
        self.write_stream(data).await.map_err(external)
    }
}

/// Adapts expressions over the table schema to a file's schema by Iceberg field id.
#[derive(Debug)]
pub(crate) struct FieldIdAdapterFactory;

impl PhysicalExprAdapterFactory for FieldIdAdapterFactory {
    fn create(
        &self,
        logical_file_schema: SchemaRef,
        physical_file_schema: SchemaRef,
    ) -> DfResult<Arc<dyn PhysicalExprAdapter>> {
        let renamed = rename_by_field_id(&logical_file_schema, &physical_file_schema);
        DefaultPhysicalExprAdapterFactory.create(logical_file_schema, renamed)
    }
}

/// `physical` with each field renamed to the name its field id has in `logical` (positions
/// unchanged, so column indexes still address the file). A field whose id the table does
/// not know gets a name no query can use. A file without any field ids is left as it is
/// (matched by name).
fn rename_by_field_id(logical: &ArrowSchema, physical: &SchemaRef) -> SchemaRef {
    if !physical.fields().iter().any(|f| field_id(f).is_some()) {
        return physical.clone();
    }
    let by_id: std::collections::HashMap<i32, &str> = logical
        .fields()
        .iter()
        .filter_map(|f| Some((field_id(f)?, f.name().as_str())))
        .collect();
    let fields: Vec<Field> = physical
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let name = match field_id(f).and_then(|id| by_id.get(&id)) {
                Some(n) => n.to_string(),
                None => format!("\u{0}firn_unmapped_{i}"),
            };
            f.as_ref().clone().with_name(name)
        })
        .collect();
    Arc::new(ArrowSchema::new_with_metadata(
        fields,
        physical.metadata().clone(),
    ))
}

/// The DataFusion object-store URL of the table rooted at `root`: one per table location.
fn table_store_url(root: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    root.hash(&mut h);
    format!("firn-table://{:016x}", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::DataType;
    use std::collections::HashMap;

    fn field(name: &str, id: i32) -> Field {
        Field::new(name, DataType::Int64, true).with_metadata(HashMap::from([(
            "PARQUET:field_id".to_string(),
            id.to_string(),
        )]))
    }

    #[test]
    fn physical_fields_take_the_table_names_of_their_ids() {
        // The table renamed 1 "a" -> "x" and dropped 2; the file still has a, b.
        let logical = ArrowSchema::new(vec![field("x", 1), field("c", 3)]);
        let physical = Arc::new(ArrowSchema::new(vec![field("a", 1), field("b", 2)]));
        let r = rename_by_field_id(&logical, &physical);
        assert_eq!(r.field(0).name(), "x");
        assert!(r.field(1).name().contains("unmapped"));
        // A file without ids is matched by name.
        let plain = Arc::new(ArrowSchema::new(vec![Field::new(
            "a",
            DataType::Int64,
            true,
        )]));
        assert_eq!(rename_by_field_id(&logical, &plain).field(0).name(), "a");
    }
}
