//! Reading local Parquet, CSV and JSON-lines files into Arrow batches shaped like a table.

use std::fs::File;
use std::io::{BufReader, Seek};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use arrow::array::RecordBatch;
use arrow::datatypes::{Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

const BATCH_ROWS: usize = 64 * 1024;

/// The table's schema without Iceberg field-id metadata (what text readers should parse to).
fn plain(schema: &SchemaRef) -> Vec<Field> {
    schema
        .fields()
        .iter()
        .map(|f| Field::new(f.name(), f.data_type().clone(), true))
        .collect()
}

/// Reads a file by its extension. CSV and JSON values are parsed as the table's column
/// types; Parquet columns are cast later, when the writer aligns the batches.
pub fn read_file(path: &Path, table: &SchemaRef) -> anyhow::Result<Vec<RecordBatch>> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let file = File::open(path)?;
    match ext.as_str() {
        "parquet" | "parq" => {
            let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                .context("not a readable Parquet file")?
                .with_batch_size(BATCH_ROWS)
                .build()?;
            Ok(reader.collect::<Result<Vec<_>, _>>()?)
        }
        "csv" => {
            let mut file = file;
            let fields = plain(table);
            let (header, _) = arrow::csv::reader::Format::default()
                .with_header(true)
                .infer_schema(BufReader::new(&file), Some(0))?;
            file.rewind()?;
            let mut cols = Vec::new();
            for h in header.fields() {
                let f = fields
                    .iter()
                    .find(|f| f.name() == h.name() || f.name().eq_ignore_ascii_case(h.name()))
                    .with_context(|| {
                        format!(
                            "CSV column {:?} is not in the table (columns: {})",
                            h.name(),
                            fields
                                .iter()
                                .map(|f| f.name().as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    })?;
                cols.push(Field::new(h.name(), f.data_type().clone(), true));
            }
            let reader = arrow::csv::ReaderBuilder::new(Arc::new(Schema::new(cols)))
                .with_header(true)
                .with_batch_size(BATCH_ROWS)
                .build(BufReader::new(file))?;
            Ok(reader.collect::<Result<Vec<_>, _>>()?)
        }
        "json" | "jsonl" | "ndjson" => {
            let reader = arrow::json::ReaderBuilder::new(Arc::new(Schema::new(plain(table))))
                .with_batch_size(BATCH_ROWS)
                .with_strict_mode(true)
                .build(BufReader::new(file))?;
            Ok(reader.collect::<Result<Vec<_>, _>>()?)
        }
        other => bail!("unknown file type {other:?}: use .parquet, .csv or .jsonl"),
    }
}
