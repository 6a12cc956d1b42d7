//! Which objects only expired snapshots reference: manifest lists, manifests, data and
//! delete files. Read from manifest lists and manifests, never by listing the store.
//!
//! Two ways to the same answer:
//! - **Incremental** (Iceberg's incremental cleanup), for a linear history: `main` is the
//!   table's only ref, no snapshot is named explicitly, every snapshot is an ancestor of
//!   `main`'s head and the expired ones are the oldest. A file only expired snapshots had
//!   live was removed by one of them or by the oldest retained snapshot (the *boundary*),
//!   and that removal is a `deleted` entry in a manifest the removing snapshot added. So
//!   the plan reads the manifests those snapshots added that hold deleted entries, and the
//!   manifests retained snapshots added (a file a later snapshot added again stays) — not
//!   the manifests the table has carried unchanged since before the boundary, which are
//!   most of a large table, nor the expired snapshots' own data manifests.
//! - **Reachability**, for anything else (tags, branches, rollbacks, cherry-picks, a
//!   manifest that left the history and came back): every manifest of every retained
//!   snapshot is read for its live files, and every manifest only expired snapshots list
//!   for the files that may go.
//!
//! Both trust what the spec makes a writer promise: a manifest is immutable, a `deleted`
//! entry names a file its snapshot removed, and the manifest list's counts of added and
//! deleted files are right. A writer that leaves out deleted entries only leaks files
//! (orphan removal finds them); the incremental way falls back to reachability whenever
//! the history's shape is not the one its reasoning needs.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use iceberg::spec::{DataContentType, ManifestFile, ManifestList, ManifestStatus, TableMetadata};
use sqlx::Row;

use crate::db::{Doomed, KIND_DATA, KIND_DELETE, KIND_MANIFEST, KIND_MANIFEST_LIST};
use crate::error::{Error, Result};
use crate::model::SnapshotInfo;
use crate::storage::Warehouse;
use crate::table::Shared;
use crate::table::refs::RefInfo;

/// Objects read at once.
const READ_CONCURRENCY: usize = 16;

/// How a plan found the files to delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Walk {
    /// Incremental, taking the removals of Firn's own commits from the catalog.
    Incremental,
    /// Incremental, reading every removal from manifests.
    IncrementalFromManifests,
    Reachability,
}

/// The snapshots of a plan, with their manifest lists read.
struct Listed<'a> {
    /// Every visible snapshot with its manifest list and the list's size in bytes, in the
    /// order given.
    lists: Vec<(&'a SnapshotInfo, Arc<ManifestList>, u64)>,
    expired: &'a HashSet<i64>,
}

type ListedSnapshot<'a> = (&'a SnapshotInfo, Arc<ManifestList>, u64);

impl<'a> Listed<'a> {
    fn retained(&self) -> impl Iterator<Item = &ListedSnapshot<'a>> {
        self.lists
            .iter()
            .filter(|(s, ..)| !self.expired.contains(&s.snapshot_id))
    }

    fn expired(&self) -> impl Iterator<Item = &ListedSnapshot<'a>> {
        self.lists
            .iter()
            .filter(|(s, ..)| self.expired.contains(&s.snapshot_id))
    }

    fn retained_manifests(&self) -> HashMap<&str, &ManifestFile> {
        self.retained()
            .flat_map(|(_, l, _)| l.entries())
            .map(|m| (m.manifest_path.as_str(), m))
            .collect()
    }
}

/// The manifest lists, manifests and files that only `expired` snapshots reference, and
/// which way they were found. `force` picks the way (tests compare the two).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn unreferenced(
    shared: &Shared,
    table_id: i64,
    warehouse: &Warehouse,
    meta: &TableMetadata,
    snapshots: &[SnapshotInfo],
    refs: &[RefInfo],
    expired: &HashSet<i64>,
    explicit: bool,
    force: Option<Walk>,
) -> Result<(Vec<Doomed>, Walk)> {
    if expired.is_empty() {
        return Ok((Vec::new(), Walk::Reachability));
    }
    // Manifest lists are read concurrently (one GET each). (A vector of futures, not a
    // mapped stream: the server's spawned tasks need them `Send` for every lifetime.)
    let reads: Vec<_> = snapshots
        .iter()
        .map(|s| {
            let path = s.manifest_list.clone();
            async move { shared.manifests.list(warehouse, &path).await }
        })
        .collect();
    let lists: Vec<(Arc<ManifestList>, u64)> = futures::stream::iter(reads)
        .buffered(READ_CONCURRENCY)
        .try_collect()
        .await?;
    let listed = Listed {
        lists: snapshots
            .iter()
            .zip(lists)
            .map(|(s, (l, n))| (s, l, n))
            .collect(),
        expired,
    };
    let retained_manifests = listed.retained_manifests();
    let retained_lists: HashSet<&str> = listed
        .retained()
        .map(|(s, ..)| s.manifest_list.as_str())
        .collect();
    let mut out = Vec::new();
    let mut doomed_manifests: HashMap<&str, &ManifestFile> = HashMap::new();
    for (s, list, size) in listed.expired() {
        if !retained_lists.contains(s.manifest_list.as_str()) {
            out.push(Doomed {
                path: s.manifest_list.clone(),
                kind: KIND_MANIFEST_LIST,
                size: *size as i64,
            });
        }
        for m in list.entries() {
            if !retained_manifests.contains_key(m.manifest_path.as_str()) {
                doomed_manifests.insert(&m.manifest_path, m);
            }
        }
    }
    let mut paths: Vec<&&str> = doomed_manifests.keys().collect();
    paths.sort();
    out.extend(paths.into_iter().map(|p| Doomed {
        path: p.to_string(),
        kind: KIND_MANIFEST,
        size: doomed_manifests[*p].manifest_length,
    }));
    let boundary = linear_boundary(&listed, refs);
    let mut walk = match (force, boundary) {
        (Some(w), _) => w,
        (None, Some(_)) if !explicit => Walk::Incremental,
        (None, _) => Walk::Reachability,
    };
    let files = match walk {
        Walk::Incremental | Walk::IncrementalFromManifests => {
            let boundary = boundary.ok_or_else(|| {
                Error::internal("incremental expiry planned on a history that is not linear")
            })?;
            let recorded = match walk {
                Walk::Incremental => Some(table_id),
                _ => None,
            };
            let (files, from_catalog) =
                removed_by_expired(shared, warehouse, meta, &listed, boundary, recorded).await?;
            if !from_catalog {
                walk = Walk::IncrementalFromManifests;
            }
            files
        }
        Walk::Reachability => {
            only_expired_live(
                shared,
                warehouse,
                meta,
                &retained_manifests,
                &doomed_manifests,
            )
            .await?
        }
    };
    out.extend(files);
    Ok((out, walk))
}

/// The oldest retained snapshot when the history is linear in the sense of the module
/// docs, and no manifest left it and came back.
fn linear_boundary<'a>(listed: &'a Listed<'_>, refs: &[RefInfo]) -> Option<&'a SnapshotInfo> {
    let [only] = refs else { return None };
    if only.name != "main" || only.ref_type != "branch" {
        return None;
    }
    let by_id: HashMap<i64, &SnapshotInfo> = listed
        .lists
        .iter()
        .map(|(s, ..)| (s.snapshot_id, *s))
        .collect();
    // Main's ancestry, newest first: it must hold every snapshot, retained ones first.
    let mut chain = Vec::with_capacity(by_id.len());
    let mut cur = by_id.get(&only.snapshot_id).copied();
    while let Some(s) = cur {
        if chain.len() > by_id.len() {
            return None; // a cycle (corrupt parents): let the full walk decide nothing
        }
        chain.push(s);
        cur = s.parent_snapshot_id.and_then(|p| by_id.get(&p).copied());
    }
    if chain.len() != by_id.len() {
        return None;
    }
    let kept = chain
        .iter()
        .take_while(|s| !listed.expired.contains(&s.snapshot_id))
        .count();
    if kept == 0
        || chain[kept..]
            .iter()
            .any(|s| !listed.expired.contains(&s.snapshot_id))
    {
        return None;
    }
    let boundary = chain[kept - 1];
    // A manifest a retained snapshot lists that an expired one added must have been carried
    // through the boundary; otherwise it left the history and came back.
    let retained: HashSet<i64> = chain[..kept].iter().map(|s| s.snapshot_id).collect();
    let at_boundary: HashSet<&str> = listed
        .lists
        .iter()
        .find(|(s, ..)| s.snapshot_id == boundary.snapshot_id)?
        .1
        .entries()
        .iter()
        .map(|m| m.manifest_path.as_str())
        .collect();
    let came_back = listed
        .retained()
        .flat_map(|(_, l, _)| l.entries())
        .any(|m| {
            !retained.contains(&m.added_snapshot_id)
                && !at_boundary.contains(m.manifest_path.as_str())
        });
    (!came_back).then_some(boundary)
}

fn doomed_file(f: &iceberg::spec::DataFile) -> Doomed {
    Doomed {
        path: f.file_path().to_string(),
        kind: match f.content_type() {
            DataContentType::Data => KIND_DATA,
            _ => KIND_DELETE,
        },
        size: f.file_size_in_bytes() as i64,
    }
}

/// Incremental: the files removed by a snapshot whose parent expires now (an expired one
/// or the boundary), unless a retained snapshot added them again. (The oldest expired
/// snapshot's removals were the previous run's: its parent expired then.) With
/// `recorded` (the table's id), the removals of snapshots Firn committed come from the
/// catalog; the others' from their manifests. Also says whether any came from the catalog.
async fn removed_by_expired(
    shared: &Shared,
    warehouse: &Warehouse,
    meta: &TableMetadata,
    listed: &Listed<'_>,
    boundary: &SnapshotInfo,
    recorded: Option<i64>,
) -> Result<(Vec<Doomed>, bool)> {
    let mut removers: HashSet<i64> = listed
        .expired()
        .map(|(s, ..)| *s)
        .chain([boundary])
        .filter(|s| {
            s.parent_snapshot_id
                .is_some_and(|p| listed.expired.contains(&p))
        })
        .map(|s| s.snapshot_id)
        .collect();
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut from_catalog = Vec::new();
    let mut any_recorded = false;
    if let Some(table_id) = recorded {
        let (ids, files) = recorded_removals(shared, table_id, &removers).await?;
        removers.retain(|id| !ids.contains(id));
        any_recorded = !ids.is_empty();
        from_catalog = files;
    }
    let retained: HashSet<i64> = listed.retained().map(|(s, ..)| s.snapshot_id).collect();
    let mut removing: HashMap<&str, &ManifestFile> = HashMap::new();
    let mut adding: HashMap<&str, &ManifestFile> = HashMap::new();
    for (s, list, _) in &listed.lists {
        for m in list.entries() {
            // A manifest is written by the snapshot it names as adding it; looking only at
            // the list of that snapshot finds each once.
            if m.added_snapshot_id != s.snapshot_id {
                continue;
            }
            if removers.contains(&s.snapshot_id) && m.deleted_files_count != Some(0) {
                removing.insert(&m.manifest_path, m);
            }
            if retained.contains(&s.snapshot_id) && m.added_files_count != Some(0) {
                adding.insert(&m.manifest_path, m);
            }
        }
    }
    let again = live_files(shared, warehouse, meta, &adding).await?;
    for (path, size) in from_catalog {
        if !again.contains(&path) && seen.insert(path.clone()) {
            out.push(Doomed {
                path,
                kind: KIND_DATA,
                size,
            });
        }
    }
    let reads: Vec<_> = removing
        .values()
        .map(|m| async move { shared.manifests.get(warehouse, meta, m).await })
        .collect();
    let mut removed = futures::stream::iter(reads).buffer_unordered(READ_CONCURRENCY);
    while let Some(entries) = removed.try_next().await? {
        for e in entries
            .iter()
            .filter(|e| e.status() == ManifestStatus::Deleted)
        {
            let f = e.data_file();
            if !again.contains(f.file_path()) && seen.insert(f.file_path().to_string()) {
                out.push(doomed_file(f));
            }
        }
    }
    Ok((out, any_recorded))
}

/// Of `snapshots`, those whose removals the catalog holds, and those removals (path,
/// size). Firn's commits remove data files only.
async fn recorded_removals(
    shared: &Shared,
    table_id: i64,
    snapshots: &HashSet<i64>,
) -> Result<(HashSet<i64>, Vec<(String, i64)>)> {
    let mut sorted: Vec<i64> = snapshots.iter().copied().collect();
    sorted.sort_unstable();
    let (mut ids, mut files) = (HashSet::new(), Vec::new());
    for chunk in sorted.chunks(500) {
        // A recorded snapshot that removed nothing comes back once, without a path.
        let q = format!(
            "SELECT s.snapshot_id, r.path, r.size_bytes FROM snapshots s \
             LEFT JOIN file_removals r \
             ON r.table_id = s.table_id AND r.snapshot_id = s.snapshot_id \
             WHERE s.table_id = $1 AND s.removals_recorded = 1 AND s.snapshot_id IN ({})",
            crate::db::placeholders(2, chunk.len())
        );
        let mut query = sqlx::query(&q).bind(table_id);
        for id in chunk {
            query = query.bind(*id);
        }
        for r in query.fetch_all(&shared.db.pool).await? {
            ids.insert(r.try_get::<i64, _>(0)?);
            if let Some(path) = r.try_get::<Option<String>, _>(1)? {
                files.push((path, r.try_get::<Option<i64>, _>(2)?.unwrap_or(-1)));
            }
        }
    }
    Ok((ids, files))
}

/// The paths of the files `manifests` hold live (their manifests read concurrently).
async fn live_files(
    shared: &Shared,
    warehouse: &Warehouse,
    meta: &TableMetadata,
    manifests: &HashMap<&str, &ManifestFile>,
) -> Result<HashSet<String>> {
    let reads: Vec<_> = manifests
        .values()
        .map(|m| async move { shared.manifests.live_paths(warehouse, meta, m).await })
        .collect();
    let mut files = HashSet::new();
    let mut live = futures::stream::iter(reads).buffer_unordered(READ_CONCURRENCY);
    while let Some(paths) = live.try_next().await? {
        files.extend(paths);
    }
    Ok(files)
}

/// Reachability: the files live in manifests only expired snapshots list and in no
/// retained snapshot's manifests.
async fn only_expired_live(
    shared: &Shared,
    warehouse: &Warehouse,
    meta: &TableMetadata,
    retained_manifests: &HashMap<&str, &ManifestFile>,
    doomed_manifests: &HashMap<&str, &ManifestFile>,
) -> Result<Vec<Doomed>> {
    let retained_files = live_files(shared, warehouse, meta, retained_manifests).await?;
    let reads: Vec<_> = doomed_manifests
        .values()
        .map(|m| async move { shared.manifests.get(warehouse, meta, m).await })
        .collect();
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut only = futures::stream::iter(reads).buffer_unordered(READ_CONCURRENCY);
    while let Some(entries) = only.try_next().await? {
        // Only files live in an expired snapshot: a `deleted` entry names a file that its
        // deleting snapshot's parent had live — that parent decides its fate, and if it
        // was expired earlier the file is gone already.
        for e in entries
            .iter()
            .filter(|e| e.status() != ManifestStatus::Deleted)
        {
            let f = e.data_file();
            if !retained_files.contains(f.file_path()) && seen.insert(f.file_path().to_string()) {
                out.push(doomed_file(f));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap, HashSet};

    use rand::{Rng, SeedableRng};

    use super::{Walk, unreferenced};
    use crate::auth::Caller;
    use crate::model::{CommitRequest, NewFile, Operation};
    use crate::table::refs::SnapshotChange;

    /// Everything a plan would delete, as a set of paths.
    async fn plan(
        catalog: &crate::catalog::Catalog,
        ident: &crate::ident::TableIdent,
        expired: usize,
        force: Option<Walk>,
    ) -> (BTreeSet<String>, Walk) {
        let shared = catalog.shared();
        let row = shared.db.table(ident).await.unwrap();
        let snapshots = shared
            .db
            .snapshots(row.table_id, -1, i64::MAX)
            .await
            .unwrap();
        let refs = crate::table::refs::refs(&shared.db, &row).await.unwrap();
        let mut by_seq: Vec<_> = snapshots.iter().collect();
        by_seq.sort_by_key(|s| s.sequence_number);
        let expired: HashSet<i64> = by_seq[..expired].iter().map(|s| s.snapshot_id).collect();
        let (meta, _) = crate::table::parse_base(&row).unwrap();
        let warehouse = shared.warehouse_of(&row.location).await.unwrap();
        let (doomed, walk) = unreferenced(
            shared,
            row.table_id,
            &warehouse,
            &meta,
            &snapshots,
            &refs,
            &expired,
            false,
            force,
        )
        .await
        .unwrap();
        let paths: BTreeSet<String> = doomed.into_iter().map(|d| d.path).collect();
        (paths, walk)
    }

    /// A seeded random linear history of appends, deletes and rewrites: for every number of
    /// expired snapshots, the incremental plan deletes exactly what the reachability walk
    /// does, and is the one chosen; a tag makes the planner walk. Replay with `FIRN_SEED`.
    #[tokio::test]
    async fn the_incremental_plan_is_the_reachability_plan_on_a_linear_history() {
        let seed = crate::testing::seed(20261204);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let dir = tempfile::tempdir().unwrap();
        let (catalog, ident, t) = crate::testing::catalog_with_table(dir.path()).await;
        let caller = Caller::unrestricted();
        let mut live: Vec<String> = Vec::new();
        let mut steps = 0;
        for step in 0..60i64 {
            let op = rng.gen_range(0..10);
            let current = catalog
                .shared()
                .db
                .table(&ident)
                .await
                .unwrap()
                .current_snapshot_id;
            let req = if op < 5 || live.len() < 2 {
                let r = crate::testing::append_one(&ident, &t, step, true);
                live.extend(r.operation.added().iter().map(|f| f.path.clone()));
                r
            } else {
                let n = rng.gen_range(1..=live.len().min(3));
                let gone: Vec<String> = (0..n)
                    .map(|_| live.remove(rng.gen_range(0..live.len())))
                    .collect();
                let operation = if op < 8 {
                    Operation::Delete { paths: gone }
                } else {
                    // A rewrite of the removed files into one new file.
                    let path = format!("{}/data/r{step}.parquet", t.location);
                    let bytes = crate::testing::test_parquet(&[step]);
                    std::fs::write(path.strip_prefix("file://").unwrap(), &bytes).unwrap();
                    live.push(path.clone());
                    Operation::Replace {
                        add: vec![NewFile {
                            path,
                            file_size_bytes: bytes.len() as u64,
                            stats: None,
                        }],
                        remove: gone,
                    }
                };
                CommitRequest {
                    ident: ident.clone(),
                    commit_id: format!("x{step}"),
                    base_snapshot_id: current,
                    operation,
                    summary: HashMap::new(),
                    client: "test".into(),
                }
            };
            catalog.commit(&caller, req).await.unwrap();
            steps += 1;
        }
        let mut compared = 0;
        for expired in 1..steps {
            let (auto, walk) = plan(&catalog, &ident, expired, None).await;
            assert_eq!(walk, Walk::Incremental, "seed {seed}, {expired} expired");
            let (full, _) = plan(&catalog, &ident, expired, Some(Walk::Reachability)).await;
            assert_eq!(auto, full, "seed {seed}, {expired} expired");
            let manifests = Some(Walk::IncrementalFromManifests);
            let (read, _) = plan(&catalog, &ident, expired, manifests).await;
            assert_eq!(read, full, "seed {seed}, {expired} expired, from manifests");
            compared += auto.len();
        }
        assert!(compared > steps, "seed {seed}: plans too small to compare");
        // Expiring in steps deletes, over the runs, each file no remaining snapshot needs,
        // each once.
        let data =
            std::path::PathBuf::from(t.location.strip_prefix("file://").unwrap()).join("data");
        let on_disk = || std::fs::read_dir(&data).unwrap().count() as u64;
        let before_disk = on_disk();
        let before = before_disk;
        let mut deleted = 0;
        for keep in [45, 30, 12, 3] {
            let opts = crate::maintenance::expire::ExpireOptions {
                older_than_ms: Some(i64::MAX),
                retain_last: Some(keep),
                ..Default::default()
            };
            let r = catalog
                .expire_snapshots(&caller, &ident, &opts, "test")
                .await
                .unwrap();
            deleted += r.deleted.data_files;
        }
        let needed: HashSet<String> = {
            let shared = catalog.shared();
            let row = shared.db.table(&ident).await.unwrap();
            let mut files = HashSet::new();
            for s in shared
                .db
                .snapshots(row.table_id, -1, i64::MAX)
                .await
                .unwrap()
            {
                files.extend(crate::testing::files_of(&catalog, &ident, s.snapshot_id).await);
            }
            files
        };
        assert_eq!(on_disk(), needed.len() as u64, "seed {seed}");
        assert_eq!(
            deleted,
            before - on_disk(),
            "seed {seed}: a file counted twice"
        );
        catalog
            .change_snapshots(
                &caller,
                &ident,
                &SnapshotChange::CreateTag {
                    name: "t".into(),
                    snapshot_id: None,
                },
                "test",
            )
            .await
            .unwrap();
        let (_, walk) = plan(&catalog, &ident, 1, None).await;
        assert_eq!(walk, Walk::Reachability, "a tag is not a linear history");
    }
}
