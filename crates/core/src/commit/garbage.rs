//! Objects of commits that did not happen: deleted in the background, and what cannot be
//! deleted now recorded for the table's next expiry, so garbage never needs a listing.

use std::collections::HashMap;

use tracing::debug;

use crate::storage::Owned;
use crate::table::Shared;

/// Deletes objects of commits that did not happen, in the background. What cannot be
/// deleted now is recorded for the table's next expiry run (`pending_deletes`), so garbage
/// is cleaned up without listing.
pub(super) fn delete_best_effort(shared: &Shared, paths: Vec<(i64, Owned)>) {
    if paths.is_empty() {
        return;
    }
    // An owned object lies below its table's location, so in exactly one warehouse.
    let paths: Vec<_> = paths
        .into_iter()
        .map(|(id, owned)| (shared.warehouses.of(owned.uri()), id, owned))
        .collect();
    let db = shared.db.clone();
    let now = shared.env.clock.now_ms();
    tokio::spawn(async move {
        let mut failed: HashMap<i64, Vec<crate::db::Doomed>> = HashMap::new();
        for (warehouse, table_id, owned) in paths {
            let deleted = match &warehouse {
                Some(w) => w.delete(&owned).await,
                None => Err(crate::error::Error::FailedPrecondition(
                    "in no open warehouse".into(),
                )),
            };
            if let Err(e) = deleted {
                let p = owned.uri().to_string();
                debug!(path = %p, error = %e, "could not delete garbage of a failed commit");
                let kind = if p.contains("/snap-") {
                    crate::db::KIND_MANIFEST_LIST
                } else {
                    crate::db::KIND_MANIFEST
                };
                failed.entry(table_id).or_default().push(crate::db::Doomed {
                    path: p,
                    kind,
                    size: -1,
                });
            }
        }
        for (table_id, doomed) in failed {
            let recorded = match db.pool.acquire().await {
                Ok(mut conn) => crate::db::record_doomed(&mut conn, table_id, &doomed, now).await,
                Err(e) => Err(e.into()),
            };
            if let Err(e) = recorded {
                debug!(table_id, error = %e, "could not record garbage for a later delete");
            }
        }
    });
}
