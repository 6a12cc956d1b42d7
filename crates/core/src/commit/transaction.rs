//! The batch's one database transaction: for each table, the pointer swap
//! ([`crate::table::pointer`]) and the rows that move with it; then the replies.
//!
//! Errors: a failure before `COMMIT` was sent fails the batch's commits plainly; a failure
//! of the `COMMIT` itself leaves the outcome unknown (`Unavailable`: retry with the same
//! commit id, which replays the recorded outcome if it did commit).

use std::sync::Arc;

use tracing::{debug, warn};

use super::garbage::*;
use super::materialize::*;
use super::plan::*;
use super::*;
use crate::error::{Error, Result};
use crate::model::CommitOutcome;
use crate::table::Shared;
use crate::table::pointer::{self, CommitLog, Expected, NewSnapshot, Target};

/// Runs a planned batch's transaction and answers its commits.
pub(super) async fn finish(shared: Arc<Shared>, planned: Planned) -> Finished {
    let Planned { plans, started } = planned;
    let tx_start = std::time::Instant::now();
    let res = write_transaction(&shared, &plans).await;
    crate::metrics::global().db("commit_batch", tx_start.elapsed());
    debug!(
        commits = plans.iter().map(|p| p.steps.len()).sum::<usize>(),
        plan_and_put = ?(tx_start - started),
        transaction = ?tx_start.elapsed(),
        "batch"
    );
    let mut out = Finished::default();
    match res {
        Err(e) => {
            // The transaction may or may not have committed: outcome unknown. The cached
            // states are dropped, so the next batch re-reads the tables.
            warn!(error = %e, "commit transaction failed");
            // If it did commit, its objects must reach the store: materialize them anyway.
            spawn_sync(
                &shared,
                plans
                    .iter()
                    .flat_map(|p| p.steps.iter().flat_map(|s| &s.plan.objects))
                    .map(|o| o.path.clone())
                    .collect(),
            );
            for p in plans {
                out.stale.push(p.table_id);
                for s in p.steps {
                    for d in s.duplicates {
                        reply(d, Err(unknown_outcome(&e)));
                    }
                    reply(s.job, Err(unknown_outcome(&e)));
                }
            }
        }
        Ok(won) => {
            let mut to_sync = Vec::new();
            for (p, won) in plans.into_iter().zip(won) {
                if won {
                    let mut paths = Vec::new();
                    let mut ids = Vec::new();
                    for s in p.steps {
                        ids.push(s.job.prepared.req.commit_id.clone());
                        to_sync.extend(s.plan.objects.iter().map(|o| o.path.clone()));
                        paths.extend(
                            s.job
                                .prepared
                                .added
                                .iter()
                                .map(|f| f.file_path().to_string()),
                        );
                        for d in s.duplicates {
                            reply(
                                d,
                                Ok(CommitOutcome {
                                    replayed: true,
                                    ..s.plan.outcome.clone()
                                }),
                            );
                        }
                        reply(s.job, Ok(s.plan.outcome));
                    }
                    out.committed.push((p.table_id, paths, ids));
                } else {
                    debug!(table_id = p.table_id, "lost the pointer swap; re-planning");
                    out.stale.push(p.table_id);
                    let mut garbage = Vec::new();
                    for s in p.steps {
                        garbage.extend(crate::table::owned(
                            &p.state.warehouse,
                            p.table_id,
                            &p.state.row.location,
                            s.replanned_garbage(),
                        ));
                        for mut j in std::iter::once(s.job).chain(s.duplicates) {
                            j.prepared.attempts += 1;
                            if j.prepared.attempts >= MAX_ATTEMPTS {
                                reply(j, Err(Error::Unavailable {
                                    what: "table",
                                    source: "too much contention: the commit lost the pointer swap repeatedly; nothing was applied, retry later".into(),
                                }));
                            } else {
                                out.requeue.push(j);
                            }
                        }
                    }
                    delete_best_effort(&shared, garbage);
                }
            }
            spawn_sync(&shared, to_sync);
        }
    }
    out
}

/// The one transaction of a batch. Returns, per group, whether its pointer swap won.
pub(super) async fn write_transaction(shared: &Shared, plans: &[GroupPlan]) -> Result<Vec<bool>> {
    let mut tx = shared.db.pool.begin().await?;
    let mut won = Vec::with_capacity(plans.len());
    for p in plans {
        if p.steps.is_empty() {
            won.push(true);
            continue;
        }
        let st = &p.state.row;
        let from = Expected {
            table_id: p.table_id,
            version: p.base_version,
            current_snapshot_id: p.base_snapshot_id,
        };
        let to = Target {
            version: st.version,
            current_snapshot_id: st.current_snapshot_id,
            last_sequence_number: Some(st.last_sequence_number),
            last_updated_ms: st.last_updated_ms,
            base_metadata: None,
        };
        let Some(mut moved) = pointer::swap(&mut tx, from, &to).await? else {
            won.push(false);
            continue;
        };
        won.push(true);
        for s in &p.steps {
            let o = &s.plan.outcome;
            let req = &s.job.prepared.req;
            moved
                .insert_snapshot(&NewSnapshot {
                    snapshot_id: o.snapshot_id,
                    parent_snapshot_id: o.parent_snapshot_id,
                    sequence_number: o.sequence_number,
                    timestamp_ms: s.plan.timestamp_ms,
                    operation: &s.plan.summary["operation"],
                    summary: &s.plan.summary,
                    schema_id: s.plan.schema_id,
                    manifest_list: &s.plan.manifest_list,
                    commit_id: &req.commit_id,
                    removals_recorded: true,
                })
                .await?;
            moved
                .insert_snapshot_log(o.version, o.snapshot_id, s.plan.timestamp_ms)
                .await?;
            moved
                .insert_commit_log(&CommitLog {
                    commit_id: &req.commit_id,
                    version: o.version,
                    snapshot_id: o.snapshot_id,
                    sequence_number: o.sequence_number,
                    parent_snapshot_id: o.parent_snapshot_id,
                    operation: req.operation.name(),
                    by: &s.job.prepared.by,
                    committed_at_ms: s.plan.timestamp_ms,
                    request_digest: Some(&s.job.prepared.digest),
                })
                .await?;
            for f in &s.job.prepared.added {
                sqlx::query(
                    "INSERT INTO table_files (table_id, path, snapshot_id) VALUES ($1, $2, $3)",
                )
                .bind(p.table_id)
                .bind(f.file_path())
                .bind(o.snapshot_id)
                .execute(moved.conn())
                .await?;
            }
            moved
                .insert_removals(o.snapshot_id, &s.plan.removed)
                .await?;
        }
        if let Some(id) = st.current_snapshot_id {
            moved.upsert_ref("main", id, "branch", None).await?;
        }
        if p.state.warehouse.needs_sync() {
            for o in p.steps.iter().flat_map(|s| &s.plan.objects) {
                sqlx::query(
                    "INSERT INTO pending_objects (path, bytes) VALUES ($1, $2) \
                     ON CONFLICT (path) DO NOTHING",
                )
                .bind(&o.path)
                .bind(o.bytes.to_vec())
                .execute(moved.conn())
                .await?;
            }
        }
    }
    tx.commit().await?;
    Ok(won)
}
