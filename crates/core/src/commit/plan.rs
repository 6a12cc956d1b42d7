//! Planning a batch: per table, replay recorded commit ids, check each commit's base
//! (appends are rebased, others conflict), and plan one snapshot per commit on top of the
//! previous one ([`super::snapshot`]). Nothing here touches the database's pointer: a plan
//! is only a proposal until [`super::transaction`] swaps it in.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tracing::warn;

use super::garbage::*;
use super::materialize::*;
use super::snapshot::*;
use super::state::*;
use super::*;
use crate::db::Db;
use crate::error::{Error, ObjectKind, Result};
use crate::model::CommitOutcome;
use crate::storage::ObjectPath;
use crate::storage::objects::MetaObject;
use crate::table::Shared;

pub(super) struct Planned {
    pub(super) plans: Vec<GroupPlan>,
    pub(super) started: std::time::Instant,
}

impl Planned {
    /// Takes back the groups of tables whose previous batch did not commit as planned: their
    /// plans stand on a state that never was. Their commits are planned again (no attempt
    /// is charged); their new objects, but for the kept added manifests, are garbage.
    pub(super) fn withdraw(&mut self, stale: &HashSet<i64>, shared: &Shared, retry: &mut Vec<Job>) {
        if stale.is_empty() {
            return;
        }
        let (gone, kept): (Vec<GroupPlan>, Vec<GroupPlan>) = std::mem::take(&mut self.plans)
            .into_iter()
            .partition(|p| stale.contains(&p.table_id));
        self.plans = kept;
        let mut garbage = Vec::new();
        for p in gone {
            for s in p.steps {
                garbage.extend(crate::table::owned(
                    &p.state.warehouse,
                    p.table_id,
                    &p.state.row.location,
                    s.replanned_garbage(),
                ));
                retry.push(s.job);
                retry.extend(s.duplicates);
            }
        }
        delete_best_effort(shared, garbage);
    }
}

/// One planned snapshot and the request(s) it answers.
pub(super) struct Step {
    pub(super) job: Job,
    /// Jobs in the batch with the same commit id: they get this outcome, replayed.
    pub(super) duplicates: Vec<Job>,
    pub(super) plan: StepPlan,
}

impl Step {
    /// The objects this step wrote that a re-plan will not reuse (all but the manifest of
    /// the added files, which does not depend on the parent snapshot).
    pub(super) fn replanned_garbage(&self) -> Vec<String> {
        let keep = self
            .job
            .prepared
            .added_manifest
            .as_ref()
            .map(|(_, o)| o.path.as_str());
        self.plan
            .objects
            .iter()
            .map(|o| o.path.as_str())
            .filter(|p| Some(*p) != keep)
            .map(str::to_string)
            .collect()
    }
}

/// One planned snapshot.
pub(super) struct StepPlan {
    pub(super) outcome: CommitOutcome,
    pub(super) timestamp_ms: i64,
    pub(super) summary: HashMap<String, String>,
    pub(super) manifest_list: String,
    pub(super) schema_id: i32,
    /// New objects this step writes (the added manifest, rewritten/merged ones, the list).
    pub(super) objects: Vec<MetaObject>,
    /// The live files this step removes, with their sizes (recorded for expiry).
    pub(super) removed: Vec<(String, i64)>,
}

pub(super) struct GroupPlan {
    pub(super) table_id: i64,
    pub(super) base_version: i64,
    /// The current snapshot the plan was built on: compared with the version, so a plan on
    /// top of a batch that did not commit can never pass (snapshot ids are random).
    pub(super) base_snapshot_id: Option<i64>,
    pub(super) state: TableState,
    pub(super) steps: Vec<Step>,
    /// Retries of commits still in flight: planned again once that batch has finished.
    pub(super) deferred: Vec<Job>,
}

/// Plans a batch on the cached states (which it advances) and writes the new objects.
/// Returns `None` when nothing is left to commit (every job answered).
pub(super) async fn plan_batch(
    shared: &Arc<Shared>,
    cache: &mut HashMap<i64, TableState>,
    batch: Vec<Job>,
    deferred: &mut Vec<Job>,
) -> Option<Planned> {
    #[cfg(test)]
    if tests::PANIC_NEXT_PLAN.swap(false, std::sync::atomic::Ordering::SeqCst) {
        panic!("injected: planning panics");
    }
    let started = std::time::Instant::now();
    // Group by table, keeping arrival order.
    let mut order: Vec<i64> = Vec::new();
    let mut by_table: HashMap<i64, Vec<Job>> = HashMap::new();
    for j in batch {
        let t = j.prepared.table_id;
        by_table.entry(t).or_insert_with(|| {
            order.push(t);
            Vec::new()
        });
        by_table.get_mut(&t).expect("just inserted").push(j);
    }

    let seen = match Seen::lookup(&shared.db, &by_table).await {
        Ok(s) => s,
        Err(e) => {
            for j in by_table.into_values().flatten() {
                reply(
                    j,
                    Err(Error::Unavailable {
                        what: "catalog database",
                        source: e.to_string().into(),
                    }),
                );
            }
            return None;
        }
    };
    let mut plans: Vec<GroupPlan> = Vec::new();
    for table_id in order {
        let jobs = by_table.remove(&table_id).expect("grouped");
        match plan_group(shared, cache.remove(&table_id), table_id, jobs, &seen).await {
            Ok(Some(mut p)) => {
                deferred.append(&mut p.deferred);
                cache.insert(p.table_id, p.state.clone());
                if !p.steps.is_empty() {
                    plans.push(p);
                }
            }
            Ok(None) => {}
            Err((e, jobs)) => {
                for j in jobs {
                    reply(j, Err(same_error(&e)));
                }
            }
        }
    }
    if plans.is_empty() {
        return None;
    }
    // The transaction locks tables in id order, so replicas cannot deadlock on each other.
    plans.sort_by_key(|p| p.table_id);

    // Put or stage every new object. Nothing references them until the transaction commits.
    // Each table's objects go to its own warehouse.
    let mut stored = Ok(());
    let mut backpressure = true;
    for p in &plans {
        let warehouse = &p.state.warehouse;
        let objects: Result<Vec<(ObjectPath, bytes::Bytes)>> = p
            .steps
            .iter()
            .flat_map(|s| s.plan.objects.iter())
            .map(|o| Ok((warehouse.object(&o.path)?, o.bytes.clone())))
            .collect();
        stored = match objects {
            Err(e) => Err(e),
            Ok(objects) if warehouse.needs_sync() => {
                if backpressure && shared.warehouses.staged_size() >= STAGED_LIMIT {
                    // Backpressure: the disk is behind; wait for it rather than grow
                    // unbounded.
                    backpressure = false;
                    if let Err(e) = shared.publish_all().await {
                        warn!(error = %e, "writing staged commit metadata failed");
                    }
                }
                warehouse.stage(&objects);
                Ok(())
            }
            Ok(objects) => warehouse.put_new(&objects).await,
        };
        if stored.is_err() {
            break;
        }
    }
    if let Err(e) = stored {
        warn!(error = %e, "writing commit metadata failed; the batch is not committed");
        delete_best_effort(
            shared,
            plans
                .iter()
                .flat_map(|p| {
                    let paths = p
                        .steps
                        .iter()
                        .flat_map(|s| s.plan.objects.iter().map(|o| o.path.clone()))
                        .collect();
                    crate::table::owned(
                        &p.state.warehouse,
                        p.table_id,
                        &p.state.row.location,
                        paths,
                    )
                })
                .collect(),
        );
        for p in plans {
            cache.remove(&p.table_id);
            for s in p.steps {
                for d in s.duplicates {
                    reply(d, Err(Error::storage(e.to_string())));
                }
                reply(s.job, Err(Error::storage(e.to_string())));
            }
        }
        return None;
    }
    Some(Planned { plans, started })
}

pub(super) type GroupError = (Error, Vec<Job>);

/// How planning one commit ended.
pub(super) enum Planning {
    Step(Result<StepPlan>),
    /// The commit had landed already: answer with its recorded outcome.
    Recorded(CommitOutcome),
}

pub(super) enum Recheck {
    /// The commit is in the commit log: answer with its outcome.
    Recorded(CommitOutcome),
    /// The cached state was stale and has been reloaded: plan again.
    Reloaded,
    /// The refusal stands.
    Confirmed,
}

/// Double-checks a refusal made on cached state (see [`plan_group`]).
pub(super) async fn double_check(
    shared: &Shared,
    plan: &mut GroupPlan,
    p: &Prepared,
) -> Result<Recheck> {
    let id = p.req.commit_id.as_str();
    if let Some(r) = shared
        .db
        .recorded_commits(&[(plan.table_id, vec![id])])
        .await?
        .remove(&(plan.table_id, id.to_string()))
    {
        return Ok(Recheck::Recorded(r.replay(&p.digest)?));
    }
    // Only a state with nothing planned or in flight on top of it must equal the database.
    if !plan.steps.is_empty() || !plan.state.inflight_commits.is_empty() {
        return Ok(Recheck::Confirmed);
    }
    match TableState::load(shared, plan.table_id).await? {
        Some(fresh) if fresh.row.version != plan.state.row.version => {
            plan.base_version = fresh.row.version;
            plan.base_snapshot_id = fresh.row.current_snapshot_id;
            plan.state = fresh;
            Ok(Recheck::Reloaded)
        }
        _ => Ok(Recheck::Confirmed),
    }
}

/// What the catalog already holds of a batch: recorded commit ids and committed paths.
pub(super) struct Seen {
    pub(super) recorded: HashMap<(i64, String), crate::db::RecordedCommit>,
    pub(super) known: HashSet<(i64, String)>,
}

impl Seen {
    pub(super) async fn lookup(db: &Db, groups: &HashMap<i64, Vec<Job>>) -> Result<Self> {
        let ids: Vec<(i64, Vec<&str>)> = groups
            .iter()
            .map(|(t, jobs)| {
                (
                    *t,
                    jobs.iter()
                        .map(|j| j.prepared.req.commit_id.as_str())
                        .collect(),
                )
            })
            .collect();
        let paths: Vec<(i64, Vec<&str>)> = groups
            .iter()
            .map(|(t, jobs)| {
                (
                    *t,
                    jobs.iter()
                        .flat_map(|j| j.prepared.added.iter().map(|f| f.file_path()))
                        .collect(),
                )
            })
            .collect();
        // Paths first: they are recorded in the same transaction as the commit id, so a
        // commit that lands between the two reads shows up as recorded, never only as
        // "file already in the table".
        let known = db.known_paths(&paths).await?;
        let recorded = db.recorded_commits(&ids).await?;
        Ok(Self { recorded, known })
    }
}

pub(super) async fn plan_group(
    shared: &Shared,
    cached: Option<TableState>,
    table_id: i64,
    jobs: Vec<Job>,
    seen: &Seen,
) -> std::result::Result<Option<GroupPlan>, GroupError> {
    let state = match cached {
        Some(s) => s,
        None => match TableState::load(shared, table_id).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                for j in jobs {
                    let name = j.prepared.req.ident.to_string();
                    reply(j, Err(Error::not_found(ObjectKind::Table, name)));
                }
                return Ok(None);
            }
            Err(e) => return Err((e, jobs)),
        },
    };
    let mut plan = GroupPlan {
        table_id,
        base_version: state.row.version,
        base_snapshot_id: state.row.current_snapshot_id,
        state,
        steps: Vec::new(),
        deferred: Vec::new(),
    };
    let mut step_by_id: HashMap<String, usize> = HashMap::new();
    for job in jobs {
        let id = job.prepared.req.commit_id.clone();
        if let Some(r) = seen.recorded.get(&(table_id, id.clone())) {
            let replayed = r.replay(&job.prepared.digest);
            reply(job, replayed);
            continue;
        }
        if let Some(&i) = step_by_id.get(&id) {
            if plan.steps[i].job.prepared.digest != job.prepared.digest {
                let e = Error::invalid(
                    "commit_id",
                    format!("{id} is used by two different requests at once; use a new commit id"),
                );
                reply(job, Err(e));
                continue;
            }
            plan.steps[i].duplicates.push(job);
            continue;
        }
        if plan.state.inflight_commits.contains(&id) {
            plan.deferred.push(job);
            continue;
        }
        // A refusal made on cached state is double-checked once: the first attempt of this
        // commit may have landed meanwhile, or the cache may be behind the database
        // (another replica committed).
        let mut rechecked = false;
        let planning = loop {
            let planned = plan_step(
                shared,
                &mut plan.state,
                &job.prepared,
                table_id,
                &seen.known,
            )
            .await;
            let refused = matches!(
                &planned,
                Err(Error::Conflict { .. } | Error::InvalidArgument { .. })
            );
            if !refused || rechecked {
                break Planning::Step(planned);
            }
            rechecked = true;
            match double_check(shared, &mut plan, &job.prepared).await {
                Ok(Recheck::Reloaded) => continue,
                Ok(Recheck::Confirmed) => break Planning::Step(planned),
                Ok(Recheck::Recorded(outcome)) => break Planning::Recorded(outcome),
                Err(e) => break Planning::Step(Err(e)),
            }
        };
        let planned = match planning {
            Planning::Step(planned) => planned,
            Planning::Recorded(outcome) => {
                reply(job, Ok(outcome));
                continue;
            }
        };
        match planned {
            Ok(step) => {
                plan.state.inflight_commits.insert(id.clone());
                step_by_id.insert(id, plan.steps.len());
                plan.steps.push(Step {
                    job,
                    duplicates: Vec::new(),
                    plan: step,
                });
            }
            Err(e) => reply(job, Err(e)),
        }
    }
    Ok(Some(plan))
}
