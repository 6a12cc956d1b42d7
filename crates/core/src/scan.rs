//! Reading a table: which snapshot a selector names, and which files a scan must read.
//!
//! Contracts:
//! - A [`SnapshotSelector`] resolves to exactly one snapshot or fails: an unknown id or ref
//!   is `NotFound`, a timestamp before the table's first snapshot is `InvalidArgument`.
//!   Nothing silently falls back to the current snapshot.
//! - Timestamps resolve through the snapshot log (the history of the `main` pointer), so
//!   after a rollback a timestamp names what readers saw at that time.
//! - [`ScanFilter`] only prunes: a planned scan may contain files with no matching row
//!   (readers apply their filter again), never miss a file with a matching row.
//! - Planning reads the snapshot's manifest list and manifests (cached, immutable); it
//!   never lists the warehouse.

use std::collections::HashMap;

use iceberg::spec::{
    DataContentType, DataFile, Datum, ManifestContentType, ManifestStatus, NestedField,
    PrimitiveLiteral, PrimitiveType, Schema, TableMetadata, Transform, Type,
};

use crate::commit::resolved_seq;
use crate::db::TableRow;
use crate::error::{Error, ObjectKind, Result};
use crate::model::SnapshotInfo;
use crate::table::Shared;

/// Which snapshot of a table to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotSelector {
    /// The table's current snapshot (the head of `main`).
    Current,
    Id(i64),
    /// A tag or branch name; `main` is the current snapshot.
    Ref(String),
    /// The snapshot that was current at this time (milliseconds since the epoch).
    AsOfMs(i64),
}

/// A filter over a table's columns, used to skip files. See the module contract.
#[derive(Debug, Clone, PartialEq)]
pub enum ScanFilter {
    And(Vec<ScanFilter>),
    Or(Vec<ScanFilter>),
    Not(Box<ScanFilter>),
    Compare {
        column: String,
        op: CompareOp,
        value: Datum,
    },
    IsNull(String),
    IsNotNull(String),
    In {
        column: String,
        values: Vec<Datum>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

/// A snapshot resolved from a selector, with the schema it was written with.
#[derive(Debug, Clone)]
pub struct ResolvedSnapshot {
    /// `None`: the table has no snapshot yet (reads are empty).
    pub snapshot: Option<SnapshotInfo>,
    pub schema: Schema,
    pub location: String,
}

/// A delete file that applies to a data file.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanDeleteFile {
    pub path: String,
    pub file_size: u64,
    pub record_count: u64,
    /// Field ids of an equality delete; empty for a position delete.
    pub equality_ids: Vec<i32>,
}

/// One data file a scan reads.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanFile {
    pub path: String,
    pub file_size: u64,
    pub record_count: u64,
    pub deletes: Vec<ScanDeleteFile>,
}

/// The files of one snapshot a scan must read.
#[derive(Debug, Clone)]
pub struct ScanPlan {
    pub resolved: ResolvedSnapshot,
    pub files: Vec<ScanFile>,
    /// Live data files of the snapshot before pruning.
    pub files_total: u64,
}

/// Resolves `selector` on the table in `row` (whose parsed base metadata is `meta`).
pub(crate) async fn resolve(
    shared: &Shared,
    row: &TableRow,
    meta: &TableMetadata,
    selector: &SnapshotSelector,
) -> Result<ResolvedSnapshot> {
    let db = &shared.db;
    let snapshot_id = match selector {
        SnapshotSelector::Current => row.current_snapshot_id,
        SnapshotSelector::Id(id) => Some(*id),
        SnapshotSelector::Ref(name) if name == "main" => row.current_snapshot_id,
        SnapshotSelector::Ref(name) => match db.ref_snapshot(row.table_id, name).await? {
            Some(id) => Some(id),
            None => {
                return Err(Error::not_found(
                    ObjectKind::Ref,
                    format!("{name} of table {}", row.ident),
                ));
            }
        },
        SnapshotSelector::AsOfMs(ms) => {
            match db.snapshot_as_of(row.table_id, *ms, row.version).await? {
                Some(id) => Some(id),
                None => {
                    let when = chrono::DateTime::from_timestamp_millis(*ms)
                        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string())
                        .unwrap_or_else(|| ms.to_string());
                    return Err(Error::invalid(
                        "timestamp",
                        format!(
                            "table {} had no snapshot at {when}: that is before its first snapshot",
                            row.ident
                        ),
                    ));
                }
            }
        }
    };
    let Some(id) = snapshot_id else {
        return Ok(ResolvedSnapshot {
            snapshot: None,
            schema: meta.current_schema().as_ref().clone(),
            location: row.location.clone(),
        });
    };
    let snap = db
        .snapshot(row.table_id, id)
        .await?
        .filter(|s| s.sequence_number <= row.last_sequence_number)
        .ok_or_else(|| {
            Error::not_found(ObjectKind::Snapshot, format!("{id} of table {}", row.ident))
        })?;
    let schema = schema_of(meta, snap.schema_id)?;
    Ok(ResolvedSnapshot {
        snapshot: Some(snap),
        schema,
        location: row.location.clone(),
    })
}

fn schema_of(meta: &TableMetadata, schema_id: i32) -> Result<Schema> {
    meta.schema_by_id(schema_id)
        .map(|s| s.as_ref().clone())
        .ok_or_else(|| Error::internal(format!("schema {schema_id} is not in the table metadata")))
}

/// Plans a scan of `resolved` with `filter`.
pub(crate) async fn plan(
    shared: &Shared,
    meta: &TableMetadata,
    resolved: ResolvedSnapshot,
    filter: Option<&ScanFilter>,
) -> Result<ScanPlan> {
    let Some(snap) = &resolved.snapshot else {
        return Ok(ScanPlan {
            resolved,
            files: Vec::new(),
            files_total: 0,
        });
    };
    let warehouse = shared.warehouse_of(&resolved.location).await?;
    let list =
        crate::storage::manifests::read_manifest_list(&warehouse, &snap.manifest_list).await?;
    let pruner = filter.map(|f| Pruner::new(f, &resolved.schema, meta));
    // Entries stay in the (shared) manifest cache; only what the plan needs is copied.
    let mut manifests = Vec::with_capacity(list.entries().len());
    for m in list.entries() {
        manifests.push((m, shared.manifests.get(&warehouse, meta, m).await?));
    }
    let mut data: Vec<(&DataFile, i64, i32)> = Vec::new();
    let mut deletes: Vec<(&DataFile, i64, i32)> = Vec::new();
    let mut files_total = 0u64;
    for (m, entries) in &manifests {
        for e in entries.iter() {
            if e.status() == ManifestStatus::Deleted {
                continue;
            }
            let seq = resolved_seq(e, m);
            match m.content {
                ManifestContentType::Data => {
                    files_total += 1;
                    let f = e.data_file();
                    if pruner
                        .as_ref()
                        .is_none_or(|p| p.might_match(f, m.partition_spec_id))
                    {
                        data.push((f, seq, m.partition_spec_id));
                    }
                }
                ManifestContentType::Deletes => {
                    deletes.push((e.data_file(), seq, m.partition_spec_id));
                }
            }
        }
    }
    let files = data
        .into_iter()
        .map(|(f, seq, spec)| ScanFile {
            path: f.file_path().to_string(),
            file_size: f.file_size_in_bytes(),
            record_count: f.record_count(),
            deletes: deletes
                .iter()
                .filter(|(d, dseq, dspec)| applies(d, *dseq, *dspec, f, seq, spec))
                .map(|(d, _, _)| ScanDeleteFile {
                    path: d.file_path().to_string(),
                    file_size: d.file_size_in_bytes(),
                    record_count: d.record_count(),
                    equality_ids: d.equality_ids().unwrap_or_default(),
                })
                .collect(),
        })
        .collect();
    Ok(ScanPlan {
        resolved,
        files,
        files_total,
    })
}

/// Whether delete file `d` (sequence `dseq`) applies to data file `f` (sequence `fseq`),
/// per the Iceberg v2 rules: position deletes apply to data of the same or an older
/// sequence number, equality deletes to strictly older data; both within the same
/// partition (equality deletes of an unpartitioned spec apply everywhere).
fn applies(d: &DataFile, dseq: i64, dspec: i32, f: &DataFile, fseq: i64, fspec: i32) -> bool {
    match d.content_type() {
        DataContentType::PositionDeletes => {
            if let Some(target) = d.referenced_data_file() {
                return target == f.file_path() && fseq <= dseq;
            }
            fseq <= dseq && dspec == fspec && d.partition() == f.partition()
        }
        DataContentType::EqualityDeletes => {
            fseq < dseq
                && (d.partition().fields().is_empty()
                    || (dspec == fspec && d.partition() == f.partition()))
        }
        DataContentType::Data => false,
    }
}

/// Evaluates a [`ScanFilter`] against a data file's statistics and identity partitions.
struct Pruner<'a> {
    filter: &'a ScanFilter,
    /// Column name -> (field id, type).
    columns: HashMap<String, (i32, PrimitiveType)>,
    /// Spec id -> (source field id -> position in the partition struct) for identity fields.
    identity: HashMap<i32, HashMap<i32, usize>>,
}

impl<'a> Pruner<'a> {
    fn new(filter: &'a ScanFilter, schema: &Schema, meta: &TableMetadata) -> Self {
        let columns = schema
            .as_struct()
            .fields()
            .iter()
            .filter_map(
                |f: &std::sync::Arc<NestedField>| match f.field_type.as_ref() {
                    Type::Primitive(p) => Some((f.name.clone(), (f.id, p.clone()))),
                    _ => None,
                },
            )
            .collect();
        let identity = meta
            .partition_specs_iter()
            .map(|spec| {
                let m = spec
                    .fields()
                    .iter()
                    .enumerate()
                    .filter(|(_, pf)| pf.transform == Transform::Identity)
                    .map(|(i, pf)| (pf.source_id, i))
                    .collect();
                (spec.spec_id(), m)
            })
            .collect();
        Self {
            filter,
            columns,
            identity,
        }
    }

    fn might_match(&self, f: &DataFile, spec_id: i32) -> bool {
        self.eval(self.filter, f, spec_id)
    }

    fn eval(&self, filter: &ScanFilter, f: &DataFile, spec: i32) -> bool {
        match filter {
            ScanFilter::And(fs) => fs.iter().all(|x| self.eval(x, f, spec)),
            ScanFilter::Or(fs) => fs.iter().any(|x| self.eval(x, f, spec)),
            // Statistics cannot refute a negation in general.
            ScanFilter::Not(_) => true,
            ScanFilter::IsNull(c) => match self.columns.get(c) {
                Some((id, _)) => f.null_value_counts().get(id).is_none_or(|n| *n > 0),
                None => true,
            },
            ScanFilter::IsNotNull(c) => match self.columns.get(c) {
                Some((id, _)) => !all_null(f, *id),
                None => true,
            },
            ScanFilter::Compare { column, op, value } => self.compare(column, *op, value, f, spec),
            ScanFilter::In { column, values } => values
                .iter()
                .any(|v| self.compare(column, CompareOp::Eq, v, f, spec)),
        }
    }

    fn compare(&self, column: &str, op: CompareOp, value: &Datum, f: &DataFile, spec: i32) -> bool {
        let Some((id, ty)) = self.columns.get(column) else {
            return true;
        };
        let Ok(v) = value.clone().to(&Type::Primitive(ty.clone())) else {
            return true;
        };
        if v.is_nan() || matches!(ty, PrimitiveType::Float | PrimitiveType::Double) {
            // NaN ordering and float bounds are not worth the risk.
            return true;
        }
        if all_null(f, *id) {
            // SQL comparisons with NULL are never true.
            return false;
        }
        let partition_value = self
            .identity
            .get(&spec)
            .and_then(|m| m.get(id))
            .and_then(|i| f.partition().fields().get(*i))
            .and_then(|l| l.as_ref())
            .and_then(|l| match l {
                iceberg::spec::Literal::Primitive(p) => Some(p),
                _ => None,
            });
        let lower = partition_value.or_else(|| f.lower_bounds().get(id).map(Datum::literal));
        let upper = partition_value.or_else(|| f.upper_bounds().get(id).map(Datum::literal));
        let v = v.literal();
        let lt = |a: Option<&PrimitiveLiteral>, b: &PrimitiveLiteral| a.is_some_and(|a| a < b);
        let gt = |a: Option<&PrimitiveLiteral>, b: &PrimitiveLiteral| a.is_some_and(|a| a > b);
        match op {
            CompareOp::Eq => !(gt(lower, v) || lt(upper, v)),
            CompareOp::NotEq => !(lower == Some(v) && upper == Some(v)),
            CompareOp::Lt => !lower.is_some_and(|l| l >= v),
            CompareOp::LtEq => !gt(lower, v),
            CompareOp::Gt => !upper.is_some_and(|u| u <= v),
            CompareOp::GtEq => !lt(upper, v),
        }
    }
}

fn all_null(f: &DataFile, id: i32) -> bool {
    match (f.null_value_counts().get(&id), f.value_counts().get(&id)) {
        (Some(n), Some(v)) => n == v && *v > 0,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iceberg::spec::{DataFileBuilder, DataFileFormat, Struct};

    fn file(lower: i64, upper: i64, nulls: u64) -> DataFile {
        DataFileBuilder::default()
            .content(DataContentType::Data)
            .file_path("file:///t/data/a.parquet".into())
            .file_format(DataFileFormat::Parquet)
            .partition(Struct::empty())
            .record_count(10)
            .file_size_in_bytes(100)
            .value_counts(HashMap::from([(1, 10)]))
            .null_value_counts(HashMap::from([(1, nulls)]))
            .lower_bounds(HashMap::from([(1, Datum::long(lower))]))
            .upper_bounds(HashMap::from([(1, Datum::long(upper))]))
            .build()
            .unwrap()
    }

    fn schema() -> Schema {
        Schema::builder()
            .with_fields(vec![
                NestedField::optional(1, "id", Type::Primitive(PrimitiveType::Long)).into(),
            ])
            .build()
            .unwrap()
    }

    fn cmp(op: CompareOp, v: i64) -> ScanFilter {
        ScanFilter::Compare {
            column: "id".into(),
            op,
            value: Datum::long(v),
        }
    }

    fn matches(filter: &ScanFilter, f: &DataFile) -> bool {
        let p = Pruner {
            filter,
            columns: schema()
                .as_struct()
                .fields()
                .iter()
                .map(|f| (f.name.clone(), (f.id, PrimitiveType::Long)))
                .collect(),
            identity: HashMap::new(),
        };
        p.might_match(f, 0)
    }

    #[test]
    fn bounds_prune_only_files_that_cannot_match() {
        let f = file(10, 20, 0);
        use CompareOp::*;
        for (op, v, expect) in [
            (Eq, 9, false),
            (Eq, 10, true),
            (Eq, 20, true),
            (Eq, 21, false),
            (Lt, 10, false),
            (Lt, 11, true),
            (LtEq, 10, true),
            (LtEq, 9, false),
            (Gt, 20, false),
            (Gt, 19, true),
            (GtEq, 20, true),
            (GtEq, 21, false),
            (NotEq, 15, true),
        ] {
            assert_eq!(matches(&cmp(op, v), &f), expect, "{op:?} {v}");
        }
        assert!(!matches(&cmp(NotEq, 7), &file(7, 7, 0)));
        // An int literal is converted to the column's type.
        let int_lit = ScanFilter::Compare {
            column: "id".into(),
            op: Eq,
            value: Datum::int(30),
        };
        assert!(!matches(&int_lit, &f));
        assert!(matches(&ScanFilter::Or(vec![cmp(Eq, 1), cmp(Eq, 15)]), &f));
        assert!(!matches(
            &ScanFilter::And(vec![cmp(Gt, 1), cmp(Eq, 25)]),
            &f
        ));
        assert!(matches(&ScanFilter::Not(Box::new(cmp(Eq, 15))), &f));
        assert!(!matches(&ScanFilter::IsNull("id".into()), &f));
        assert!(matches(&ScanFilter::IsNull("id".into()), &file(1, 2, 3)));
        assert!(!matches(&cmp(Eq, 1), &file(1, 1, 10)));
        assert!(!matches(
            &ScanFilter::IsNotNull("id".into()),
            &file(1, 1, 10)
        ));
        // Unknown columns never prune.
        assert!(matches(&ScanFilter::IsNull("nope".into()), &f));
        assert!(matches(
            &ScanFilter::In {
                column: "id".into(),
                values: vec![Datum::long(1), Datum::long(12)]
            },
            &f
        ));
    }
}
