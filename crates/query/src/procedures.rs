//! `CALL system.<procedure>(...)`, with Spark's procedure names and argument names.
//!
//! | procedure | arguments |
//! | --- | --- |
//! | `rollback_to_snapshot` | `table`, `snapshot_id` |
//! | `rollback_to_timestamp` | `table`, `timestamp` |
//! | `set_current_snapshot` | `table`, `snapshot_id` or `ref` |
//! | `create_tag` | `table`, `tag`, [`snapshot_id`] |
//! | `create_branch` | `table`, `branch`, [`snapshot_id`] |
//! | `drop_tag` | `table`, `tag` |
//! | `drop_branch` | `table`, `branch` |
//! | `expire_snapshots` | `table`, [`older_than`], [`retain_last`], [`snapshot_ids`] |
//! | `remove_orphan_files` | `table`, [`older_than`], [`dry_run`] |
//! | `rewrite_data_files` | `table`, [`where`], [`target_file_size_bytes`] |
//!
//! Arguments are positional or named (`table => 'ns.t'`). The snapshot changes return one
//! row with `previous_snapshot_id` and `current_snapshot_id`; `expire_snapshots` returns
//! one row of counts of deleted files, `remove_orphan_files` one row per orphan and
//! `rewrite_data_files` one row of counts, as Spark's do. The same changes are available over
//! gRPC (`ManageSnapshots`, `ExpireSnapshots`) and as `firn` subcommands; all go through one
//! implementation.

use std::sync::Arc;

use datafusion::arrow::array::{Array, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::ScalarValue;
use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, Function, FunctionArg, FunctionArgExpr, FunctionArguments,
};
use firn_client::{TableIdent, proto as pb};
use pb::manage_snapshots_request::Action;

use crate::error::{QueryError, Result};
use crate::session::{FirnSession, Output};

/// Parameters of each procedure, in positional order; `?` marks an optional one.
const PROCEDURES: &[(&str, &[&str])] = &[
    ("rollback_to_snapshot", &["table", "snapshot_id"]),
    ("rollback_to_timestamp", &["table", "timestamp"]),
    ("set_current_snapshot", &["table", "snapshot_id?", "ref?"]),
    ("create_tag", &["table", "tag", "snapshot_id?"]),
    ("create_branch", &["table", "branch", "snapshot_id?"]),
    ("drop_tag", &["table", "tag"]),
    ("drop_branch", &["table", "branch"]),
    (
        "expire_snapshots",
        &["table", "older_than?", "retain_last?", "snapshot_ids?"],
    ),
    ("remove_orphan_files", &["table", "older_than?", "dry_run?"]),
    (
        "rewrite_data_files",
        &["table", "where?", "target_file_size_bytes?"],
    ),
];

struct Args {
    procedure: String,
    values: Vec<(String, SqlExpr)>,
}

impl Args {
    fn get(&self, name: &str) -> Option<&SqlExpr> {
        self.values.iter().find(|(n, _)| n == name).map(|(_, e)| e)
    }

    fn required(&self, name: &str) -> Result<&SqlExpr> {
        self.get(name).ok_or_else(|| {
            QueryError::Invalid(format!("{}: argument {name} is missing", self.procedure))
        })
    }
}

fn bind(procedure: &str, f: &Function) -> Result<Args> {
    let names: Vec<String> = f
        .name
        .0
        .iter()
        .map(|p| p.to_string().to_lowercase())
        .collect();
    let qualified_ok = names.len() >= 2 && names[names.len() - 2] == "system";
    let params = PROCEDURES
        .iter()
        .find(|(n, _)| *n == procedure)
        .map(|(_, p)| *p)
        .filter(|_| qualified_ok)
        .ok_or_else(|| {
            QueryError::Invalid(format!(
                "unknown procedure {}; Firn has system.{}",
                f.name,
                PROCEDURES
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", system.")
            ))
        })?;
    let list = match &f.args {
        FunctionArguments::List(l) => l.args.clone(),
        FunctionArguments::None => Vec::new(),
        FunctionArguments::Subquery(_) => {
            return Err(QueryError::Invalid(format!(
                "{procedure}: arguments must be values"
            )));
        }
    };
    let param = |p: &&str| p.trim_end_matches('?').to_string();
    let mut values: Vec<(String, SqlExpr)> = Vec::new();
    for (i, a) in list.into_iter().enumerate() {
        let (name, expr) = match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => {
                let p = params.get(i).ok_or_else(|| {
                    QueryError::Invalid(format!(
                        "{procedure} takes at most {} arguments: {}",
                        params.len(),
                        params.iter().map(param).collect::<Vec<_>>().join(", ")
                    ))
                })?;
                (param(p), e)
            }
            FunctionArg::Named {
                name,
                arg: FunctionArgExpr::Expr(e),
                ..
            }
            | FunctionArg::ExprNamed {
                name: SqlExpr::Identifier(name),
                arg: FunctionArgExpr::Expr(e),
                ..
            } => {
                let n = name.value.to_lowercase();
                if !params.iter().any(|p| param(p) == n) {
                    return Err(QueryError::Invalid(format!(
                        "{procedure} has no argument {n}; it takes {}",
                        params.iter().map(param).collect::<Vec<_>>().join(", ")
                    )));
                }
                (n, e)
            }
            other => {
                return Err(QueryError::Invalid(format!(
                    "{procedure}: bad argument {other}"
                )));
            }
        };
        if values.iter().any(|(n, _)| *n == name) {
            return Err(QueryError::Invalid(format!(
                "{procedure}: {name} is given twice"
            )));
        }
        values.push((name, expr));
    }
    Ok(Args {
        procedure: procedure.to_string(),
        values,
    })
}

/// Evaluates a constant argument.
async fn value(session: &FirnSession, e: &SqlExpr) -> Result<ScalarValue> {
    let batches = session
        .context()
        .sql(&format!("SELECT {e}"))
        .await?
        .collect()
        .await?;
    let col = batches
        .first()
        .filter(|b| b.num_rows() == 1)
        .map(|b| b.column(0).clone())
        .ok_or_else(|| QueryError::Invalid(format!("{e} is not a single value")))?;
    Ok(ScalarValue::try_from_array(&col, 0)?)
}

async fn string(session: &FirnSession, args: &Args, name: &str) -> Result<String> {
    match value(session, args.required(name)?).await? {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => Ok(s),
        other => Err(QueryError::Invalid(format!(
            "{}: {name} must be a string, not {other}",
            args.procedure
        ))),
    }
}

async fn long(session: &FirnSession, args: &Args, name: &str) -> Result<Option<i64>> {
    let Some(e) = args.get(name) else {
        return Ok(None);
    };
    let v = value(session, e).await?;
    match v.cast_to(&DataType::Int64) {
        Ok(ScalarValue::Int64(Some(v))) => Ok(Some(v)),
        _ => Err(QueryError::Invalid(format!(
            "{}: {name} must be a snapshot id (an integer), not {v}",
            args.procedure
        ))),
    }
}

/// A timestamp argument (an SQL expression, as in `TIMESTAMP AS OF`), in ms since the epoch.
async fn timestamp_ms(session: &FirnSession, args: &Args, name: &str) -> Result<Option<i64>> {
    match args.get(name) {
        Some(e) => Ok(Some(
            crate::travel::eval_timestamp_ms(session.context(), &e.to_string()).await?,
        )),
        None => Ok(None),
    }
}

async fn table(session: &FirnSession, args: &Args) -> Result<TableIdent> {
    let name = string(session, args, "table").await?;
    TableIdent::parse(&name)
        .map_err(|e| QueryError::Invalid(format!("{}: table {name:?}: {e}", args.procedure)))
}

pub(crate) async fn call(session: &FirnSession, f: &Function) -> Result<Output> {
    let procedure = f
        .name
        .0
        .last()
        .map(|p| p.to_string().to_lowercase())
        .unwrap_or_default();
    let args = bind(&procedure, f)?;
    let ident = table(session, &args).await?;
    let need = |v: Option<i64>, name: &str| {
        v.ok_or_else(|| QueryError::Invalid(format!("{procedure}: argument {name} is missing")))
    };
    match procedure.as_str() {
        "expire_snapshots" => return expire_snapshots(session, &args, ident).await,
        "remove_orphan_files" => return remove_orphan_files(session, &args, ident).await,
        "rewrite_data_files" => return rewrite_data_files(session, &args, ident).await,
        _ => {}
    }
    let action = match procedure.as_str() {
        "rollback_to_snapshot" => Action::RollbackToSnapshot(need(
            long(session, &args, "snapshot_id").await?,
            "snapshot_id",
        )?),
        "rollback_to_timestamp" => {
            let e = args.required("timestamp")?;
            let ms = crate::travel::eval_timestamp_ms(session.context(), &e.to_string()).await?;
            Action::RollbackToTimestampMs(ms)
        }
        "set_current_snapshot" => {
            match (long(session, &args, "snapshot_id").await?, args.get("ref")) {
                (Some(id), None) => Action::SetCurrentSnapshot(id),
                (None, Some(_)) => Action::SetCurrentRef(string(session, &args, "ref").await?),
                _ => {
                    return Err(QueryError::Invalid(format!(
                        "{procedure}: give exactly one of snapshot_id and ref"
                    )));
                }
            }
        }
        "create_tag" | "create_branch" => {
            let key = if procedure == "create_tag" {
                "tag"
            } else {
                "branch"
            };
            let r = pb::CreateRef {
                name: string(session, &args, key).await?,
                snapshot_id: long(session, &args, "snapshot_id").await?,
            };
            if procedure == "create_tag" {
                Action::CreateTag(r)
            } else {
                Action::CreateBranch(r)
            }
        }
        "drop_tag" => Action::DropTag(string(session, &args, "tag").await?),
        "drop_branch" => Action::DropBranch(string(session, &args, "branch").await?),
        _ => unreachable!("bind checked the name"),
    };
    let r = session.client().manage_snapshots(&ident, action).await?;
    let schema = Arc::new(Schema::new(vec![
        Field::new("previous_snapshot_id", DataType::Int64, true),
        Field::new("current_snapshot_id", DataType::Int64, true),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![r.previous_snapshot_id])),
            Arc::new(Int64Array::from(vec![r.current_snapshot_id])),
        ],
    )?;
    Ok(Output::batch(batch))
}

async fn expire_snapshots(session: &FirnSession, args: &Args, ident: TableIdent) -> Result<Output> {
    let older_than_ms = timestamp_ms(session, args, "older_than").await?;
    let retain_last = match long(session, args, "retain_last").await? {
        None => None,
        Some(n) if (1..=i64::from(u32::MAX)).contains(&n) => Some(n as u32),
        Some(n) => {
            return Err(QueryError::Invalid(format!(
                "expire_snapshots: retain_last must be at least 1, not {n}"
            )));
        }
    };
    let snapshot_ids = match args.get("snapshot_ids") {
        None => Vec::new(),
        Some(e) => {
            let v = value(session, e).await?;
            let list = match &v {
                ScalarValue::List(l) if l.len() == 1 => {
                    datafusion::arrow::compute::cast(&l.value(0), &DataType::Int64).ok()
                }
                _ => None,
            };
            let Some(list) = list else {
                return Err(QueryError::Invalid(format!(
                    "expire_snapshots: snapshot_ids must be an array of snapshot ids, not {v}"
                )));
            };
            let ids = list
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("cast to Int64");
            ids.iter().flatten().collect()
        }
    };
    let req = pb::ExpireSnapshotsRequest {
        ident: Some(firn_client::proto_ident(&ident)),
        all_tables: false,
        older_than_ms,
        retain_last,
        snapshot_ids,
        dry_run: false,
    };
    let r = session.client().expire_snapshots(req).await?;
    let t = r.tables.into_iter().next().unwrap_or_default();
    counts_row(&[
        (
            "expired_snapshots_count",
            t.expired_snapshot_ids.len() as u64,
        ),
        ("deleted_data_files_count", t.data_files_deleted),
        ("deleted_delete_files_count", t.delete_files_deleted),
        ("deleted_manifest_files_count", t.manifests_deleted),
        ("deleted_manifest_lists_count", t.manifest_lists_deleted),
        ("deleted_metadata_files_count", t.metadata_files_deleted),
        ("bytes_freed", t.bytes_freed),
    ])
}

/// One row of `Int64` counts.
fn counts_row(columns: &[(&str, u64)]) -> Result<Output> {
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(n, _)| Field::new(*n, DataType::Int64, false))
            .collect::<Vec<_>>(),
    ));
    let arrays = columns
        .iter()
        .map(|(_, v)| Arc::new(Int64Array::from(vec![*v as i64])) as _)
        .collect();
    Ok(Output::batch(RecordBatch::try_new(schema, arrays)?))
}

async fn boolean(session: &FirnSession, args: &Args, name: &str) -> Result<Option<bool>> {
    let Some(e) = args.get(name) else {
        return Ok(None);
    };
    match value(session, e).await? {
        ScalarValue::Boolean(Some(b)) => Ok(Some(b)),
        other => Err(QueryError::Invalid(format!(
            "{}: {name} must be true or false, not {other}",
            args.procedure
        ))),
    }
}

async fn remove_orphan_files(
    session: &FirnSession,
    args: &Args,
    ident: TableIdent,
) -> Result<Output> {
    let older_than_ms = timestamp_ms(session, args, "older_than").await?;
    let r = session
        .client()
        .remove_orphan_files(pb::RemoveOrphanFilesRequest {
            ident: Some(firn_client::proto_ident(&ident)),
            older_than_ms,
            dry_run: boolean(session, args, "dry_run").await?.unwrap_or(false),
            sweep_listing: true,
        })
        .await?;
    let schema = Arc::new(Schema::new(vec![Field::new(
        "orphan_file_location",
        DataType::Utf8,
        false,
    )]));
    let batch = RecordBatch::try_new(
        schema,
        vec![Arc::new(datafusion::arrow::array::StringArray::from(
            r.orphan_paths,
        ))],
    )?;
    Ok(Output::batch(batch))
}

async fn rewrite_data_files(
    session: &FirnSession,
    args: &Args,
    ident: TableIdent,
) -> Result<Output> {
    let filter = match args.get("where") {
        None => None,
        Some(_) => {
            let predicate = string(session, args, "where").await?;
            Some(session.file_filter(&ident.to_string(), &predicate).await?)
        }
    };
    let target = match long(session, args, "target_file_size_bytes").await? {
        None => None,
        Some(n) if n > 0 => Some(n as u64),
        Some(n) => {
            return Err(QueryError::Invalid(format!(
                "rewrite_data_files: target_file_size_bytes must be positive, not {n}"
            )));
        }
    };
    let r = session
        .client()
        .compact(pb::CompactRequest {
            ident: Some(firn_client::proto_ident(&ident)),
            target_file_size_bytes: target,
            filter,
            dry_run: false,
        })
        .await?;
    counts_row(&[
        ("rewritten_data_files_count", r.files_rewritten),
        ("added_data_files_count", r.files_written),
        ("rewritten_bytes_count", r.bytes_rewritten),
        ("failed_data_files_count", 0),
    ])
}
