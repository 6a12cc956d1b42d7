//! Iceberg and Arrow schemas.

use std::sync::Arc;

use datafusion::arrow::datatypes::{Schema as ArrowSchema, SchemaRef};
use iceberg::spec::Schema;

use crate::error::{QueryError, Result};

/// Parses an Iceberg schema sent by the server.
pub(crate) fn parse_schema(json: &str) -> Result<Schema> {
    serde_json::from_str(json)
        .map_err(|e| QueryError::Invalid(format!("the server sent an unreadable schema: {e}")))
}

/// The Arrow schema of an Iceberg schema; every field carries its Iceberg field id
/// (`PARQUET:field_id`), which is how data files are read.
pub(crate) fn arrow_schema(schema: &Schema) -> Result<SchemaRef> {
    let s: ArrowSchema = iceberg::arrow::schema_to_arrow_schema(schema)
        .map_err(|e| QueryError::Invalid(format!("schema has no Arrow form: {e}")))?;
    Ok(Arc::new(s))
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
