//! Write-behind on local disk: committed objects staged in the warehouse are written (each
//! atomically, then fsynced) once commits pause or the backlog grows, and their catalog
//! copies dropped after. Start-up recovery writes whatever a crash left only in the catalog.

use std::sync::Arc;

use tracing::{debug, warn};

use super::*;
use crate::db::Db;
use crate::error::Result;
use crate::storage::{ObjectPath, Warehouse, Warehouses};
use crate::table::Shared;

/// Hands committed staged objects to the materializer, which drops their pending rows once
/// they are written (until then, start-up recovery would rewrite them, harmlessly).
pub(super) fn spawn_sync(shared: &Shared, paths: Vec<String>) {
    if shared.warehouses.needs_sync() && !paths.is_empty() {
        let _ = shared.to_sync.send(paths);
    }
}

/// The materializer writes staged objects once commits pause for this long: a burst of
/// commits creates no file until it ends. Durability does not wait for it (the bytes are in
/// the catalog), nor do readers in this process (they read staged objects) or outside it
/// (they are handed paths only after [`Shared::publish_table`]).
pub(super) const WRITE_WHEN_IDLE: std::time::Duration = std::time::Duration::from_millis(50);

/// ... or once this many bytes are staged, or this many objects wait, or the oldest has
/// waited [`WRITE_AFTER`]. Small objects count as well as big ones: the backlog a reader may
/// have to expose (see [`Shared::publish_table`]) stays a few chunks, however long a burst.
pub(super) const WRITE_AT_SIZE: u64 = 64 << 20;

/// Objects waiting that start a write (see [`WRITE_AT_SIZE`]): one chunk.
pub(super) const WRITE_AT_COUNT: usize = WRITE_CHUNK;

pub(super) const WRITE_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

/// Beyond this many staged bytes the committer itself waits for them to be written: the
/// buffer absorbs bursts, the disk sets the sustained rate.
pub(super) const STAGED_LIMIT: u64 = 256 << 20;

/// Pause before writing again objects whose write failed.
pub(super) const WRITE_RETRY: std::time::Duration = std::time::Duration::from_millis(200);

pub(super) async fn materializer(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<Vec<String>>,
) {
    let mut pending: Vec<String> = Vec::new();
    let mut oldest = std::time::Instant::now();
    loop {
        let next = if pending.is_empty() {
            rx.recv().await
        } else {
            let wait = WRITE_WHEN_IDLE.min(WRITE_AFTER.saturating_sub(oldest.elapsed()));
            match tokio::time::timeout(wait, rx.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    write_staged(&shared, &mut pending, true).await;
                    continue;
                }
            }
        };
        let Some(paths) = next else {
            write_staged(&shared, &mut pending, true).await;
            return;
        };
        if pending.is_empty() {
            oldest = std::time::Instant::now();
        }
        pending.extend(paths);
        if oldest.elapsed() >= WRITE_AFTER
            || pending.len() >= WRITE_AT_COUNT
            || shared.warehouses.staged_size() >= WRITE_AT_SIZE
        {
            write_staged(&shared, &mut pending, false).await;
        }
    }
}

/// Catalog copies of written objects are dropped when the materializer goes idle, or once
/// this many wait: dropping them is a write transaction, which commits queue behind, so it
/// is not done at every chunk of a sustained stream.
pub(super) const FORGET_AT_COUNT: usize = 16 * WRITE_CHUNK;

/// Writes `pending` staged objects; what could not be written stays in `pending`.
/// In chunks of [`WRITE_CHUNK`], so a reader's [`Shared::publish_table`] waits for one chunk
/// at most, not for a whole burst. `idle`: no commit is waiting, drop catalog copies now.
pub(super) async fn write_staged(shared: &Shared, pending: &mut Vec<String>, idle: bool) {
    let mut failed = None;
    for chunk in pending.chunks(WRITE_CHUNK) {
        if let Err(e) = shared.record_published(shared.warehouses.publish(chunk).await) {
            failed = Some(e);
        }
    }
    let due = idle || shared.synced.lock().expect("poisoned").len() >= FORGET_AT_COUNT;
    if due && let Err(e) = shared.forget_written().await {
        debug!(error = %e, "could not drop catalog copies of written objects; later then");
    }
    match failed {
        None => pending.clear(),
        Some(e) => {
            warn!(error = %e, "writing commit metadata failed; kept staged and in the catalog, retrying");
            pending.retain(|p| shared.warehouses.is_unsynced(p));
            tokio::time::sleep(WRITE_RETRY).await;
        }
    }
}

/// Objects the materializer writes per round of fsyncs.
pub(super) const WRITE_CHUNK: usize = 256;

/// Rewrites objects whose bytes a crash left only in the catalog, then forgets them.
pub(crate) async fn recover_pending(db: &Db, warehouses: &Warehouses) -> Result<usize> {
    let pending = db.pending_objects().await?;
    if pending.is_empty() {
        return Ok(0);
    }
    let mut paths = Vec::with_capacity(pending.len());
    let mut objects: Vec<(Arc<Warehouse>, ObjectPath)> = Vec::with_capacity(pending.len());
    for (path, bytes) in pending {
        // Always rewrite: a file that was never synced may have the right size and the
        // wrong (zeroed) contents.
        let Some(warehouse) = warehouses.of(&path) else {
            // Its warehouse is not open here (declared in another server's config): that
            // server writes it; the row stays.
            warn!(
                path,
                "a committed object kept in the catalog is in no warehouse here"
            );
            continue;
        };
        let object = warehouse.object(&path)?;
        warehouse.put(&object, bytes.into()).await?;
        objects.push((warehouse, object));
        paths.push(path);
    }
    for warehouse in warehouses.all() {
        let mine: Vec<ObjectPath> = objects
            .iter()
            .filter(|(w, _)| Arc::ptr_eq(w, &warehouse))
            .map(|(_, o)| o.clone())
            .collect();
        warehouse.sync(&mine).await?;
    }
    db.clear_pending_objects(&paths).await?;
    Ok(paths.len())
}
