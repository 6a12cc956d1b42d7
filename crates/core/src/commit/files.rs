//! Turning the data files a commit names into Iceberg `DataFile`s.
//!
//! Each file is checked by one HEAD on its exact path (exists, size). Its statistics are
//! taken from the request when the writer sent them; otherwise Firn reads the Parquet footer:
//! record count, per-column value/null counts and bounds, the schema matched to the table's
//! by Parquet field id (or by column name for files written without ids), and the partition
//! derived from the bounds of the partition source columns.

use std::collections::HashMap;
use std::sync::Arc;

use iceberg::spec::{
    DataContentType, DataFile, DataFileBuilder, DataFileFormat, Datum, Literal, PrimitiveType,
    Schema, Struct, StructType,
};
use iceberg::transform::create_transform_function;
use parquet::basic::{LogicalType, TimeUnit, Type as PhysicalType};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::statistics::Statistics;
use parquet::schema::types::ColumnDescriptor;

use crate::error::{Error, Result};
use crate::model::{FileStatsSpec, NewFile};
use crate::storage::{ObjectPath, Warehouse};
use crate::table::FileContext;

/// Checks a new file and builds its `DataFile`. The Parquet footer is always read: counts
/// and bounds a writer sends are checked against it (see [`verified`]).
pub async fn resolve(warehouse: &Warehouse, ctx: &FileContext, file: &NewFile) -> Result<DataFile> {
    let object = ctx.check_path(warehouse, "add.path", &file.path)?;
    // One request: the size (no HEAD) and the footer.
    let (size, meta) = match read_footer(warehouse, &object).await {
        Ok(found) => found,
        Err(Error::NotFound { .. }) => {
            return Err(Error::invalid(
                "add.path",
                format!("{} does not exist", file.path),
            ));
        }
        Err(e) => return Err(e),
    };
    if size != file.file_size_bytes {
        return Err(Error::invalid(
            "add.file_size_bytes",
            format!(
                "{} is {size} bytes in storage, but the request says {}",
                file.path, file.file_size_bytes
            ),
        ));
    }
    let path = object.uri();
    let footer = footer_stats(ctx, path, &meta)?;
    match &file.stats {
        Some(stats) => verified(ctx, from_stats(ctx, path, size, stats)?, &footer),
        None => footer.into_data_file(ctx, path, size, &meta),
    }
}

fn from_stats(ctx: &FileContext, path: &str, size: u64, stats: &FileStatsSpec) -> Result<DataFile> {
    let mut b = DataFileBuilder::default();
    let (mut sizes, mut values, mut nulls, mut nans) = (
        HashMap::new(),
        HashMap::new(),
        HashMap::new(),
        HashMap::new(),
    );
    let (mut lower, mut upper) = (HashMap::new(), HashMap::new());
    for (&id, c) in &stats.columns {
        let field = ctx.schema.field_by_id(id).ok_or_else(|| {
            Error::invalid(
                "stats.columns",
                format!("{path}: field id {id} is not in the table schema"),
            )
        })?;
        c.column_size.map(|v| sizes.insert(id, v));
        c.value_count.map(|v| values.insert(id, v));
        c.null_count.map(|v| nulls.insert(id, v));
        c.nan_count.map(|v| nans.insert(id, v));
        for (bound, out, what) in [
            (&c.lower_bound, &mut lower, "lower_bound"),
            (&c.upper_bound, &mut upper, "upper_bound"),
        ] {
            if let Some(bytes) = bound {
                let ty = field.field_type.as_primitive_type().ok_or_else(|| {
                    Error::invalid(
                        format!("stats.columns[{id}].{what}"),
                        format!("{path}: field {} is not a primitive column", field.name),
                    )
                })?;
                let d = Datum::try_from_bytes(bytes, ty.clone()).map_err(|e| {
                    Error::invalid(
                        format!("stats.columns[{id}].{what}"),
                        format!("{path}: {e}"),
                    )
                })?;
                out.insert(id, d);
            }
        }
    }
    let partition = partition_from_json(&ctx.partition_type, &stats.partition)
        .map_err(|reason| Error::invalid("stats.partition", format!("{path}: {reason}")))?;
    b.content(DataContentType::Data)
        .file_path(path.to_string())
        .file_format(DataFileFormat::Parquet)
        .partition(partition)
        .partition_spec_id(ctx.spec.spec_id())
        .record_count(stats.record_count)
        .file_size_in_bytes(size)
        .column_sizes(sizes)
        .value_counts(values)
        .null_value_counts(nulls)
        .nan_value_counts(nans)
        .lower_bounds(lower)
        .upper_bounds(upper)
        .split_offsets((!stats.split_offsets.is_empty()).then(|| stats.split_offsets.clone()));
    b.build()
        .map_err(|e| Error::internal_from("building data file", e))
}

/// Parses a partition tuple given as a JSON object (partition field name -> value).
pub fn partition_from_json(
    partition_type: &StructType,
    values: &serde_json::Map<String, serde_json::Value>,
) -> std::result::Result<Struct, String> {
    for k in values.keys() {
        if partition_type.field_by_name(k).is_none() {
            return Err(format!("{k:?} is not a partition field of the table"));
        }
    }
    partition_type
        .fields()
        .iter()
        .map(|f| {
            let v = values
                .get(&f.name)
                .ok_or_else(|| format!("no value for partition field {:?}", f.name))?;
            Literal::try_from_json(v.clone(), &f.field_type)
                .map_err(|e| format!("partition field {:?}: {e}", f.name))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map(Struct::from_iter)
}

/// Renders a partition tuple as a JSON object.
/// The statistics of a data file as a commit carries them (bounds in Iceberg's
/// single-value binary form), for files described by Iceberg metadata: ones Firn's client
/// wrote, or ones a REST client's manifest names.
pub fn file_stats(f: &DataFile, partition_type: &StructType) -> Result<FileStatsSpec> {
    let mut columns: HashMap<i32, crate::model::ColumnStatsSpec> = HashMap::new();
    for (&id, &v) in f.column_sizes() {
        columns.entry(id).or_default().column_size = Some(v);
    }
    for (&id, &v) in f.value_counts() {
        columns.entry(id).or_default().value_count = Some(v);
    }
    for (&id, &v) in f.null_value_counts() {
        columns.entry(id).or_default().null_count = Some(v);
    }
    for (&id, &v) in f.nan_value_counts() {
        columns.entry(id).or_default().nan_count = Some(v);
    }
    for (&id, d) in f.lower_bounds() {
        columns.entry(id).or_default().lower_bound = Some(d.to_bytes()?.to_vec());
    }
    for (&id, d) in f.upper_bounds() {
        columns.entry(id).or_default().upper_bound = Some(d.to_bytes()?.to_vec());
    }
    Ok(FileStatsSpec {
        record_count: f.record_count(),
        columns,
        partition: partition_to_json(partition_type, f.partition())?,
        split_offsets: f.split_offsets().map(|s| s.to_vec()).unwrap_or_default(),
    })
}

pub fn partition_to_json(
    partition_type: &StructType,
    partition: &Struct,
) -> Result<serde_json::Map<String, serde_json::Value>> {
    partition_type
        .fields()
        .iter()
        .zip(partition.iter())
        .map(|(f, v)| {
            let json = match v {
                None => serde_json::Value::Null,
                Some(l) => l.clone().try_into_json(&f.field_type)?,
            };
            Ok((f.name.clone(), json))
        })
        .collect()
}

/// How much of a file's end is read in the first request: the footer of most files fits,
/// so one request gives the size (no HEAD) and the footer.
const FOOTER_GUESS: u64 = 64 << 10;
/// Largest footer Firn reads (a file claiming more is refused, not read into memory).
const MAX_FOOTER: u64 = 64 << 20;

/// The size and the Parquet footer of the file at `object`: one suffix read, a second one
/// when the footer is larger than [`FOOTER_GUESS`]. `NotFound` when the file is missing;
/// `InvalidArgument` when it is not Parquet or its footer is too large.
pub(crate) async fn read_footer(
    warehouse: &Warehouse,
    object: &ObjectPath,
) -> Result<(u64, Arc<ParquetMetaData>)> {
    use parquet::errors::ParquetError;
    use parquet::file::metadata::ParquetMetaDataReader;
    let path = object.uri();
    let unreadable = |e: ParquetError| {
        Error::invalid(
            "add.path",
            format!("{path} is not a readable Parquet file: {e}"),
        )
    };
    let (size, mut tail) = warehouse.tail(object, FOOTER_GUESS).await?;
    let mut reader = ParquetMetaDataReader::new();
    loop {
        match reader.try_parse_sized(&tail, size) {
            Ok(()) => break,
            Err(ParquetError::NeedMoreData(n)) if (n as u64) > tail.len() as u64 => {
                let n = n as u64;
                if n > size || n > MAX_FOOTER {
                    return Err(Error::invalid(
                        "add.path",
                        format!(
                            "{path}: its footer claims {n} bytes of a {size}-byte file; Firn reads \
                             footers of at most {MAX_FOOTER} bytes"
                        ),
                    ));
                }
                tail = match warehouse.get_range(object, size - n..size).await {
                    Ok(b) => b,
                    Err(Error::NotFound { .. }) => {
                        return Err(Error::invalid(
                            "add.path",
                            format!("{path} disappeared while it was being checked"),
                        ));
                    }
                    Err(e) => return Err(e),
                };
            }
            Err(e) => return Err(unreadable(e)),
        }
    }
    Ok((size, Arc::new(reader.finish().map_err(unreadable)?)))
}

/// What a Parquet footer says of a file's columns, by table field id.
struct FooterStats {
    record_count: u64,
    sizes: HashMap<i32, u64>,
    values: HashMap<i32, u64>,
    nulls: HashMap<i32, u64>,
    lower: HashMap<i32, Datum>,
    upper: HashMap<i32, Datum>,
}

impl FooterStats {
    fn into_data_file(
        self,
        ctx: &FileContext,
        path: &str,
        size: u64,
        meta: &ParquetMetaData,
    ) -> Result<DataFile> {
        let partition = partition_from_bounds(
            ctx,
            self.record_count,
            &self.lower,
            &self.upper,
            &self.nulls,
            &self.values,
        )
        .map_err(|reason| Error::invalid("add.path", format!("{path}: {reason}")))?;
        let mut b = DataFileBuilder::default();
        b.content(DataContentType::Data)
            .file_path(path.to_string())
            .file_format(DataFileFormat::Parquet)
            .partition(partition)
            .partition_spec_id(ctx.spec.spec_id())
            .record_count(self.record_count)
            .file_size_in_bytes(size)
            .column_sizes(self.sizes)
            .value_counts(self.values)
            .null_value_counts(self.nulls)
            .lower_bounds(self.lower)
            .upper_bounds(self.upper)
            .split_offsets(Some(
                meta.row_groups()
                    .iter()
                    .filter_map(|rg| rg.file_offset())
                    .collect(),
            ));
        b.build()
            .map_err(|e| Error::internal_from("building data file", e))
    }
}

/// Checks the statistics a writer sent for a file against themselves and the file's footer,
/// and returns the file with the footer's counts and bounds wherever the footer has them.
/// Refused (`InvalidArgument`, naming the column): a record count other than the footer's,
/// a lower bound above its upper bound, more nulls than values or more values than records
/// in a top-level column, bounds narrower than the footer's, and a partition other than the
/// one the footer's bounds imply. Bounds the footer cannot confirm are dropped, so no
/// unchecked statistic ever prunes a scan.
fn verified(ctx: &FileContext, sent: DataFile, footer: &FooterStats) -> Result<DataFile> {
    let path = sent.file_path().to_string();
    let bad = |field: String, reason: String| Error::invalid(field, format!("{path}: {reason}"));
    let name = |id: i32| ctx.schema.name_by_field_id(id).unwrap_or("?").to_string();
    check_consistent(&ctx.schema, &sent)?;
    check_record_count(&sent, footer.record_count)?;
    let mut lower = HashMap::new();
    let mut upper = HashMap::new();
    for (sent_bounds, footer_bounds, out, is_lower) in [
        (sent.lower_bounds(), &footer.lower, &mut lower, true),
        (sent.upper_bounds(), &footer.upper, &mut upper, false),
    ] {
        for (&id, d) in sent_bounds {
            let Some(f) = footer_bounds.get(&id) else {
                continue;
            };
            let narrower = if is_lower { d > f } else { d < f };
            if narrower {
                let which = if is_lower { "lower" } else { "upper" };
                return Err(bad(
                    format!("stats.columns[{id}]"),
                    format!(
                        "column {}: {which} bound {d} excludes values the file holds ({which} bound {f} in its footer)",
                        name(id)
                    ),
                ));
            }
        }
        // The footer's own bounds are exact; where it has none, nothing is kept.
        out.extend(footer_bounds.iter().map(|(k, v)| (*k, v.clone())));
    }
    if let Ok(implied) = partition_from_bounds(
        ctx,
        footer.record_count,
        &footer.lower,
        &footer.upper,
        &footer.nulls,
        &footer.values,
    ) && &implied != sent.partition()
    {
        return Err(bad(
            "stats.partition".into(),
            format!(
                "the request names partition {:?}, but the file's rows are in {:?}",
                sent.partition(),
                implied
            ),
        ));
    }
    let mut b = DataFileBuilder::default();
    b.content(DataContentType::Data)
        .file_path(path.clone())
        .file_format(DataFileFormat::Parquet)
        .partition(sent.partition().clone())
        .partition_spec_id(ctx.spec.spec_id())
        .record_count(footer.record_count)
        .file_size_in_bytes(sent.file_size_in_bytes())
        .column_sizes(footer.sizes.clone())
        .value_counts(footer.values.clone())
        .null_value_counts(footer.nulls.clone())
        .nan_value_counts(sent.nan_value_counts().clone())
        .lower_bounds(lower)
        .upper_bounds(upper)
        .split_offsets(sent.split_offsets().map(|s| s.to_vec()));
    b.build()
        .map_err(|e| Error::internal_from("building data file", e))
}

/// Refuses statistics that contradict themselves: a lower bound above its upper bound, more
/// nulls than values, or more values than records in a top-level column (`InvalidArgument`
/// naming the file and column). `schema` is the table schema the file's ids refer to.
pub fn check_consistent(schema: &Schema, f: &DataFile) -> Result<()> {
    let path = f.file_path();
    let bad = |id: i32, reason: String| {
        let name = schema.name_by_field_id(id).unwrap_or("?");
        Error::invalid(
            format!("stats.columns[{id}]"),
            format!("{path}: column {name}: {reason}"),
        )
    };
    for (&id, lo) in f.lower_bounds() {
        if let Some(hi) = f.upper_bounds().get(&id)
            && lo > hi
        {
            return Err(bad(
                id,
                format!("lower bound {lo} is above upper bound {hi}"),
            ));
        }
    }
    let top_level: std::collections::HashSet<i32> =
        schema.as_struct().fields().iter().map(|f| f.id).collect();
    for (&id, &values) in f.value_counts() {
        let nulls = f.null_value_counts().get(&id).copied().unwrap_or(0);
        if nulls > values {
            return Err(bad(id, format!("{nulls} nulls but only {values} values")));
        }
        if top_level.contains(&id) && values > f.record_count() {
            return Err(bad(
                id,
                format!("{values} values in {} records", f.record_count()),
            ));
        }
    }
    for (&id, &nulls) in f.null_value_counts() {
        if top_level.contains(&id) && nulls > f.record_count() {
            return Err(bad(
                id,
                format!("{nulls} nulls in {} records", f.record_count()),
            ));
        }
    }
    Ok(())
}

/// Refuses a record count other than the one the file's Parquet footer holds.
pub fn check_record_count(f: &DataFile, footer_records: u64) -> Result<()> {
    if f.record_count() != footer_records {
        return Err(Error::invalid(
            "stats.record_count",
            format!(
                "{}: the metadata says {} records, the Parquet footer {footer_records}",
                f.file_path(),
                f.record_count()
            ),
        ));
    }
    Ok(())
}

/// Builds a `DataFile` from a Parquet footer, checking the file's schema against the table's.
pub fn data_file_from_parquet(
    ctx: &FileContext,
    path: &str,
    size: u64,
    meta: &ParquetMetaData,
) -> Result<DataFile> {
    footer_stats(ctx, path, meta)?.into_data_file(ctx, path, size, meta)
}

/// Reads a footer's statistics, checking the file's schema against the table's.
fn footer_stats(ctx: &FileContext, path: &str, meta: &ParquetMetaData) -> Result<FooterStats> {
    let bad = |reason: String| Error::invalid("add.path", format!("{path}: {reason}"));
    let descr = meta.file_metadata().schema_descr();
    // Map each leaf column to a table field id.
    let mut leaf_ids = Vec::with_capacity(descr.num_columns());
    for col in descr.columns() {
        let info = col.self_type().get_basic_info();
        let dotted = col.path().string();
        let field = if info.has_id() {
            let id = info.id();
            let f = ctx.schema.field_by_id(id).ok_or_else(|| {
                bad(format!(
                    "column {dotted} has field id {id}, which is not in the table schema"
                ))
            })?;
            // Another name with the same id is a rename: the id decides.
            f.clone()
        } else {
            ctx.schema
                .field_by_name(&dotted)
                .ok_or_else(|| bad(format!("column {dotted} is not in the table schema")))?
                .clone()
        };
        let ty = field.field_type.as_primitive_type().ok_or_else(|| {
            bad(format!(
                "column {dotted} maps to {}, which is not a primitive column",
                field.name
            ))
        })?;
        if !compatible(ty, col) {
            return Err(bad(format!(
                "column {dotted} has Parquet type {} ({:?}), which does not fit the table's {} column {}",
                col.physical_type(),
                col.logical_type_ref(),
                ty,
                field.name
            )));
        }
        leaf_ids.push((field.id, ty.clone(), field.required));
    }
    // Every required top-level column must be present.
    let present: std::collections::HashSet<i32> = leaf_ids.iter().map(|(id, _, _)| *id).collect();
    for f in ctx.schema.as_struct().fields() {
        if f.required && f.field_type.is_primitive() && !present.contains(&f.id) {
            return Err(bad(format!("required column {} is missing", f.name)));
        }
    }

    let (mut sizes, mut values, mut nulls) = (HashMap::new(), HashMap::new(), HashMap::new());
    let mut lower: HashMap<i32, Datum> = HashMap::new();
    let mut upper: HashMap<i32, Datum> = HashMap::new();
    let mut no_bounds = std::collections::HashSet::new();
    // A column with a chunk whose null count is unknown has no null count at all.
    let mut unknown_nulls = std::collections::HashSet::new();
    // The footer is the writer's word too: counts are checked, sums cannot overflow.
    let count = |v: i64, what: &str| {
        u64::try_from(v).map_err(|_| bad(format!("its footer gives a negative {what} ({v})")))
    };
    for rg in meta.row_groups() {
        for (i, chunk) in rg.columns().iter().enumerate() {
            let (id, ty, _) = leaf_ids.get(i).ok_or_else(|| {
                bad("a row group of its footer has more columns than its schema".into())
            })?;
            let size = count(chunk.compressed_size(), "column size")?;
            let n_values = count(chunk.num_values(), "value count")?;
            let s = sizes.entry(*id).or_insert(0u64);
            *s = s.saturating_add(size);
            let v = values.entry(*id).or_insert(0u64);
            *v = v.saturating_add(n_values);
            match chunk.statistics().and_then(|s| s.null_count_opt()) {
                Some(n) => {
                    let c = nulls.entry(*id).or_insert(0u64);
                    *c = c.saturating_add(n);
                }
                None => {
                    unknown_nulls.insert(*id);
                }
            }
            let Some(stats) = chunk.statistics() else {
                no_bounds.insert(*id);
                continue;
            };
            let chunk_has_values = stats
                .null_count_opt()
                .map(|n| (n as i64) < chunk.num_values())
                .unwrap_or(true);
            match (bound(ty, stats, true), bound(ty, stats, false)) {
                (Some(lo), Some(hi)) => {
                    match lower.get(id) {
                        Some(cur) if *cur <= lo => {}
                        _ => {
                            lower.insert(*id, lo);
                        }
                    }
                    match upper.get(id) {
                        Some(cur) if *cur >= hi => {}
                        _ => {
                            upper.insert(*id, hi);
                        }
                    }
                }
                _ if !chunk_has_values => {}
                _ => {
                    no_bounds.insert(*id);
                }
            }
        }
    }
    nulls.retain(|id, _| !unknown_nulls.contains(id));
    for id in &no_bounds {
        lower.remove(id);
        upper.remove(id);
    }
    let record_count = count(meta.file_metadata().num_rows(), "row count")?;
    for (id, _, required) in &leaf_ids {
        if *required && nulls.get(id).copied().unwrap_or(0) > 0 {
            let name = ctx.schema.name_by_field_id(*id).unwrap_or("?");
            return Err(bad(format!("required column {name} holds nulls")));
        }
    }

    Ok(FooterStats {
        record_count,
        sizes,
        values,
        nulls,
        lower,
        upper,
    })
}

/// Whether a Parquet leaf column can be read as the Iceberg type `ty`.
fn compatible(ty: &PrimitiveType, col: &ColumnDescriptor) -> bool {
    use PrimitiveType as P;
    let logical = col.logical_type_ref();
    let micros = |unit: &TimeUnit| matches!(unit, TimeUnit::MICROS);
    match (ty, col.physical_type()) {
        (P::Boolean, PhysicalType::BOOLEAN) => true,
        (P::Int, PhysicalType::INT32) | (P::Long, PhysicalType::INT32) => matches!(
            logical,
            None | Some(LogicalType::Integer {
                is_signed: true,
                ..
            })
        ),
        (P::Long, PhysicalType::INT64) => {
            matches!(
                logical,
                None | Some(LogicalType::Integer {
                    is_signed: true,
                    ..
                })
            )
        }
        (P::Float, PhysicalType::FLOAT)
        | (P::Double, PhysicalType::FLOAT | PhysicalType::DOUBLE) => true,
        (P::Date, PhysicalType::INT32) => matches!(logical, Some(LogicalType::Date)),
        (P::Time, PhysicalType::INT64) => {
            matches!(logical, Some(LogicalType::Time { unit, .. }) if micros(unit))
        }
        (P::Timestamp, PhysicalType::INT64) => matches!(
            logical,
            Some(LogicalType::Timestamp { is_adjusted_to_u_t_c: false, unit }) if micros(unit)
        ),
        (P::Timestamptz, PhysicalType::INT64) => matches!(
            logical,
            Some(LogicalType::Timestamp { is_adjusted_to_u_t_c: true, unit }) if micros(unit)
        ),
        (P::String, PhysicalType::BYTE_ARRAY) => {
            matches!(logical, Some(LogicalType::String) | None)
        }
        (P::Binary, PhysicalType::BYTE_ARRAY) => !matches!(logical, Some(LogicalType::String)),
        (P::Uuid, PhysicalType::FIXED_LEN_BYTE_ARRAY) => col.type_length() == 16,
        (P::Fixed(n), PhysicalType::FIXED_LEN_BYTE_ARRAY) => col.type_length() as u64 == *n,
        (P::Decimal { precision, scale }, _) => matches!(
            logical,
            Some(LogicalType::Decimal { precision: p, scale: s })
                if *p as u32 == *precision && *s as u32 == *scale
        ),
        _ => false,
    }
}

/// An exact lower (`min`) or upper bound of a column chunk as an Iceberg datum.
fn bound(ty: &PrimitiveType, stats: &Statistics, min: bool) -> Option<Datum> {
    use PrimitiveType as P;
    let exact = if min {
        stats.min_is_exact()
    } else {
        stats.max_is_exact()
    };
    if !exact {
        return None;
    }
    match stats {
        Statistics::Boolean(s) => {
            let v = *(if min { s.min_opt() } else { s.max_opt() })?;
            matches!(ty, P::Boolean).then(|| Datum::bool(v))
        }
        Statistics::Int32(s) => {
            let v = *(if min { s.min_opt() } else { s.max_opt() })?;
            match ty {
                P::Int => Some(Datum::int(v)),
                P::Long => Some(Datum::long(v as i64)),
                P::Date => Some(Datum::date(v)),
                _ => None,
            }
        }
        Statistics::Int64(s) => {
            let v = *(if min { s.min_opt() } else { s.max_opt() })?;
            match ty {
                P::Long => Some(Datum::long(v)),
                P::Timestamp => Some(Datum::timestamp_micros(v)),
                P::Timestamptz => Some(Datum::timestamptz_micros(v)),
                P::Time => Datum::time_micros(v).ok(),
                _ => None,
            }
        }
        Statistics::Float(s) => {
            let v = *(if min { s.min_opt() } else { s.max_opt() })?;
            if v.is_nan() {
                return None;
            }
            match ty {
                P::Float => Some(Datum::float(v)),
                P::Double => Some(Datum::double(v as f64)),
                _ => None,
            }
        }
        Statistics::Double(s) => {
            let v = *(if min { s.min_opt() } else { s.max_opt() })?;
            (matches!(ty, P::Double) && !v.is_nan()).then(|| Datum::double(v))
        }
        Statistics::ByteArray(s) => {
            let v = if min { s.min_opt() } else { s.max_opt() }?;
            match ty {
                P::String => std::str::from_utf8(v.data()).ok().map(Datum::string),
                P::Binary => Some(Datum::binary(v.data().iter().copied())),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The partition of a file, from the bounds of each partition source column: every row must
/// fall into the same partition, or the file is refused.
fn partition_from_bounds(
    ctx: &FileContext,
    record_count: u64,
    lower: &HashMap<i32, Datum>,
    upper: &HashMap<i32, Datum>,
    nulls: &HashMap<i32, u64>,
    values: &HashMap<i32, u64>,
) -> std::result::Result<Struct, String> {
    let mut out = Vec::with_capacity(ctx.spec.fields().len());
    for pf in ctx.spec.fields() {
        let name = ctx
            .schema
            .name_by_field_id(pf.source_id)
            .unwrap_or("?")
            .to_string();
        let all_null = record_count == 0
            || (nulls.get(&pf.source_id).copied() == Some(record_count)
                && values.get(&pf.source_id).copied() == Some(record_count));
        let (lo, hi) = match (lower.get(&pf.source_id), upper.get(&pf.source_id)) {
            (Some(lo), Some(hi)) => (lo, hi),
            _ if all_null => {
                out.push(None);
                continue;
            }
            _ => {
                return Err(format!(
                    "the file has no statistics for partition column {name}; send partition values with the commit"
                ));
            }
        };
        if nulls.get(&pf.source_id).copied().unwrap_or(0) > 0 {
            return Err(format!(
                "partition column {name} holds both nulls and values, so the file spans several partitions"
            ));
        }
        let f = create_transform_function(&pf.transform).map_err(|e| e.to_string())?;
        let (a, b) = (
            f.transform_literal(lo).map_err(|e| e.to_string())?,
            f.transform_literal(hi).map_err(|e| e.to_string())?,
        );
        if a != b {
            return Err(format!(
                "rows span several partitions of {} ({} of {name} from {lo} to {hi}); write one file per partition",
                pf.name, pf.transform
            ));
        }
        out.push(a.map(|d| Literal::Primitive(d.literal().clone())));
    }
    Ok(Struct::from_iter(out))
}

#[cfg(test)]
mod tests {
    use iceberg::spec::{NestedField, PrimitiveType, Type};

    use super::*;

    fn partition_type() -> StructType {
        StructType::new(vec![
            NestedField::optional(1000, "ts_day", Type::Primitive(PrimitiveType::Date)).into(),
            NestedField::optional(1001, "region", Type::Primitive(PrimitiveType::String)).into(),
        ])
    }

    #[test]
    fn partition_json_round_trip() {
        let t = partition_type();
        let v: serde_json::Value = serde_json::json!({"ts_day": "2026-11-22", "region": "eu"});
        let s = partition_from_json(&t, v.as_object().unwrap()).unwrap();
        let back = partition_to_json(&t, &s).unwrap();
        assert_eq!(serde_json::Value::Object(back), v);
        let nulls = serde_json::json!({"ts_day": null, "region": null});
        assert!(partition_from_json(&t, nulls.as_object().unwrap()).is_ok());
    }

    #[test]
    fn partition_json_errors_name_the_field() {
        let t = partition_type();
        let missing = serde_json::json!({"ts_day": "2026-11-22"});
        assert!(
            partition_from_json(&t, missing.as_object().unwrap())
                .unwrap_err()
                .contains("region")
        );
        let extra = serde_json::json!({"ts_day": "2026-11-22", "region": "eu", "x": 1});
        assert!(
            partition_from_json(&t, extra.as_object().unwrap())
                .unwrap_err()
                .contains("\"x\"")
        );
        let wrong = serde_json::json!({"ts_day": "yesterday", "region": "eu"});
        assert!(
            partition_from_json(&t, wrong.as_object().unwrap())
                .unwrap_err()
                .contains("ts_day")
        );
    }

    #[test]
    fn paths_must_stay_inside_the_table() {
        let ctx = FileContext {
            location: "file:///w/ns/t".into(),
            schema: Arc::new(Schema::builder().build().unwrap()),
            spec: Arc::new(iceberg::spec::PartitionSpec::unpartition_spec()),
            partition_type: StructType::new(vec![]),
        };
        let w = Warehouse::open(crate::storage::WarehouseConfig::new("memory:///w")).unwrap();
        let ctx = FileContext {
            location: "memory:///w/ns/t".into(),
            ..ctx
        };
        assert!(
            ctx.check_path(&w, "p", "memory:///w/ns/t/data/a.parquet")
                .is_ok()
        );
        for bad in [
            "memory:///w/ns/t2/data/a.parquet",
            "memory:///w/ns/t/data/../../x.parquet",
            "memory:///w/ns/t/data/%2e%2e/%2e%2e/t2/x.parquet",
            "memory:///w/ns/t",
        ] {
            assert!(ctx.check_path(&w, "p", bad).is_err(), "{bad}");
        }
    }

    /// A Parquet file whose footer is larger than the first read: `columns` long columns.
    fn wide_parquet(columns: usize) -> Vec<u8> {
        use arrow::array::{ArrayRef, Int64Array};
        use arrow::datatypes::{DataType, Field, Schema as ArrowSchema};
        let fields: Vec<Field> = (0..columns)
            .map(|i| {
                Field::new(
                    format!("column_with_a_long_name_{i}"),
                    DataType::Int64,
                    true,
                )
            })
            .collect();
        let schema = Arc::new(ArrowSchema::new(fields));
        let cols: Vec<ArrayRef> = (0..columns)
            .map(|i| Arc::new(Int64Array::from(vec![i as i64, 7])) as ArrayRef)
            .collect();
        let batch = arrow::record_batch::RecordBatch::try_new(schema.clone(), cols).unwrap();
        let mut out = Vec::new();
        let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, schema, None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        out
    }

    #[tokio::test]
    async fn footers_are_read_in_one_request_or_two_and_bounded() {
        let w = Warehouse::open(crate::storage::WarehouseConfig::new("memory:///w")).unwrap();
        let put = |name: &str, bytes: Vec<u8>| {
            let p = w.object(&format!("memory:///w/ns/t/data/{name}")).unwrap();
            let w = &w;
            async move {
                w.put(&p, bytes.into()).await.unwrap();
                p
            }
        };
        let small = put("small.parquet", crate::testing::test_parquet(&[1, 2, 3])).await;
        let (size, meta) = read_footer(&w, &small).await.unwrap();
        assert_eq!(size, crate::testing::test_parquet(&[1, 2, 3]).len() as u64);
        assert_eq!(meta.file_metadata().num_rows(), 3);

        // A footer over the first read's size takes a second read, and is still right.
        let wide_bytes = wide_parquet(2000);
        let footer_len =
            u32::from_le_bytes(wide_bytes[wide_bytes.len() - 8..][..4].try_into().unwrap());
        assert!(u64::from(footer_len) > FOOTER_GUESS, "{footer_len}");
        let wide = put("wide.parquet", wide_bytes).await;
        let (_, meta) = read_footer(&w, &wide).await.unwrap();
        assert_eq!(meta.file_metadata().schema_descr().num_columns(), 2000);
        assert_eq!(meta.file_metadata().num_rows(), 2);

        // A footer length past the file is refused without reading it (the same check
        // bounds a footer over MAX_FOOTER in a file that large).
        let mut lying = crate::testing::test_parquet(&[1]);
        let n = lying.len();
        lying[n - 8..n - 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let lying = put("lying.parquet", lying).await;
        let e = read_footer(&w, &lying).await.unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
        assert!(e.to_string().contains("lying.parquet"), "{e}");

        let not_parquet = put("text.parquet", b"hello, world".to_vec()).await;
        let e = read_footer(&w, &not_parquet).await.unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");

        let missing = w.object("memory:///w/ns/t/data/none.parquet").unwrap();
        let e = read_footer(&w, &missing).await.unwrap_err();
        assert!(matches!(e, Error::NotFound { .. }), "{e}");
    }

    /// The footer of a one-column (`id long`, field id 1) file, and the context of a table
    /// with that column.
    fn id_footer_and_context() -> (ParquetMetaData, FileContext) {
        use iceberg::spec::NestedField;
        let bytes = bytes::Bytes::from(crate::testing::test_parquet(&[1, 2, 3]));
        let meta = parquet::file::metadata::ParquetMetaDataReader::new()
            .parse_and_finish(&bytes)
            .unwrap();
        let schema = Schema::builder()
            .with_fields(vec![
                NestedField::optional(1, "id", Type::Primitive(PrimitiveType::Long)).into(),
            ])
            .build()
            .unwrap();
        let ctx = FileContext {
            location: "memory:///w/ns/t".into(),
            schema: Arc::new(schema),
            spec: Arc::new(iceberg::spec::PartitionSpec::unpartition_spec()),
            partition_type: StructType::new(vec![]),
        };
        (meta, ctx)
    }

    /// `meta` with its row group repeated, each copy's `id` chunk changed by `f`.
    fn with_chunks(
        meta: &ParquetMetaData,
        num_rows: i64,
        chunks: &[&dyn Fn(
            parquet::file::metadata::ColumnChunkMetaDataBuilder,
        ) -> parquet::file::metadata::ColumnChunkMetaDataBuilder],
    ) -> ParquetMetaData {
        use parquet::file::metadata::FileMetaData;
        let fm = meta.file_metadata();
        let file = FileMetaData::new(
            fm.version(),
            num_rows,
            fm.created_by().map(str::to_string),
            fm.key_value_metadata().cloned(),
            fm.schema_descr_ptr(),
            fm.column_orders().cloned(),
        );
        let rg = meta.row_group(0).clone();
        let groups = chunks
            .iter()
            .map(|f| {
                let chunk = f(rg.column(0).clone().into_builder()).build().unwrap();
                rg.clone()
                    .into_builder()
                    .set_column_metadata(vec![chunk])
                    .build()
                    .unwrap()
            })
            .collect();
        ParquetMetaData::new(file, groups)
    }

    #[test]
    fn footer_counts_are_checked_not_trusted() {
        use parquet::file::statistics::Statistics;
        let (meta, ctx) = id_footer_and_context();
        let path = "memory:///w/ns/t/data/f.parquet";

        // A chunk without a null count, then one with: the column's null count is unknown
        // (it was a sentinel that overflowed when the next chunk's count was added).
        let unknown = |b: parquet::file::metadata::ColumnChunkMetaDataBuilder| {
            b.set_statistics(Statistics::int64(Some(1), Some(3), None, None, false))
        };
        let known = |b: parquet::file::metadata::ColumnChunkMetaDataBuilder| {
            b.set_statistics(Statistics::int64(Some(1), Some(3), None, Some(1), false))
        };
        let m = with_chunks(&meta, 6, &[&unknown, &known]);
        let stats = footer_stats(&ctx, path, &m).unwrap();
        assert!(!stats.nulls.contains_key(&1), "{:?}", stats.nulls);
        assert_eq!(stats.values[&1], 6);
        // A chunk with no statistics at all leaves the null count unknown too (it used to
        // count as zero nulls, which could prune `id IS NULL` wrongly).
        let none = |b: parquet::file::metadata::ColumnChunkMetaDataBuilder| b.clear_statistics();
        let m = with_chunks(&meta, 6, &[&none, &known]);
        assert!(!footer_stats(&ctx, path, &m).unwrap().nulls.contains_key(&1));

        // Negative counts are refused, not wrapped into huge ones.
        let m = with_chunks(&meta, -5, &[&known]);
        let e = footer_stats(&ctx, path, &m).err().unwrap();
        assert!(e.to_string().contains("negative row count"), "{e}");
        let negative =
            |b: parquet::file::metadata::ColumnChunkMetaDataBuilder| b.set_num_values(-1);
        let m = with_chunks(&meta, 3, &[&negative]);
        let e = footer_stats(&ctx, path, &m).err().unwrap();
        assert!(e.to_string().contains("negative value count"), "{e}");
    }
}
