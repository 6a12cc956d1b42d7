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
//!
//! Arguments are positional or named (`table => 'ns.t'`). Each returns one row with
//! `previous_snapshot_id` and `current_snapshot_id`. The same changes are available over
//! gRPC (`ManageSnapshots`) and as `firn` subcommands; all go through one implementation.

use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch};
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
