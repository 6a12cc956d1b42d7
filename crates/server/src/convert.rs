//! Conversions between the proto messages and firn-core's types, and the one mapping of
//! core errors to gRPC status codes.

use std::collections::HashMap;

use firn_core::{
    ColumnStatsSpec, CompareOp, Error, FileStatsSpec, NewFile, Operation, OverwriteScope,
    ResolvedSnapshot, ScanFilter, ScanPlan, SnapshotChange, SnapshotInfo, SnapshotSelector,
    TableIdent, TableInfo,
};
use firn_proto::v1 as pb;
use iceberg::spec::Datum;
use tonic::{Code, Status};

/// Maps a core error to its gRPC status. Conflicts are ABORTED (retry after re-reading);
/// an unknown outcome is UNAVAILABLE or INTERNAL, never ABORTED.
pub fn status(e: Error) -> Status {
    let code = match &e {
        Error::NotFound { .. } => Code::NotFound,
        Error::AlreadyExists { .. } => Code::AlreadyExists,
        Error::InvalidArgument { .. } => Code::InvalidArgument,
        Error::Conflict { .. } | Error::RequirementFailed { .. } => Code::Aborted,
        Error::FailedPrecondition(_) => Code::FailedPrecondition,
        Error::TooLarge(_) => Code::ResourceExhausted,
        Error::Unavailable { .. } => Code::Unavailable,
        Error::Corrupt { .. } => Code::DataLoss,
        Error::Internal { .. } => Code::Internal,
        Error::Unauthenticated(_) => Code::Unauthenticated,
        Error::PermissionDenied { .. } | Error::Forbidden(_) => Code::PermissionDenied,
    };
    if matches!(code, Code::Internal | Code::Unavailable | Code::DataLoss) {
        tracing::warn!(error = ?e, "request failed");
    }
    Status::new(code, e.to_string())
}

pub(crate) fn invalid(field: &str, reason: impl Into<String>) -> Status {
    status(Error::invalid(field, reason))
}

pub(crate) fn ident(field: &str, id: Option<pb::TableIdent>) -> Result<TableIdent, Status> {
    let pb::TableIdent { namespace, name } = id.ok_or_else(|| invalid(field, "is required"))?;
    let ident = TableIdent::new(namespace, name);
    ident.validate().map_err(status)?;
    Ok(ident)
}

pub(crate) fn pb_ident(i: &TableIdent) -> pb::TableIdent {
    pb::TableIdent {
        namespace: i.namespace.clone(),
        name: i.name.clone(),
    }
}

pub(crate) fn table(t: TableInfo) -> pb::Table {
    let TableInfo {
        ident,
        table_uuid,
        location,
        metadata_location,
        version,
        current_snapshot_id,
        metadata_json,
        schema_json,
        partition_spec_json,
        properties,
        warehouse,
    } = t;
    pb::Table {
        ident: Some(pb_ident(&ident)),
        table_uuid,
        location,
        metadata_location,
        version,
        current_snapshot_id,
        metadata_json: metadata_json.unwrap_or_default(),
        schema_json,
        partition_spec_json,
        properties,
        warehouse,
    }
}

pub(crate) fn snapshot(s: SnapshotInfo) -> pb::Snapshot {
    let SnapshotInfo {
        snapshot_id,
        parent_snapshot_id,
        sequence_number,
        timestamp_ms,
        operation,
        summary,
        manifest_list,
        schema_id,
        commit_id,
    } = s;
    pb::Snapshot {
        snapshot_id,
        parent_snapshot_id,
        sequence_number,
        timestamp_ms,
        operation,
        summary,
        manifest_list,
        schema_id,
        commit_id,
    }
}

fn partition_json(
    field: &str,
    s: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, Status> {
    if s.trim().is_empty() {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_str::<serde_json::Value>(s) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(_) => Err(invalid(field, "must be a JSON object")),
        Err(e) => Err(invalid(field, format!("not JSON: {e}"))),
    }
}

fn new_file(f: pb::DataFile) -> Result<NewFile, Status> {
    let pb::DataFile {
        path,
        file_size_bytes,
        stats,
    } = f;
    if path.is_empty() {
        return Err(invalid("add.path", "is empty"));
    }
    let stats = stats
        .map(|s| {
            let pb::FileStats {
                record_count,
                columns,
                partition_json: pj,
                split_offsets,
            } = s;
            let columns: HashMap<i32, ColumnStatsSpec> = columns
                .into_iter()
                .map(|(id, c)| {
                    let pb::ColumnStats {
                        column_size,
                        value_count,
                        null_count,
                        nan_count,
                        lower_bound,
                        upper_bound,
                    } = c;
                    (
                        id,
                        ColumnStatsSpec {
                            column_size,
                            value_count,
                            null_count,
                            nan_count,
                            lower_bound,
                            upper_bound,
                        },
                    )
                })
                .collect();
            Ok::<_, Status>(FileStatsSpec {
                record_count,
                columns,
                partition: partition_json("stats.partition_json", &pj)?,
                split_offsets,
            })
        })
        .transpose()?;
    Ok(NewFile {
        path,
        file_size_bytes,
        stats,
    })
}

fn new_files(files: Vec<pb::DataFile>) -> Result<Vec<NewFile>, Status> {
    files.into_iter().map(new_file).collect()
}

pub(crate) fn operation(op: Option<pb::commit_request::Operation>) -> Result<Operation, Status> {
    use pb::commit_request::Operation as Op;
    use pb::overwrite_op::Remove;
    Ok(
        match op.ok_or_else(|| invalid("operation", "is required (append, overwrite or delete)"))? {
            Op::Append(pb::AppendOp { add }) => Operation::Append {
                add: new_files(add)?,
            },
            Op::Overwrite(pb::OverwriteOp { add, remove }) => {
                let remove = match remove.ok_or_else(|| {
                    invalid(
                        "overwrite.remove",
                        "is required (all, files, partitions or added_partitions)",
                    )
                })? {
                    Remove::All(true) => OverwriteScope::All,
                    Remove::AddedPartitions(true) => OverwriteScope::AddedPartitions,
                    Remove::All(false) | Remove::AddedPartitions(false) => {
                        return Err(invalid("overwrite.remove", "a flag scope must be true"));
                    }
                    Remove::Files(pb::FileList { paths }) => OverwriteScope::Files(paths),
                    Remove::Partitions(pb::PartitionList { partitions_json }) => {
                        OverwriteScope::Partitions(
                            partitions_json
                                .iter()
                                .map(|p| partition_json("overwrite.partitions", p))
                                .collect::<Result<_, _>>()?,
                        )
                    }
                };
                Operation::Overwrite {
                    add: new_files(add)?,
                    remove,
                }
            }
            Op::Delete(pb::DeleteFilesOp { paths }) => Operation::Delete { paths },
            Op::Replace(pb::ReplaceFilesOp { add, remove }) => Operation::Replace {
                add: new_files(add)?,
                remove,
            },
        },
    )
}

pub(crate) fn selector(at: Option<pb::SnapshotSelector>) -> SnapshotSelector {
    use pb::snapshot_selector::Kind;
    match at.and_then(|a| a.kind) {
        None => SnapshotSelector::Current,
        Some(Kind::SnapshotId(id)) => SnapshotSelector::Id(id),
        Some(Kind::Ref(r)) => SnapshotSelector::Ref(r),
        Some(Kind::AsOfTimestampMs(ms)) => SnapshotSelector::AsOfMs(ms),
    }
}

pub(crate) fn resolved(r: ResolvedSnapshot) -> pb::ResolvedSnapshot {
    pb::ResolvedSnapshot {
        snapshot: r.snapshot.map(snapshot),
        schema_json: serde_json::to_string(&r.schema).expect("schema serialises"),
        location: r.location,
    }
}

fn literal(field: &str, l: Option<pb::Literal>) -> Result<Datum, Status> {
    use pb::literal::Value;
    Ok(match l.and_then(|l| l.value) {
        None => return Err(invalid(field, "a literal has no value")),
        Some(Value::Boolean(b)) => Datum::bool(b),
        Some(Value::Long(v)) => Datum::long(v),
        Some(Value::Double(v)) => Datum::double(v),
        Some(Value::String(v)) => Datum::string(v),
        Some(Value::Binary(v)) => Datum::binary(v),
        Some(Value::Date(v)) => Datum::date(v),
        Some(Value::TimestampMicros(v)) => Datum::timestamp_micros(v),
        Some(Value::TimestamptzMicros(v)) => Datum::timestamptz_micros(v),
    })
}

/// Most nodes a filter may have.
const MAX_FILTER_NODES: usize = 10_000;

pub(crate) fn filter(f: pb::Filter) -> Result<ScanFilter, Status> {
    let mut budget = MAX_FILTER_NODES;
    filter_node(f, &mut budget, 0)
}

fn filter_node(f: pb::Filter, budget: &mut usize, depth: usize) -> Result<ScanFilter, Status> {
    use pb::filter::Kind;
    if *budget == 0 || depth > 200 {
        return Err(invalid(
            "filter",
            format!("is too large (at most {MAX_FILTER_NODES} nodes, 200 deep)"),
        ));
    }
    *budget -= 1;
    let list = |l: pb::FilterList, budget: &mut usize| {
        l.filters
            .into_iter()
            .map(|f| filter_node(f, budget, depth + 1))
            .collect::<Result<Vec<_>, Status>>()
    };
    Ok(match f.kind {
        None => return Err(invalid("filter", "a filter node has no kind")),
        Some(Kind::And(l)) => ScanFilter::And(list(l, budget)?),
        Some(Kind::Or(l)) => ScanFilter::Or(list(l, budget)?),
        Some(Kind::Not(f)) => ScanFilter::Not(Box::new(filter_node(*f, budget, depth + 1)?)),
        Some(Kind::IsNull(c)) => ScanFilter::IsNull(c),
        Some(Kind::IsNotNull(c)) => ScanFilter::IsNotNull(c),
        Some(Kind::Compare(c)) => {
            use pb::comparison::Op;
            let op = match Op::try_from(c.op).unwrap_or(Op::Unspecified) {
                Op::Unspecified => {
                    return Err(invalid("filter.compare.op", "must be set to a comparison"));
                }
                Op::Eq => CompareOp::Eq,
                Op::NotEq => CompareOp::NotEq,
                Op::Lt => CompareOp::Lt,
                Op::LtEq => CompareOp::LtEq,
                Op::Gt => CompareOp::Gt,
                Op::GtEq => CompareOp::GtEq,
            };
            ScanFilter::Compare {
                column: c.column,
                op,
                value: literal("filter.compare.value", c.value)?,
            }
        }
        Some(Kind::InList(l)) => ScanFilter::In {
            column: l.column,
            values: l
                .values
                .into_iter()
                .map(|v| literal("filter.in_list.values", Some(v)))
                .collect::<Result<_, _>>()?,
        },
    })
}

pub(crate) fn scan_plan(p: ScanPlan) -> pb::PlanScanResponse {
    pb::PlanScanResponse {
        snapshot: Some(resolved(p.resolved)),
        files: p
            .files
            .into_iter()
            .map(|f| pb::ScanFile {
                path: f.path,
                file_size_bytes: f.file_size,
                record_count: f.record_count,
                deletes: f
                    .deletes
                    .into_iter()
                    .map(|d| pb::ScanDeleteFile {
                        path: d.path,
                        file_size_bytes: d.file_size,
                        record_count: d.record_count,
                        equality_ids: d.equality_ids,
                    })
                    .collect(),
            })
            .collect(),
        files_total: p.files_total,
    }
}

pub(crate) fn snapshot_change(
    action: Option<pb::manage_snapshots_request::Action>,
) -> Result<SnapshotChange, Status> {
    use pb::manage_snapshots_request::Action;
    Ok(match action {
        None => return Err(invalid("action", "must name a change")),
        Some(Action::RollbackToSnapshot(id)) => SnapshotChange::RollbackTo(id),
        Some(Action::RollbackToTimestampMs(ms)) => SnapshotChange::RollbackToTimestamp(ms),
        Some(Action::SetCurrentSnapshot(id)) => SnapshotChange::SetCurrent(id),
        Some(Action::SetCurrentRef(name)) => SnapshotChange::SetCurrentRef(name),
        Some(Action::CreateTag(r)) => SnapshotChange::CreateTag {
            name: r.name,
            snapshot_id: r.snapshot_id,
        },
        Some(Action::CreateBranch(r)) => SnapshotChange::CreateBranch {
            name: r.name,
            snapshot_id: r.snapshot_id,
        },
        Some(Action::DropTag(n)) => SnapshotChange::DropTag(n),
        Some(Action::DropBranch(n)) => SnapshotChange::DropBranch(n),
    })
}
