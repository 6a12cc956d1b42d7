//! Final answers to requests that carried an idempotency key, so a retry gets the same
//! answer (the Iceberg REST protocol's `Idempotency-Key`).
//!
//! Contract: a success needs no record here (its key is the commit id, recorded in the
//! commit log with the request's digest, and a retry is answered as applied). A final
//! refusal (a 4xx the same request would get again) is recorded with the digest of the
//! request; within [`KEY_LIFETIME_MS`] a retry with the same key and digest gets it back,
//! and a request with the same key and another digest is refused. Records older than the
//! lifetime are ignored and dropped. The first answer recorded for a key stays (two racing
//! requests with one key cannot replace each other's answer).
//!
//! A key is 1 to 128 printable ASCII characters, like a commit id (it becomes one): any
//! other is `InvalidArgument` before the database is touched.

use sqlx::Row;

use crate::db::Db;
use crate::error::{Error, Result};

/// How long a key's answer is kept, as `/v1/config` advertises it.
pub const KEY_LIFETIME_MS: i64 = 24 * 3600 * 1000;
/// [`KEY_LIFETIME_MS`] as an ISO-8601 duration.
pub const KEY_LIFETIME_ISO: &str = "PT24H";

/// A recorded final answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedAnswer {
    pub request_digest: String,
    pub status: u16,
    pub body: String,
}

/// Refuses a key that could not also be a commit id.
fn check_key(key: &str) -> Result<()> {
    crate::commit::prepare::validate_commit_id(key).map_err(|_| {
        Error::invalid(
            "Idempotency-Key",
            "must be 1 to 128 printable ASCII characters without spaces (a UUID is best)",
        )
    })
}

pub(crate) async fn lookup(db: &Db, key: &str, now_ms: i64) -> Result<Option<RecordedAnswer>> {
    check_key(key)?;
    let row = sqlx::query(
        "SELECT request_digest, status, body FROM idempotent_responses \
         WHERE idempotency_key = $1 AND created_at_ms > $2",
    )
    .bind(key)
    .bind(now_ms - KEY_LIFETIME_MS)
    .fetch_optional(&db.pool)
    .await?;
    row.map(|r| {
        Ok(RecordedAnswer {
            request_digest: r.try_get(0)?,
            status: u16::try_from(r.try_get::<i64, _>(1)?).unwrap_or(500),
            body: r.try_get(2)?,
        })
    })
    .transpose()
}

pub(crate) async fn record(db: &Db, key: &str, answer: &RecordedAnswer, now_ms: i64) -> Result<()> {
    check_key(key)?;
    let mut tx = db.pool.begin().await?;
    // Expired records go (this key's too: its lifetime starts again).
    sqlx::query("DELETE FROM idempotent_responses WHERE created_at_ms <= $1")
        .bind(now_ms - KEY_LIFETIME_MS)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO idempotent_responses (idempotency_key, request_digest, status, body, \
         created_at_ms) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (idempotency_key) DO NOTHING",
    )
    .bind(key)
    .bind(&answer.request_digest)
    .bind(i64::from(answer.status))
    .bind(&answer.body)
    .bind(now_ms)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}
