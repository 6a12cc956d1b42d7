//! Iceberg and Arrow schemas.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema as ArrowSchema, SchemaRef};
use iceberg::spec::Schema;

use crate::error::{QueryError, Result};

/// Parses an Iceberg schema sent by the server.
pub(crate) fn parse_schema(json: &str) -> Result<Schema> {
    serde_json::from_str(json)
        .map_err(|e| QueryError::Invalid(format!("the server sent an unreadable schema: {e}")))
}

/// The Arrow schema of an Iceberg schema; every field carries its Iceberg field id
/// (`PARQUET:field_id`), which is how data files are read.
///
/// Strings and binaries are view types, as DataFusion's Parquet reader produces them, so
/// reading needs no conversion.
pub(crate) fn arrow_schema(schema: &Schema) -> Result<SchemaRef> {
    let s: ArrowSchema = iceberg::arrow::schema_to_arrow_schema(schema)
        .map_err(|e| QueryError::Invalid(format!("schema has no Arrow form: {e}")))?;
    let fields: Vec<Field> = s
        .fields()
        .iter()
        .map(|f| {
            let t = match f.data_type() {
                DataType::Utf8 | DataType::LargeUtf8 => DataType::Utf8View,
                DataType::Binary | DataType::LargeBinary => DataType::BinaryView,
                other => other.clone(),
            };
            f.as_ref().clone().with_data_type(t)
        })
        .collect();
    Ok(Arc::new(ArrowSchema::new_with_metadata(
        fields,
        s.metadata().clone(),
    )))
}

/// The Iceberg field id of an Arrow field, when it has one.
pub(crate) fn field_id(f: &datafusion::arrow::datatypes::Field) -> Option<i32> {
    f.metadata()
        .get(parquet_field_id_key())
        .and_then(|v| v.parse().ok())
}

pub(crate) fn parquet_field_id_key() -> &'static str {
    "PARQUET:field_id"
}
