//! Server-side maintenance: `firn serve --maintenance-interval` runs snapshot expiry with
//! each table's own settings (its `history.expire.*` properties) on every table, once per
//! interval across all replicas — the replica holding the job's lease in the catalog
//! database does it; if it dies, another takes over when the lease lapses. Each table is
//! still expired under its own maintenance lease, so a manual `firn expire` running at the
//! same time is never doubled.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Row as _;
use tracing::{info, warn};

use crate::db::Db;
use crate::error::Result;
use crate::ident::TableIdent;
use crate::maintenance::expire::ExpireReport;
use crate::table::Shared;

const EXPIRY_JOB: &str = "expire-snapshots";

/// Takes (or keeps) the lease of `job` for `ttl_ms`; whether this holder has it now.
pub(crate) async fn take_job_lease(
    db: &Db,
    job: &str,
    holder: &str,
    now_ms: i64,
    ttl_ms: i64,
) -> Result<bool> {
    sqlx::query(
        "INSERT INTO scheduler_leases (job, holder, expires_at_ms) VALUES ($1, $2, $3) \
         ON CONFLICT (job) DO UPDATE SET holder = excluded.holder, \
         expires_at_ms = excluded.expires_at_ms \
         WHERE scheduler_leases.expires_at_ms <= $4 OR scheduler_leases.holder = $2",
    )
    .bind(job)
    .bind(holder)
    .bind(now_ms + ttl_ms)
    .bind(now_ms)
    .execute(&db.pool)
    .await?;
    let row = sqlx::query("SELECT holder FROM scheduler_leases WHERE job = $1")
        .bind(job)
        .fetch_one(&db.pool)
        .await?;
    Ok(row.try_get::<String, _>(0)? == holder)
}

/// Runs scheduled expiry every `interval` until the task is dropped (first run after one
/// interval): `expire_all(client)` expires every table with its own settings.
pub(crate) async fn expiry_loop<F, Fut>(shared: Arc<Shared>, interval: Duration, expire_all: F)
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<Vec<(TableIdent, Result<ExpireReport>)>>>,
{
    let holder = shared.env.ids.uuid().to_string();
    let client = format!("firn-scheduler/{holder}");
    let ttl = interval.as_millis().clamp(1, i64::MAX as u128) as i64;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let now = shared.env.clock.now_ms();
        match take_job_lease(&shared.db, EXPIRY_JOB, &holder, now, ttl).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                warn!(error = %e, "scheduled expiry: cannot reach the catalog; next interval");
                continue;
            }
        }
        let results = match expire_all(client.clone()).await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "scheduled expiry: cannot list tables; next interval");
                continue;
            }
        };
        let (mut expired, mut deleted, mut failed) = (0usize, 0u64, 0usize);
        for (t, r) in &results {
            match r {
                Ok(r) => {
                    expired += r.expired_snapshots.len();
                    deleted += r.deleted.total();
                }
                Err(e) => {
                    failed += 1;
                    warn!(table = %t, error = %e, "scheduled expiry failed for a table");
                }
            }
        }
        info!(
            tables = results.len(),
            expired, deleted, failed, "scheduled expiry done"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_holder_per_job_until_its_lease_lapses() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!("sqlite://{}", dir.path().join("c.db").display()))
            .await
            .unwrap();
        assert!(take_job_lease(&db, "j", "a", 1000, 100).await.unwrap());
        assert!(!take_job_lease(&db, "j", "b", 1050, 100).await.unwrap());
        assert!(
            take_job_lease(&db, "j", "a", 1090, 100).await.unwrap(),
            "renewed"
        );
        assert!(!take_job_lease(&db, "j", "b", 1150, 100).await.unwrap());
        assert!(
            take_job_lease(&db, "j", "b", 1190, 100).await.unwrap(),
            "lapsed"
        );
        assert!(!take_job_lease(&db, "j", "a", 1200, 100).await.unwrap());
        assert!(take_job_lease(&db, "other", "a", 1200, 100).await.unwrap());
    }
}
