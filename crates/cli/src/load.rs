//! Reading local Parquet, CSV and JSON-lines files into Arrow batches shaped like a table,
//! a batch at a time: a load holds a few batches of its input, whatever the file's size.

use std::fs::File;
use std::io::{BufReader, Seek};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use arrow::array::RecordBatch;
use arrow::datatypes::{Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

const BATCH_ROWS: usize = 64 * 1024;

/// Batches read ahead of the writer: reading overlaps writing, and memory stays bounded.
const READ_AHEAD: usize = 2;

/// The batches of one file.
pub type Batches = Box<dyn Iterator<Item = anyhow::Result<RecordBatch>> + Send>;

/// The table's schema without Iceberg field-id metadata (what text readers should parse to).
fn plain(schema: &SchemaRef) -> Vec<Field> {
    schema
        .fields()
        .iter()
        .map(|f| Field::new(f.name(), f.data_type().clone(), true))
        .collect()
}

/// The batches of `path`, read on a thread of their own at most [`READ_AHEAD`] batches
/// ahead of the receiver. The file is opened (and a CSV header checked) before this
/// returns; a later read error arrives in its place among the batches.
pub fn stream_file(
    path: &Path,
    table: &SchemaRef,
) -> anyhow::Result<tokio::sync::mpsc::Receiver<anyhow::Result<RecordBatch>>> {
    let batches = read_file(path, table)?;
    let (tx, rx) = tokio::sync::mpsc::channel(READ_AHEAD);
    tokio::task::spawn_blocking(move || {
        for b in batches {
            // The receiver is gone when the load failed: stop reading.
            if tx.blocking_send(b).is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// Reads a file by its extension, lazily. CSV and JSON values are parsed as the table's
/// column types; Parquet columns are cast later, when the writer aligns the batches.
fn read_file(path: &Path, table: &SchemaRef) -> anyhow::Result<Batches> {
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
            Ok(Box::new(reader.map(|b| Ok(b?))))
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
            Ok(Box::new(reader.map(|b| Ok(b?))))
        }
        "json" | "jsonl" | "ndjson" => {
            let reader = arrow::json::ReaderBuilder::new(Arc::new(Schema::new(plain(table))))
                .with_batch_size(BATCH_ROWS)
                .with_strict_mode(true)
                .build(BufReader::new(file))?;
            Ok(Box::new(reader.map(|b| Ok(b?))))
        }
        other => bail!("unknown file type {other:?}: use .parquet, .csv or .jsonl"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::DataType;

    #[tokio::test]
    async fn a_file_is_read_a_batch_at_a_time_and_a_late_error_comes_in_its_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.csv");
        let mut text = String::from("id,name\n");
        for i in 0..BATCH_ROWS + 10 {
            text.push_str(&format!("{i},n{i}\n"));
        }
        text.push_str("ten,bad\n");
        std::fs::write(&path, text).unwrap();
        let table: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        let mut batches = stream_file(&path, &table).unwrap();
        // The first batch arrives although the file's last line does not parse: nothing
        // waits for the whole file.
        let first = batches.recv().await.unwrap().unwrap();
        assert_eq!(first.num_rows(), BATCH_ROWS);
        let mut rows = first.num_rows();
        let mut failed = None;
        while let Some(b) = batches.recv().await {
            match b {
                Ok(b) => rows += b.num_rows(),
                Err(e) => failed = Some(e.to_string()),
            }
        }
        let e = failed.expect("the bad line fails the read");
        assert!(e.contains("ten"), "{e}");
        assert!(rows < BATCH_ROWS + 10, "no batch holds the bad line");
        // A header naming no column of the table fails before any batch.
        let odd = dir.path().join("odd.csv");
        std::fs::write(&odd, "id,colour\n1,red\n").unwrap();
        let e = stream_file(&odd, &table).err().unwrap().to_string();
        assert!(e.contains("colour"), "{e}");
    }
}
