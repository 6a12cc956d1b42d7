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
use crate::table::pointer::{
    self, BatchRows, CommitLog, Expected, LogEntry, NewSnapshot, RefHead, Target,
};

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

/// The one transaction of a batch: every table's pointer swap and the rows of every commit
/// at once ([`pointer::move_all`]: one statement on PostgreSQL). Returns, per group, whether
/// its pointer swap won.
pub(super) async fn write_transaction(shared: &Shared, plans: &[GroupPlan]) -> Result<Vec<bool>> {
    let plans_to_move: Vec<&GroupPlan> = plans.iter().filter(|p| !p.steps.is_empty()).collect();
    let swaps: Vec<(Expected, Target)> = plans_to_move
        .iter()
        .map(|p| {
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
            (from, to)
        })
        .collect();
    let mut rows = BatchRows::default();
    for p in &plans_to_move {
        let t = p.table_id;
        for s in &p.steps {
            let (o, prepared) = (&s.plan.outcome, &s.job.prepared);
            rows.snapshots.push((
                t,
                NewSnapshot {
                    snapshot_id: o.snapshot_id,
                    parent_snapshot_id: o.parent_snapshot_id,
                    sequence_number: o.sequence_number,
                    timestamp_ms: s.plan.timestamp_ms,
                    operation: &s.plan.summary["operation"],
                    summary: &s.plan.summary,
                    schema_id: s.plan.schema_id,
                    manifest_list: &s.plan.manifest_list,
                    commit_id: &prepared.req.commit_id,
                    removals_recorded: true,
                },
            ));
            rows.log.push((
                t,
                LogEntry {
                    seq: o.version,
                    snapshot_id: o.snapshot_id,
                    timestamp_ms: s.plan.timestamp_ms,
                },
            ));
            rows.commits.push((
                t,
                CommitLog {
                    commit_id: &prepared.req.commit_id,
                    version: o.version,
                    snapshot_id: o.snapshot_id,
                    sequence_number: o.sequence_number,
                    parent_snapshot_id: o.parent_snapshot_id,
                    operation: prepared.req.operation.name(),
                    by: &prepared.by,
                    committed_at_ms: s.plan.timestamp_ms,
                    request_digest: Some(&prepared.digest),
                },
            ));
            let removed = s.plan.removed.iter();
            rows.removals
                .extend(removed.map(|(path, size)| (t, o.snapshot_id, path.as_str(), *size)));
            let added = prepared.added.iter();
            rows.files
                .extend(added.map(|f| (t, f.file_path(), o.snapshot_id)));
            // Objects not yet durable in their store travel in the catalog until written.
            if p.state.warehouse.needs_sync() {
                let objects = s.plan.objects.iter();
                rows.staged
                    .extend(objects.map(|o| (t, o.path.as_str(), &o.bytes[..])));
            }
        }
        if let Some(id) = p.state.row.current_snapshot_id {
            let head = RefHead {
                name: "main",
                snapshot_id: id,
                ref_type: "branch",
            };
            rows.heads.push((t, head));
        }
    }
    let moved = pointer::move_all(&shared.db, &swaps, &rows).await?;
    Ok(plans
        .iter()
        .map(|p| p.steps.is_empty() || moved.contains(&p.table_id))
        .collect())
}
