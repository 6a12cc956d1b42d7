//! Statements Firn carries out itself: CREATE TABLE [AS SELECT], DROP TABLE,
//! CREATE/DROP SCHEMA and DELETE (copy-on-write).

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema as ArrowSchema, SchemaRef, TimeUnit};
use datafusion::catalog::Session;
use datafusion::datasource::TableProvider;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::sql::sqlparser::ast::{
    ColumnOption, CreateTable, DataType as SqlType, Delete, ExactNumberInfo, FromTable, ObjectName,
    SchemaName, TimezoneInfo,
};
use firn_client::{TableIdent, WriteMode, WriterOptions, proto as pb};

use crate::error::{QueryError, Result};
use crate::session::{FirnSession, Output};
use crate::table::{FirnSink, FirnTable};
use crate::travel::ident_of;

/// The Firn table a SQL object name refers to.
pub(crate) fn ident(session: &FirnSession, name: &ObjectName) -> Result<TableIdent> {
    let o = session.context().state().config_options().clone();
    let r = datafusion::sql::planner::object_name_to_table_reference(
        name.clone(),
        o.sql_parser.enable_ident_normalization,
    )?;
    let id = ident_of(&r, &o.catalog.default_schema)?;
    id.validate()
        .map_err(|e| QueryError::Invalid(format!("{name}: {e}")))?;
    Ok(id)
}

/// The Iceberg type of a SQL column type.
fn iceberg_type(t: &SqlType) -> Result<String> {
    use SqlType as T;
    Ok(match t {
        T::Boolean | T::Bool => "boolean".into(),
        T::TinyInt(_) | T::SmallInt(_) | T::Int(_) | T::Integer(_) | T::Int4(_) | T::Int2(_) => {
            "int".into()
        }
        T::BigInt(_) | T::Int8(_) | T::Int64 => "long".into(),
        T::Float(_) | T::Real | T::Float4 | T::Float32 => "float".into(),
        T::Double(_) | T::DoublePrecision | T::Float8 | T::Float64 => "double".into(),
        T::Decimal(info) | T::Numeric(info) | T::Dec(info) => match info {
            ExactNumberInfo::PrecisionAndScale(p, s) => format!("decimal({p},{s})"),
            ExactNumberInfo::Precision(p) => format!("decimal({p},0)"),
            ExactNumberInfo::None => "decimal(38,18)".into(),
        },
        T::String(_)
        | T::Varchar(_)
        | T::Text
        | T::Char(_)
        | T::CharVarying(_)
        | T::Nvarchar(_) => "string".into(),
        T::Date => "date".into(),
        T::Timestamp(_, TimezoneInfo::None | TimezoneInfo::WithoutTimeZone) | T::Datetime(_) => {
            "timestamp".into()
        }
        T::Timestamp(_, TimezoneInfo::WithTimeZone | TimezoneInfo::Tz) => "timestamptz".into(),
        T::Time(_, _) => "time".into(),
        T::Binary(_) | T::Varbinary(_) | T::Bytea | T::Blob(_) => "binary".into(),
        T::Uuid => "uuid".into(),
        T::Custom(name, _) if name.to_string().eq_ignore_ascii_case("long") => "long".into(),
        T::Custom(name, _) if name.to_string().eq_ignore_ascii_case("timestamptz") => {
            "timestamptz".into()
        }
        other => {
            return Err(QueryError::Unsupported(format!(
                "column type {other} has no Iceberg equivalent in Firn yet"
            )));
        }
    })
}

/// The Iceberg type of an Arrow column type (CREATE TABLE AS SELECT).
fn iceberg_type_of_arrow(f: &Field) -> Result<String> {
    use DataType as D;
    Ok(match f.data_type() {
        D::Boolean => "boolean".into(),
        D::Int8 | D::Int16 | D::Int32 | D::UInt8 | D::UInt16 => "int".into(),
        D::Int64 | D::UInt32 => "long".into(),
        D::Float16 | D::Float32 => "float".into(),
        D::Float64 => "double".into(),
        D::Decimal128(p, s) if *s >= 0 => format!("decimal({p},{s})"),
        D::Utf8 | D::LargeUtf8 | D::Utf8View => "string".into(),
        D::Binary | D::LargeBinary | D::BinaryView => "binary".into(),
        D::Date32 | D::Date64 => "date".into(),
        D::Timestamp(_, None) => "timestamp".into(),
        D::Timestamp(_, Some(_)) => "timestamptz".into(),
        D::Time64(TimeUnit::Microsecond) => "time".into(),
        D::Null => {
            return Err(QueryError::Invalid(format!(
                "column {} has no type (it is always NULL): CAST it",
                f.name()
            )));
        }
        other => {
            return Err(QueryError::Unsupported(format!(
                "column {} of type {other} has no Iceberg equivalent in Firn yet",
                f.name()
            )));
        }
    })
}

pub(crate) async fn create_table(
    session: &FirnSession,
    ct: &CreateTable,
    partition_by: Option<&str>,
) -> Result<Output> {
    if ct.or_replace {
        return Err(QueryError::Unsupported(
            "CREATE OR REPLACE TABLE; drop the table first".into(),
        ));
    }
    if ct.external || ct.temporary {
        return Err(QueryError::Unsupported(
            "EXTERNAL and TEMPORARY tables; Firn tables are Iceberg tables".into(),
        ));
    }
    let id = ident(session, &ct.name)?;
    let client = session.client();
    let partition_by = match partition_by {
        Some(p) => firn_core::notation::parse_partition(p)
            .map_err(|e| QueryError::Invalid(format!("PARTITIONED BY: {e}")))?,
        None => Vec::new(),
    };
    let partition_by: Vec<pb::PartitionField> = partition_by
        .into_iter()
        .map(|p| pb::PartitionField {
            source_column: p.source_column,
            transform: p.transform,
            name: p.name.unwrap_or_default(),
        })
        .collect();
    // CTAS: plan the query first, so a bad query creates nothing.
    let query_stream = match &ct.query {
        Some(q) => {
            if !ct.columns.is_empty() {
                return Err(QueryError::Unsupported(
                    "column definitions together with AS SELECT".into(),
                ));
            }
            Some(
                session
                    .query(datafusion::sql::sqlparser::ast::Statement::Query(q.clone()))
                    .await?,
            )
        }
        None => None,
    };
    let fields: Vec<pb::Field> = match &query_stream {
        Some(s) => s
            .schema()
            .fields()
            .iter()
            .map(|f| {
                Ok(pb::Field {
                    name: f.name().clone(),
                    r#type: iceberg_type_of_arrow(f)?,
                    required: false,
                    doc: String::new(),
                })
            })
            .collect::<Result<_>>()?,
        None => ct
            .columns
            .iter()
            .map(|c| {
                let required = c
                    .options
                    .iter()
                    .any(|o| matches!(o.option, ColumnOption::NotNull));
                Ok(pb::Field {
                    name: c.name.value.clone(),
                    r#type: iceberg_type(&c.data_type)?,
                    required,
                    doc: String::new(),
                })
            })
            .collect::<Result<_>>()?,
    };
    if fields.is_empty() {
        return Err(QueryError::Invalid(format!(
            "CREATE TABLE {id}: no columns"
        )));
    }
    let req = pb::CreateTableRequest {
        ident: Some(firn_client::proto_ident(&id)),
        fields,
        partition_by,
        location: String::new(),
        properties: Default::default(),
    };
    match client.create_table(req).await {
        Ok(_) => {}
        Err(e) if ct.if_not_exists && e.code() == Some(tonic::Code::AlreadyExists) => {
            return Ok(Output::Done(format!("table {id} exists already")));
        }
        Err(e) => return Err(e.into()),
    }
    let Some(stream) = query_stream else {
        return Ok(Output::Done(format!("created table {id}")));
    };
    let table = FirnTable::resolve(client, &id, None).await?;
    let sink = FirnSink {
        client: client.clone(),
        ident: id.clone(),
        schema: table.schema(),
        options: WriterOptions::default(),
    };
    match sink.write_stream(stream).await {
        Ok(rows) => Ok(Output::Done(format!("created table {id} with {rows} rows"))),
        Err(e) => {
            // The table was created for this statement: do not leave it half-done.
            let _ = client.drop_table(&id).await;
            Err(e)
        }
    }
}

pub(crate) async fn drop_tables(
    session: &FirnSession,
    names: &[ObjectName],
    if_exists: bool,
) -> Result<Output> {
    let ids = names
        .iter()
        .map(|n| ident(session, n))
        .collect::<Result<Vec<_>>>()?;
    let mut dropped = Vec::new();
    for id in ids {
        match session.client().drop_table(&id).await {
            Ok(()) => dropped.push(id.to_string()),
            Err(e) if if_exists && crate::is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Output::Done(if dropped.is_empty() {
        "no table dropped".into()
    } else {
        format!("dropped table {}", dropped.join(", "))
    }))
}

fn schema_name(name: &SchemaName) -> Result<String> {
    match name {
        SchemaName::Simple(n) if n.0.len() == 1 => Ok(n.to_string().trim_matches('"').to_string()),
        other => Err(QueryError::Invalid(format!(
            "{other}: a namespace name is one identifier"
        ))),
    }
}

pub(crate) async fn create_schema(
    session: &FirnSession,
    name: &SchemaName,
    if_not_exists: bool,
) -> Result<Output> {
    let name = schema_name(name)?;
    match session.client().create_namespace(&name).await {
        Ok(_) => Ok(Output::Done(format!("created namespace {name}"))),
        Err(e) if if_not_exists && e.code() == Some(tonic::Code::AlreadyExists) => {
            Ok(Output::Done(format!("namespace {name} exists already")))
        }
        Err(e) => Err(e.into()),
    }
}

pub(crate) async fn drop_schemas(
    session: &FirnSession,
    names: &[ObjectName],
    if_exists: bool,
    cascade: bool,
) -> Result<Output> {
    if cascade {
        return Err(QueryError::Unsupported(
            "DROP SCHEMA ... CASCADE; drop the tables first".into(),
        ));
    }
    for n in names {
        let name = n.to_string().trim_matches('"').to_string();
        match session.client().drop_namespace(&name).await {
            Ok(()) => {}
            Err(e) if if_exists && crate::is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Output::Done("dropped".into()))
}

/// Some files of one snapshot of a table, as a table (to read and rewrite them).
#[derive(Debug)]
struct FileSubset {
    table: FirnTable,
    files: Vec<pb::ScanFile>,
}

#[async_trait]
impl TableProvider for FileSubset {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn schema(&self) -> SchemaRef {
        self.table.schema()
    }
    fn table_type(&self) -> TableType {
        TableType::Base
    }
    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.table
            .scan_files(state, &self.files, projection, limit)
            .await
    }
}

fn count_output(rows: u64, what: &str) -> Result<Output> {
    let schema = Arc::new(ArrowSchema::new(vec![Field::new(
        what,
        DataType::Int64,
        false,
    )]));
    let batch = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![rows as i64]))])?;
    Ok(Output::batch(batch))
}

/// `DELETE FROM t [WHERE p]`, copy-on-write: every file holding a row where `p` is true is
/// replaced by a file of its other rows, in one commit based on the snapshot that was read.
/// A concurrent commit to the table makes it fail with a conflict (nothing applied).
pub(crate) async fn delete(session: &FirnSession, d: &Delete) -> Result<Output> {
    let tables = match &d.from {
        FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
    };
    if tables.len() != 1
        || !tables[0].joins.is_empty()
        || d.using.is_some()
        || d.returning.is_some()
        || !d.order_by.is_empty()
        || d.limit.is_some()
        || !d.tables.is_empty()
    {
        return Err(QueryError::Unsupported(
            "DELETE of one table with an optional WHERE (no USING, joins, RETURNING, ORDER BY or LIMIT)"
                .into(),
        ));
    }
    let datafusion::sql::sqlparser::ast::TableFactor::Table {
        name,
        version: None,
        ..
    } = &tables[0].relation
    else {
        return Err(QueryError::Unsupported(
            "DELETE FROM a table name (not a subquery or a past version)".into(),
        ));
    };
    let id = ident(session, name)?;
    let client = session.client();
    let table = FirnTable::resolve(client, &id, None).await?;
    let ctx = session.context();
    let predicate = match &d.selection {
        Some(e) => Some(
            ctx.read_table(Arc::new(table.clone()))?
                .parse_sql_expr(&e.to_string())?,
        ),
        None => None,
    };
    let candidates = table.plan_files(predicate.as_slice()).await?;
    // Which candidates hold a row to delete, and how many.
    let mut affected = Vec::new();
    let mut deleted = 0u64;
    for f in candidates {
        let n = match &predicate {
            None => f.record_count,
            Some(p) => {
                let subset = FileSubset {
                    table: table.clone(),
                    files: vec![f.clone()],
                };
                ctx.read_table(Arc::new(subset))?
                    .filter(p.clone())?
                    .count()
                    .await? as u64
            }
        };
        if n > 0 {
            deleted += n;
            affected.push(f);
        }
    }
    if affected.is_empty() {
        return count_output(0, "count");
    }
    let paths: Vec<String> = affected.iter().map(|f| f.path.clone()).collect();
    let sink = FirnSink {
        client: client.clone(),
        ident: id.clone(),
        schema: table.schema(),
        options: WriterOptions {
            mode: WriteMode::ReplaceFiles,
            replace_files: paths,
            base_snapshot_id: table.snapshot_id(),
            ..Default::default()
        },
    };
    let remaining: datafusion::execution::SendableRecordBatchStream = match &predicate {
        // Every row goes: nothing to keep.
        None => Box::pin(RecordBatchStreamAdapter::new(
            table.schema(),
            futures::stream::empty(),
        )),
        Some(p) => {
            let subset = FileSubset {
                table: table.clone(),
                files: affected,
            };
            // Rows where the predicate is false or NULL stay.
            ctx.read_table(Arc::new(subset))?
                .filter(Expr::IsNotTrue(Box::new(p.clone())))?
                .execute_stream()
                .await?
        }
    };
    sink.write_stream(remaining).await?;
    count_output(deleted, "count")
}
