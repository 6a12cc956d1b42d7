//! Conversions between the proto messages and firn-core's types, and the one mapping of
//! core errors to gRPC status codes.

use std::collections::HashMap;

use firn_core::{
    ColumnStatsSpec, Error, FileStatsSpec, NewFile, Operation, OverwriteScope, SnapshotInfo,
    TableIdent, TableInfo,
};
use firn_proto::v1 as pb;
use tonic::{Code, Status};

/// Maps a core error to its gRPC status. Conflicts are ABORTED (retry after re-reading);
/// an unknown outcome is UNAVAILABLE or INTERNAL, never ABORTED.
pub fn status(e: Error) -> Status {
    let code = match &e {
        Error::NotFound { .. } => Code::NotFound,
        Error::AlreadyExists { .. } => Code::AlreadyExists,
        Error::InvalidArgument { .. } => Code::InvalidArgument,
        Error::Conflict { .. } => Code::Aborted,
        Error::FailedPrecondition(_) => Code::FailedPrecondition,
        Error::TooLarge(_) => Code::ResourceExhausted,
        Error::Unavailable { .. } => Code::Unavailable,
        Error::Internal { .. } => Code::Internal,
        _ => Code::Internal,
    };
    if code == Code::Internal || code == Code::Unavailable {
        tracing::warn!(error = ?e, "request failed");
    }
    Status::new(code, e.to_string())
}

fn invalid(field: &str, reason: impl Into<String>) -> Status {
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
        },
    )
}
