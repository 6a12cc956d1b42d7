//! A table's rendered history: the JSON of each of its snapshots and snapshot-log entries,
//! kept per table in memory, so the metadata of a new version is produced from the last
//! rendering and what the versions since added (read from the catalog by sequence number
//! and version), never by reading and rendering every snapshot again.
//!
//! Contract: the catalog database stays the source of truth; this is a cache of renderings
//! of its rows, and any entry may be dropped at any time. A rendering of version V is
//! extended to a later version W only when no version after V did more than append to the
//! history — removed snapshots, or added one with a sequence number below the table's
//! (`tables.history_rewritten_version`, set through `pointer::Moved`, the one writer of
//! those rows): then W's snapshots and log entries are exactly V's plus those with a later
//! sequence number and version. Otherwise, and for a version
//! older than the one kept, the history is rendered afresh from the rows.
//!
//! What is appended is checked as Iceberg checks a whole document, but on a document of
//! only the parts the checks relate (see [`History::probe`]): Iceberg's checks of metadata
//! are local (a ref names a snapshot the document has, no snapshot's sequence number is
//! past the table's, each log entry is no older than the one before), so an extension of a
//! checked rendering is checked by the base, the refs, the snapshots they name, the added
//! snapshots and the log from the last checked entry on.
//!
//! Memory: the renderings kept take at most [`HistoryCache`]'s budget of bytes, the least
//! recently used table going first.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::db::{Db, TableRow};
use crate::error::{Error, Result};
use crate::model::SnapshotInfo;
use crate::table::refs::RefInfo;

/// Bytes of renderings kept, over all tables (a 10,000-snapshot table takes ~7 MB).
const BUDGET_BYTES: usize = 256 << 20;

/// One snapshot or log entry: the snapshot id it names and its JSON.
#[derive(Clone)]
struct Item {
    id: i64,
    json: Arc<str>,
}

/// The snapshots and log of one table version, rendered.
#[derive(Clone)]
pub(crate) struct History {
    table_id: i64,
    version: i64,
    last_sequence_number: i64,
    /// By sequence number.
    snapshots: Vec<Item>,
    /// By version.
    log: Vec<Item>,
    bytes: usize,
}

/// The JSON of a snapshot row, as Iceberg writes a snapshot.
fn snapshot_json(s: &SnapshotInfo) -> Arc<str> {
    let summary: serde_json::Map<String, Value> = s
        .summary
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let mut o = json!({
        "snapshot-id": s.snapshot_id,
        "sequence-number": s.sequence_number,
        "timestamp-ms": s.timestamp_ms,
        "manifest-list": s.manifest_list,
        "summary": summary,
        "schema-id": s.schema_id,
    });
    if let Some(p) = s.parent_snapshot_id {
        o["parent-snapshot-id"] = json!(p);
    }
    o.to_string().into()
}

fn snapshot_item(s: &SnapshotInfo) -> Item {
    Item {
        id: s.snapshot_id,
        json: snapshot_json(s),
    }
}

fn log_item((_version, id, ts): (i64, i64, i64)) -> Item {
    Item {
        id,
        json: json!({"snapshot-id": id, "timestamp-ms": ts})
            .to_string()
            .into(),
    }
}

impl History {
    fn empty(row: &TableRow) -> Self {
        Self {
            table_id: row.table_id,
            // Registered tables' log entries come before version 0 (see `register`).
            version: i64::MIN,
            last_sequence_number: -1,
            snapshots: Vec::new(),
            log: Vec::new(),
            bytes: 0,
        }
    }

    /// Appends what the table's versions after this one up to `row`'s added: `(history,
    /// index of the first added snapshot, index of the first log entry to check)`.
    async fn extend(mut self, db: &Db, row: &TableRow) -> Result<(Self, usize, usize)> {
        let added = db
            .snapshots(row.table_id, self.last_sequence_number, i64::MAX)
            .await?;
        let log = db
            .snapshot_log_between(row.table_id, self.version, row.version)
            .await?;
        let first_snapshot = self.snapshots.len();
        // The last entry already checked: the added ones must not be older.
        let first_log = self.log.len().saturating_sub(1);
        for s in added
            .iter()
            .filter(|s| s.sequence_number <= row.last_sequence_number)
        {
            let item = snapshot_item(s);
            self.bytes += item.json.len() + 1;
            self.snapshots.push(item);
        }
        for l in log {
            let item = log_item(l);
            self.bytes += item.json.len() + 1;
            self.log.push(item);
        }
        self.version = row.version;
        self.last_sequence_number = row.last_sequence_number;
        Ok((self, first_snapshot, first_log))
    }

    /// The snapshots of `ids` the history holds.
    fn has(&self, ids: &HashSet<i64>) -> HashSet<i64> {
        self.snapshots
            .iter()
            .filter(|s| ids.contains(&s.id))
            .map(|s| s.id)
            .collect()
    }

    /// The document Iceberg's checks of the parts from `first_snapshot` and `first_log` on
    /// relate: the base, the refs, the snapshots the refs name, those parts.
    fn probe(
        &self,
        row: &TableRow,
        refs: &serde_json::Map<String, Value>,
        heads: &HashSet<i64>,
        first_snapshot: usize,
        first_log: usize,
    ) -> Result<String> {
        let snapshots = self
            .snapshots
            .iter()
            .enumerate()
            .filter(|(i, s)| *i >= first_snapshot || heads.contains(&s.id));
        document(
            row,
            snapshots.map(|(_, s)| &*s.json),
            self.log[first_log.min(self.log.len())..]
                .iter()
                .map(|l| &*l.json),
            refs,
        )
    }
}

/// Metadata JSON: `row`'s base with its version's fields, the snapshots, log and refs given
/// (spliced in as text: no tree of the whole document is built).
pub(crate) fn document<'a>(
    row: &TableRow,
    snapshots: impl Iterator<Item = &'a str>,
    log: impl Iterator<Item = &'a str>,
    refs: &serde_json::Map<String, Value>,
) -> Result<String> {
    let mut base: serde_json::Map<String, Value> = serde_json::from_str(&row.base_metadata)
        .map_err(|e| Error::internal_from("corrupt base metadata", e))?;
    for k in ["snapshots", "snapshot-log", "refs", "current-snapshot-id"] {
        base.remove(k);
    }
    base.insert(
        "last-sequence-number".into(),
        json!(row.last_sequence_number),
    );
    base.insert("last-updated-ms".into(), json!(row.last_updated_ms));
    if let Some(id) = row.current_snapshot_id {
        base.insert("current-snapshot-id".into(), json!(id));
    }
    base.insert("refs".into(), Value::Object(refs.clone()));
    let mut text = Value::Object(base).to_string();
    // `{...}` with at least the refs in it: the lists go before the closing brace.
    text.pop();
    push_list(&mut text, "snapshots", snapshots);
    push_list(&mut text, "snapshot-log", log);
    text.push('}');
    Ok(text)
}

/// Appends `,"key":[item,item,...]`.
fn push_list<'a>(text: &mut String, key: &str, items: impl Iterator<Item = &'a str>) {
    text.push_str(",\"");
    text.push_str(key);
    text.push_str("\":[");
    for (i, item) in items.enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str(item);
    }
    text.push(']');
}

/// The refs of `refs` whose snapshots are in `known`, as metadata JSON has them.
fn refs_json(refs: Vec<RefInfo>, known: &HashSet<i64>) -> serde_json::Map<String, Value> {
    refs.into_iter()
        .filter(|r| known.contains(&r.snapshot_id))
        .map(|r| {
            let mut v = json!({"snapshot-id": r.snapshot_id, "type": r.ref_type});
            r.retention.to_json(&mut v);
            (r.name, v)
        })
        .collect()
}

fn parse_checked(row: &TableRow, text: &str) -> Result<()> {
    serde_json::from_str::<iceberg::spec::TableMetadata>(text)
        .map(|_| ())
        .map_err(|e| {
            Error::internal_from(format!("rendered metadata of {} is invalid", row.ident), e)
        })
}

/// A version's metadata JSON, whole and for `snapshots=refs`.
pub(crate) struct Rendered {
    pub all: Arc<str>,
    pub refs_only: Arc<str>,
}

/// The renderings kept, by table.
#[derive(Default)]
pub(crate) struct HistoryCache {
    inner: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    tables: HashMap<i64, (u64, Arc<History>)>,
    bytes: usize,
    uses: u64,
}

impl HistoryCache {
    /// The kept rendering of the table that `row`'s version extends, if any.
    fn base_for(&self, row: &TableRow) -> Option<Arc<History>> {
        let mut kept = self.inner.lock().expect("poisoned");
        kept.uses += 1;
        let uses = kept.uses;
        let (used, h) = kept.tables.get_mut(&row.table_id)?;
        *used = uses;
        (h.version <= row.version && row.history_rewritten_version <= h.version).then(|| h.clone())
    }

    /// Keeps `h` unless a later version of its table is kept.
    fn keep(&self, h: History) {
        let mut kept = self.inner.lock().expect("poisoned");
        kept.uses += 1;
        let uses = kept.uses;
        if let Some((_, old)) = kept.tables.get(&h.table_id) {
            if old.version > h.version {
                return;
            }
            let freed = old.bytes;
            kept.bytes -= freed;
        }
        kept.bytes += h.bytes;
        kept.tables.insert(h.table_id, (uses, Arc::new(h)));
        while kept.bytes > BUDGET_BYTES && kept.tables.len() > 1 {
            let Some((&oldest, _)) = kept.tables.iter().min_by_key(|(_, (used, _))| *used) else {
                break;
            };
            if let Some((_, gone)) = kept.tables.remove(&oldest) {
                kept.bytes -= gone.bytes;
            }
        }
    }

    /// The metadata JSON of `row`'s version, whole and with only the snapshots its refs name
    /// (`snapshots=refs`); `None` when the row is stale: a later commit (expiry) has removed
    /// the snapshot it names as current, so read the row again.
    pub(crate) async fn render(&self, db: &Db, row: &TableRow) -> Result<Option<Rendered>> {
        let (history, first_snapshot, first_log, whole) = match self.base_for(row) {
            Some(h) => {
                let (h, s, l) = History::clone(&h).extend(db, row).await?;
                (h, s, l, false)
            }
            None => {
                let (h, _, _) = History::empty(row).extend(db, row).await?;
                (h, 0, 0, true)
            }
        };
        let refs = crate::table::refs::refs(db, row).await?;
        let mut wanted: HashSet<i64> = refs.iter().map(|r| r.snapshot_id).collect();
        wanted.extend(row.current_snapshot_id);
        let heads = history.has(&wanted);
        // Refs are read after the row: one made since may name a snapshot this version
        // does not hold yet; it belongs to a later version's metadata.
        if row
            .current_snapshot_id
            .is_some_and(|id| !heads.contains(&id))
        {
            return Ok(None);
        }
        let refs = refs_json(refs, &heads);
        let text = document(
            row,
            history.snapshots.iter().map(|s| &*s.json),
            history.log.iter().map(|l| &*l.json),
            &refs,
        )?;
        // What we hand out must be valid Iceberg metadata: the whole document once, then
        // what each version adds (see the module contract).
        if whole {
            parse_checked(row, &text)?;
        } else {
            parse_checked(
                row,
                &history.probe(row, &refs, &heads, first_snapshot, first_log)?,
            )?;
        }
        let refs_only = document(
            row,
            history
                .snapshots
                .iter()
                .filter(|s| heads.contains(&s.id))
                .map(|s| &*s.json),
            history.log.iter().map(|l| &*l.json),
            &refs,
        )?;
        self.keep(history);
        Ok(Some(Rendered {
            all: text.into(),
            refs_only: refs_only.into(),
        }))
    }
}

/// The table's metadata as of `row` with only the snapshots a change may touch: those its
/// refs and `ids` name (the log only its last entry), as Iceberg's metadata builder needs to
/// check and apply updates without the whole history. `None` when the row is stale (see
/// [`HistoryCache::render`]).
pub(crate) async fn partial(
    db: &Db,
    row: &TableRow,
    ids: impl IntoIterator<Item = i64>,
) -> Result<Option<iceberg::spec::TableMetadata>> {
    let refs = crate::table::refs::refs(db, row).await?;
    let mut wanted: Vec<i64> = refs.iter().map(|r| r.snapshot_id).collect();
    wanted.extend(row.current_snapshot_id);
    wanted.extend(ids);
    wanted.sort_unstable();
    wanted.dedup();
    let snapshots: Vec<SnapshotInfo> = db
        .snapshots_by_id(row.table_id, &wanted)
        .await?
        .into_iter()
        .filter(|s| s.sequence_number <= row.last_sequence_number)
        .collect();
    let known: HashSet<i64> = snapshots.iter().map(|s| s.snapshot_id).collect();
    if row
        .current_snapshot_id
        .is_some_and(|id| !known.contains(&id))
    {
        return Ok(None);
    }
    let log = db.last_snapshot_log(row.table_id, row.version).await?;
    let snapshots: Vec<Arc<str>> = snapshots.iter().map(snapshot_json).collect();
    let log: Vec<Item> = log.into_iter().map(log_item).collect();
    let text = document(
        row,
        snapshots.iter().map(|s| &**s),
        log.iter().map(|l| &*l.json),
        &refs_json(refs, &known),
    )?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::internal_from(format!("metadata of {}", row.ident), e))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use rand::{Rng, SeedableRng};

    use super::HistoryCache;
    use crate::auth::Caller;
    use crate::commit::metacommit::TableChange;
    use crate::maintenance::expire::ExpireOptions;
    use crate::table::refs::SnapshotChange;

    /// A seeded random run of appends, metadata commits, rollbacks, tags and expiries: after
    /// each, the rendering extended from the kept one equals one made afresh from the rows,
    /// whole and for `snapshots=refs`. Replay a failure with `FIRN_SEED=<seed>`.
    #[tokio::test]
    async fn an_extended_rendering_is_the_rendering_from_the_rows() {
        let seed = crate::testing::seed(20261203);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let dir = tempfile::tempdir().unwrap();
        let (catalog, ident, t) = crate::testing::catalog_with_table(dir.path()).await;
        let caller = Caller::unrestricted();
        let shared = catalog.shared();
        let mut extended = 0;
        for step in 0..80 {
            let op = rng.gen_range(0..12);
            let row = shared.db.table(&ident).await.unwrap();
            match op {
                0..=5 => {
                    let r = crate::testing::append_one(&ident, &t, step, true);
                    catalog.commit(&caller, r).await.unwrap();
                }
                6 => {
                    let change = TableChange {
                        ident: ident.clone(),
                        requirements: vec![],
                        updates: vec![iceberg::TableUpdate::SetProperties {
                            updates: HashMap::from([("step".into(), step.to_string())]),
                        }],
                    };
                    catalog
                        .commit_metadata(&caller, change, "test", None)
                        .await
                        .unwrap();
                }
                7 | 8 => {
                    let parent = match row.current_snapshot_id {
                        Some(id) => shared
                            .db
                            .snapshot(row.table_id, id)
                            .await
                            .unwrap()
                            .and_then(|s| s.parent_snapshot_id),
                        None => None,
                    };
                    let change = match (op, parent) {
                        (7, Some(p)) => SnapshotChange::RollbackTo(p),
                        _ => SnapshotChange::CreateTag {
                            name: format!("tag{step}"),
                            snapshot_id: None,
                        },
                    };
                    // A table without a snapshot has nothing to tag.
                    let _ = catalog
                        .change_snapshots(&caller, &ident, &change, "test")
                        .await;
                }
                _ => {
                    let opts = ExpireOptions {
                        older_than_ms: Some(i64::MAX),
                        retain_last: Some(rng.gen_range(1..4)),
                        ..Default::default()
                    };
                    catalog
                        .expire_snapshots(&caller, &ident, &opts, "test")
                        .await
                        .unwrap();
                }
            }
            // Now and then several versions go by unseen, to be extended over at once.
            if rng.gen_bool(0.7) {
                let row = shared.db.table(&ident).await.unwrap();
                let kept = shared.history.base_for(&row).is_some();
                let got = shared
                    .history
                    .render(&shared.db, &row)
                    .await
                    .unwrap()
                    .unwrap();
                let fresh = HistoryCache::default()
                    .render(&shared.db, &row)
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(got.all, fresh.all, "seed {seed}, step {step}");
                assert_eq!(got.refs_only, fresh.refs_only, "seed {seed}, step {step}");
                extended += usize::from(kept);
            }
        }
        assert!(
            extended > 20,
            "seed {seed}: only {extended} renderings were extended"
        );
    }

    /// A metadata commit sees only part of the history, yet a snapshot added under the id
    /// of any snapshot the table has is refused, and nothing is applied.
    #[tokio::test]
    async fn a_snapshot_added_under_an_old_id_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (catalog, ident, t) = crate::testing::catalog_with_table(dir.path()).await;
        let caller = Caller::unrestricted();
        let mut ids = Vec::new();
        for i in 0..3 {
            let r = crate::testing::append_one(&ident, &t, i, true);
            ids.push(catalog.commit(&caller, r).await.unwrap().snapshot_id);
        }
        let shared = catalog.shared();
        let before = shared.db.table(&ident).await.unwrap();
        let old = shared
            .db
            .snapshot(before.table_id, ids[0])
            .await
            .unwrap()
            .unwrap();
        let snapshot = iceberg::spec::Snapshot::builder()
            .with_snapshot_id(ids[0])
            .with_sequence_number(before.last_sequence_number + 1)
            .with_timestamp_ms(before.last_updated_ms + 1)
            .with_manifest_list(old.manifest_list.clone())
            .with_summary(iceberg::spec::Summary {
                operation: iceberg::spec::Operation::Append,
                additional_properties: HashMap::new(),
            })
            .build();
        let change = TableChange {
            ident: ident.clone(),
            requirements: vec![],
            updates: vec![iceberg::TableUpdate::AddSnapshot { snapshot }],
        };
        let err = catalog
            .commit_metadata(&caller, change, "test", None)
            .await
            .unwrap_err();
        assert!(matches!(err, crate::Error::InvalidArgument { .. }), "{err}");
        assert!(err.to_string().contains(&ids[0].to_string()), "{err}");
        let after = shared.db.table(&ident).await.unwrap();
        assert_eq!(after.version, before.version);
    }
}
