//! Snapshot expiry end to end: what is kept and deleted, expiry while writers commit, two
//! runs at once, failed deletions finished by the next run, and a seeded randomized test
//! of every snapshot operation against a model.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use firn_client::{FirnClient, TableIdent, proto as pb};
use firn_core::storage::fault::FaultConfig;
use firn_tests::*;
use pb::manage_snapshots_request::Action;
use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn expire(
    client: &FirnClient,
    ident: &TableIdent,
    older_than_ms: Option<i64>,
    retain_last: Option<u32>,
    dry_run: bool,
) -> pb::TableExpiry {
    let r = client
        .expire_snapshots(pb::ExpireSnapshotsRequest {
            ident: pb_ident(ident),
            older_than_ms,
            retain_last,
            dry_run,
            ..Default::default()
        })
        .await
        .expect("expire");
    assert_eq!(r.tables.len(), 1);
    r.tables.into_iter().next().unwrap()
}

/// An unpartitioned test table `ns.NAME` with table properties.
async fn table_with_properties(
    client: &FirnClient,
    name: &str,
    properties: &[(&str, &str)],
) -> (TableIdent, pb::Table) {
    let _ = client.create_namespace("ns").await;
    let ident = TableIdent::new("ns", name);
    let t = client
        .create_table(pb::CreateTableRequest {
            ident: pb_ident(&ident),
            fields: test_fields(),
            partition_by: vec![],
            location: String::new(),
            properties: properties
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
        .await
        .unwrap();
    (ident, t)
}

async fn tag(client: &FirnClient, ident: &TableIdent, name: &str, snapshot: i64) {
    client
        .manage_snapshots(
            ident,
            Action::CreateTag(pb::CreateRef {
                name: name.into(),
                snapshot_id: Some(snapshot),
            }),
        )
        .await
        .unwrap();
}

/// Appends one file with `ids`; returns (snapshot id, file URI).
async fn append(
    client: &FirnClient,
    ident: &TableIdent,
    location: &str,
    ids: std::ops::Range<i64>,
) -> (i64, String) {
    let name = format!("{}.parquet", uuid::Uuid::new_v4());
    let (uri, size) = write_parquet(location, &name, &batch(ids, 0));
    let r = client
        .commit_once(append_request(ident, vec![data_file(&uri, size)]))
        .await
        .expect("append");
    (r.snapshot_id, uri)
}

async fn files_of(client: &FirnClient, ident: &TableIdent, snapshot: i64) -> BTreeSet<String> {
    let plan = client
        .plan_scan(
            ident,
            Some(pb::SnapshotSelector {
                kind: Some(pb::snapshot_selector::Kind::SnapshotId(snapshot)),
            }),
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("plan snapshot {snapshot}: {e}"));
    plan.files.into_iter().map(|f| f.path).collect()
}

async fn snapshot_ids(client: &FirnClient, ident: &TableIdent) -> BTreeSet<i64> {
    client
        .list_snapshots(ident)
        .await
        .unwrap()
        .iter()
        .map(|s| s.snapshot_id)
        .collect()
}

/// Expiry keeps each branch's newest snapshots and every tag's, deletes exactly the data
/// files, manifests, manifest lists and old metadata files nothing retained needs, leaves
/// every retained snapshot readable, and is a no-op when run again. A dry run changes
/// nothing and predicts the real run.
#[tokio::test]
async fn expiry_keeps_what_refs_need_and_deletes_the_rest() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let (ident, t) = create_table(&client, "ns", "exp", false).await;
    let (s1, f1) = append(&client, &ident, &t.location, 0..10).await;
    let (s2, f2) = append(&client, &ident, &t.location, 10..20).await;
    tag(&client, &ident, "v1", s1).await;
    // Rewrite f2 (copy-on-write): only s2 still needs it once s3 replaces it.
    let (f3, z3) = write_parquet(&t.location, "f3.parquet", &batch(10..15, 0));
    let s3 = client
        .commit_once(overwrite_request(
            &ident,
            "ow-1",
            Some(s2),
            vec![data_file(&f3, z3)],
            pb::overwrite_op::Remove::Files(pb::FileList {
                paths: vec![f2.clone()],
            }),
        ))
        .await
        .unwrap()
        .snapshot_id;
    let (s4, f4) = append(&client, &ident, &t.location, 20..30).await;
    let s2_list = client.get_snapshot(&ident, s2).await.unwrap().manifest_list;
    let data_dir = format!("{}/data", t.location);
    assert_eq!(list_objects(&data_dir).len(), 4);

    let predicted = expire(&client, &ident, Some(now_ms() + 1000), Some(2), true).await;
    assert_eq!(snapshot_ids(&client, &ident).await.len(), 4, "dry run");
    assert!(object_exists(&f2), "dry run deletes nothing");

    // Keep 2 on main (s4, s3) and the tag's s1: s2 goes, and with it f2, its list.
    let r = expire(&client, &ident, Some(now_ms() + 1000), Some(2), false).await;
    assert!(
        !r.skipped && r.error.is_empty() && r.failed_deletes == 0,
        "{r:?}"
    );
    assert_eq!(r.expired_snapshot_ids, vec![s2]);
    assert_eq!(r.retained_snapshots, 3);
    assert_eq!(r.data_files_deleted, 1);
    assert_eq!(r.manifest_lists_deleted, 1);
    assert!(r.bytes_freed > 0);
    assert_eq!(
        (
            predicted.expired_snapshot_ids.clone(),
            predicted.data_files_deleted,
            predicted.manifest_lists_deleted,
            predicted.manifests_deleted,
        ),
        (
            r.expired_snapshot_ids.clone(),
            r.data_files_deleted,
            r.manifest_lists_deleted,
            r.manifests_deleted,
        ),
        "the dry run predicted the run"
    );
    assert_eq!(
        snapshot_ids(&client, &ident).await,
        BTreeSet::from([s1, s3, s4])
    );
    assert!(!object_exists(&f2), "only the expired snapshot needed f2");
    assert!(!object_exists(&s2_list));
    assert_eq!(
        list_objects(&data_dir),
        BTreeSet::from([f1.clone(), f3.clone(), f4.clone()])
    );
    // Every retained snapshot reads its rows (iceberg-rust, through the metadata file).
    assert_eq!(
        read_ids(&client, &ident, Some(s1)).await,
        (0..10).collect::<Vec<_>>()
    );
    assert_eq!(
        read_ids(&client, &ident, Some(s3)).await,
        (0..15).collect::<Vec<_>>()
    );
    assert_eq!(
        read_ids(&client, &ident, None).await,
        (0..15).chain(20..30).collect::<Vec<_>>()
    );
    let meta: serde_json::Value =
        serde_json::from_str(&client.load_table(&ident, true).await.unwrap().metadata_json)
            .unwrap();
    let listed: BTreeSet<i64> = meta["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["snapshot-id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        listed,
        BTreeSet::from([s1, s3, s4]),
        "the metadata forgot s2"
    );
    // Time travel by ref still works; a removed snapshot is not found.
    let e = client.get_snapshot(&ident, s2).await.unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::NotFound));

    // Run again: nothing more to do.
    let again = expire(&client, &ident, Some(now_ms() + 1000), Some(2), false).await;
    assert!(again.expired_snapshot_ids.is_empty());
    assert_eq!(again.data_files_deleted + again.manifest_lists_deleted, 0);

    // Dropping the tag lets s1 go; its file f1 is still live in s4, so it stays.
    client
        .manage_snapshots(&ident, Action::DropTag("v1".into()))
        .await
        .unwrap();
    let r = expire(&client, &ident, Some(now_ms() + 1000), Some(1), false).await;
    assert_eq!(
        r.expired_snapshot_ids
            .iter()
            .copied()
            .collect::<BTreeSet<_>>(),
        BTreeSet::from([s1, s3])
    );
    assert_eq!(r.data_files_deleted, 0, "f1 and f3 are live in s4");
    assert_eq!(list_objects(&data_dir), BTreeSet::from([f1, f3, f4]));
    assert_eq!(
        read_ids(&client, &ident, None).await,
        (0..15).chain(20..30).collect::<Vec<_>>()
    );

    // Explicit ids: the current snapshot is refused, an unknown one is not found.
    let e = client
        .expire_snapshots(pb::ExpireSnapshotsRequest {
            ident: pb_ident(&ident),
            snapshot_ids: vec![s4],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::FailedPrecondition), "{e}");
    let e = client
        .expire_snapshots(pb::ExpireSnapshotsRequest {
            ident: pb_ident(&ident),
            snapshot_ids: vec![42],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::NotFound), "{e}");
    assert_eq!(snapshot_ids(&client, &ident).await, BTreeSet::from([s4]));
}

/// Expiry while 4 writers append continuously: no commit fails, every row lands, and a
/// reader of a tagged snapshot never errors. Two expiry runs at once never fail or delete
/// a file twice.
#[tokio::test]
async fn expiry_while_writers_commit_and_two_runs_at_once() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let (ident, t) = create_table(&client, "ns", "busy", false).await;
    let (pinned, _) = append(&client, &ident, &t.location, 0..5).await;
    tag(&client, &ident, "pinned", pinned).await;
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (client, ident, location) = (client.clone(), ident.clone(), t.location.clone());
            tokio::spawn(async move {
                for i in 0..30 {
                    let base = 1000 + (w * 100 + i) * 10;
                    append(&client, &ident, &location, base..base + 10).await;
                }
            })
        })
        .collect();
    let reader = {
        let (client, ident) = (client.clone(), ident.clone());
        tokio::spawn(async move {
            let mut reads = 0;
            for _ in 0..15 {
                assert_eq!(
                    read_ids(&client, &ident, Some(pinned)).await,
                    (0..5).collect::<Vec<_>>()
                );
                reads += 1;
            }
            reads
        })
    };
    let mut runs = Vec::new();
    // Until the writers are done (at least 8 rounds), so the runs overlap their commits
    // however slowly the store takes their files.
    let mut rounds = 0;
    while rounds < 8 || writers.iter().any(|w| !w.is_finished()) {
        rounds += 1;
        // Two at once each round.
        let (a, b) = tokio::join!(
            expire(&client, &ident, Some(now_ms() + 1000), Some(1), false),
            expire(&client, &ident, Some(now_ms() + 1000), Some(1), false)
        );
        runs.push(a);
        runs.push(b);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for w in writers {
        w.await.expect("no writer failed");
    }
    assert_eq!(reader.await.unwrap(), 15);
    for r in &runs {
        assert!(r.error.is_empty() && r.failed_deletes == 0, "{r:?}");
    }
    assert!(
        runs.iter().any(|r| !r.expired_snapshot_ids.is_empty()),
        "expiry did remove snapshots while writers committed"
    );
    let mut expired = HashSet::new();
    for id in runs.iter().flat_map(|r| r.expired_snapshot_ids.iter()) {
        assert!(expired.insert(*id), "snapshot {id} expired twice");
    }
    let ids = read_ids(&client, &ident, None).await;
    assert_eq!(ids.len(), 5 + 4 * 30 * 10, "every appended row is there");
    // One final run leaves exactly the current snapshot and the tag.
    let last = expire(&client, &ident, Some(now_ms() + 1000), Some(1), false).await;
    assert!(last.error.is_empty() && !last.skipped, "{last:?}");
    let current = client
        .load_table(&ident, false)
        .await
        .unwrap()
        .current_snapshot_id;
    assert_eq!(
        snapshot_ids(&client, &ident).await,
        BTreeSet::from([pinned, current.unwrap()])
    );
}

/// Deletions that fail are recorded and finished by the next run, never lost or repeated.
#[tokio::test]
async fn failed_deletions_are_finished_by_the_next_run() {
    let server = TestServer::start_with(Some(FaultConfig {
        seed: 11,
        delete_error_rate: 0.5,
        ..Default::default()
    }))
    .await;
    let client = server.client().await;
    let (ident, t) = create_table(&client, "ns", "flaky", false).await;
    let mut files = Vec::new();
    let mut last = 0;
    for i in 0..12 {
        let (s, f) = append(&client, &ident, &t.location, i * 10..i * 10 + 10).await;
        files.push(f);
        last = s;
    }
    // Replace every file: afterwards only the last snapshot's one file is needed.
    let (nf, nz) = write_parquet(&t.location, "all.parquet", &batch(0..120, 0));
    let s = client
        .commit_once(overwrite_request(
            &ident,
            "ow-all",
            Some(last),
            vec![data_file(&nf, nz)],
            pb::overwrite_op::Remove::All(true),
        ))
        .await
        .unwrap()
        .snapshot_id;
    let first = expire(&client, &ident, Some(now_ms() + 1000), Some(1), false).await;
    assert_eq!(first.expired_snapshot_ids.len(), 12);
    assert!(first.failed_deletes > 0, "the faults bit: {first:?}");
    let mut deleted = first.data_files_deleted;
    let mut rounds = 0;
    loop {
        let r = expire(&client, &ident, Some(now_ms() + 1000), Some(1), false).await;
        assert!(r.expired_snapshot_ids.is_empty());
        deleted += r.data_files_deleted;
        rounds += 1;
        if r.failed_deletes == 0 {
            assert!(r.resumed_deletes > 0 || rounds > 1);
            break;
        }
        assert!(rounds < 30, "deletions never finished");
    }
    assert_eq!(deleted, 12, "each old file deleted exactly once");
    for f in &files {
        assert!(!object_exists(f), "{f} left behind");
    }
    assert_eq!(snapshot_ids(&client, &ident).await, BTreeSet::from([s]));
    assert_eq!(
        read_ids(&client, &ident, None).await,
        (0..120).collect::<Vec<_>>()
    );
}

// ---- randomized model test -------------------------------------------------------------

#[derive(Debug, Clone)]
struct ModelSnap {
    parent: Option<i64>,
    files: BTreeSet<String>,
    ts: i64,
    manifest_list: String,
}

#[derive(Default)]
struct Model {
    snaps: HashMap<i64, ModelSnap>,
    current: Option<i64>,
    /// name -> (snapshot, is_tag)
    refs: HashMap<String, (i64, bool)>,
    /// file -> its ids
    rows: HashMap<String, Vec<i64>>,
    /// manifest lists of snapshots that are gone
    gone_lists: Vec<String>,
}

impl Model {
    fn ancestors(&self, id: i64) -> Vec<i64> {
        let mut out = Vec::new();
        let mut cur = Some(id);
        while let Some(c) = cur {
            let Some(s) = self.snaps.get(&c) else { break };
            out.push(c);
            cur = s.parent;
        }
        out
    }

    /// Iceberg's retention, written independently of Firn's.
    fn retained(&self, cutoff: i64, retain_last: usize) -> BTreeSet<i64> {
        let mut keep = BTreeSet::new();
        let mut reached = HashSet::new();
        let mut heads: Vec<(i64, bool)> = self.refs.values().map(|(id, tag)| (*id, !tag)).collect();
        heads.extend(self.current.map(|c| (c, true)));
        for (head, branch) in heads {
            let anc = self.ancestors(head);
            reached.extend(anc.iter().copied());
            keep.insert(head);
            if branch {
                for (n, a) in anc.iter().enumerate() {
                    if n < retain_last || self.snaps[a].ts >= cutoff {
                        keep.insert(*a);
                    } else {
                        break;
                    }
                }
            }
        }
        for (id, s) in &self.snaps {
            if !reached.contains(id) && s.ts >= cutoff {
                keep.insert(*id);
            }
        }
        keep
    }

    fn live(&self) -> BTreeSet<String> {
        self.current
            .map(|c| self.snaps[&c].files.clone())
            .unwrap_or_default()
    }
}

async fn add_snapshot(
    client: &FirnClient,
    ident: &TableIdent,
    model: &mut Model,
    id: i64,
    files: BTreeSet<String>,
) {
    let s = client.get_snapshot(ident, id).await.unwrap();
    model.snaps.insert(
        id,
        ModelSnap {
            parent: model.current,
            files,
            ts: s.timestamp_ms,
            manifest_list: s.manifest_list,
        },
    );
    model.current = Some(id);
}

/// Checks the server against the model: the same snapshots, each planning exactly its
/// files, every one of them present.
async fn check(client: &FirnClient, ident: &TableIdent, model: &Model, step: usize, seed: u64) {
    let ctx = format!("seed {seed}, step {step}");
    let server: BTreeSet<i64> = snapshot_ids(client, ident).await;
    let expected: BTreeSet<i64> = model.snaps.keys().copied().collect();
    assert_eq!(server, expected, "snapshots differ ({ctx})");
    let t = client.load_table(ident, false).await.unwrap();
    assert_eq!(t.current_snapshot_id, model.current, "current ({ctx})");
    for (id, s) in &model.snaps {
        assert_eq!(
            files_of(client, ident, *id).await,
            s.files,
            "files of snapshot {id} ({ctx})"
        );
        for f in &s.files {
            assert!(
                object_exists(f),
                "{f} of retained snapshot {id} is missing ({ctx})"
            );
        }
        assert!(
            object_exists(&s.manifest_list),
            "manifest list of {id} is missing ({ctx})"
        );
    }
    let refs: HashMap<String, i64> = client
        .list_refs(ident)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.name != "main")
        .map(|r| (r.name, r.snapshot_id))
        .collect();
    let model_refs: HashMap<String, i64> = model
        .refs
        .iter()
        .map(|(n, (id, _))| (n.clone(), *id))
        .collect();
    assert_eq!(refs, model_refs, "refs ({ctx})");
}

/// Random appends, overwrites, deletes, tags, branches, rollbacks and expiries — some
/// expiries cancelled midway, deletions failing at random — checked after every step
/// against a model. `FIRN_MODEL_SEED` replays a run; `FIRN_MODEL_STEPS` makes it longer.
#[tokio::test]
async fn randomized_expiry_matches_the_model() {
    let seed: u64 = std::env::var("FIRN_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261125);
    let steps: usize = std::env::var("FIRN_MODEL_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(140);
    let server = TestServer::start_with(Some(FaultConfig {
        seed,
        delete_error_rate: 0.15,
        ..Default::default()
    }))
    .await;
    let client = server.client().await;
    let (ident, t) = table_with_properties(
        &client,
        "model",
        &[("write.metadata.previous-versions-max", "2")],
    )
    .await;
    let data_dir = format!("{}/data", t.location);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model = Model::default();
    let mut next_id = 0i64;
    let mut names = 0u32;
    let mut expiries = (0u32, 0u32); // (completed, cancelled)
    // Runs whose client gave up after a random wait (decided by the seed; whether the run
    // had finished by then is up to timing).
    let mut cancel_attempts = 0u32;
    let mut compactions = 0u32;
    for step in 0..steps {
        let roll = rng.gen_range(0..100);
        let live: Vec<String> = model.live().into_iter().collect();
        let snaps: Vec<i64> = {
            let mut v: Vec<i64> = model.snaps.keys().copied().collect();
            v.sort();
            v
        };
        match roll {
            0..=34 => {
                let n = rng.gen_range(1..5);
                let (id, f) = append(&client, &ident, &t.location, next_id..next_id + n).await;
                model
                    .rows
                    .insert(f.clone(), (next_id..next_id + n).collect());
                next_id += n;
                let mut files = model.live();
                files.insert(f);
                add_snapshot(&client, &ident, &mut model, id, files).await;
            }
            35..=44 if !live.is_empty() => {
                let old = live.choose(&mut rng).unwrap().clone();
                let n = rng.gen_range(1..5);
                let name = format!("{}.parquet", uuid::Uuid::new_v4());
                let (f, z) = write_parquet(&t.location, &name, &batch(next_id..next_id + n, 0));
                model
                    .rows
                    .insert(f.clone(), (next_id..next_id + n).collect());
                next_id += n;
                let r = client
                    .commit_once(overwrite_request(
                        &ident,
                        &uuid::Uuid::new_v4().to_string(),
                        model.current,
                        vec![data_file(&f, z)],
                        pb::overwrite_op::Remove::Files(pb::FileList {
                            paths: vec![old.clone()],
                        }),
                    ))
                    .await
                    .unwrap();
                let mut files = model.live();
                files.remove(&old);
                files.insert(f);
                add_snapshot(&client, &ident, &mut model, r.snapshot_id, files).await;
            }
            45..=51 if !live.is_empty() => {
                let old = live.choose(&mut rng).unwrap().clone();
                let r = client
                    .commit_once(delete_request(
                        &ident,
                        &uuid::Uuid::new_v4().to_string(),
                        model.current,
                        vec![old.clone()],
                    ))
                    .await
                    .unwrap();
                let mut files = model.live();
                files.remove(&old);
                add_snapshot(&client, &ident, &mut model, r.snapshot_id, files).await;
            }
            52..=61 if !snaps.is_empty() => {
                let id = *snaps.choose(&mut rng).unwrap();
                names += 1;
                let tag = rng.gen_bool(0.6);
                let name = format!("r{names}");
                let r = pb::CreateRef {
                    name: name.clone(),
                    snapshot_id: Some(id),
                };
                let action = if tag {
                    Action::CreateTag(r)
                } else {
                    Action::CreateBranch(r)
                };
                client.manage_snapshots(&ident, action).await.unwrap();
                model.refs.insert(name, (id, tag));
            }
            62..=65 if !model.refs.is_empty() => {
                let mut names: Vec<&String> = model.refs.keys().collect();
                names.sort();
                let name = names.choose(&mut rng).unwrap().to_string();
                let (_, tag) = model.refs.remove(&name).unwrap();
                let action = if tag {
                    Action::DropTag(name)
                } else {
                    Action::DropBranch(name)
                };
                client.manage_snapshots(&ident, action).await.unwrap();
            }
            66..=72 if model.current.is_some() => {
                let anc = model.ancestors(model.current.unwrap());
                let id = *anc.choose(&mut rng).unwrap();
                let action = if rng.gen_bool(0.7) {
                    Action::RollbackToSnapshot(id)
                } else {
                    // Any snapshot, also one off the current history.
                    let any = *snaps.choose(&mut rng).unwrap();
                    model.current = Some(any);
                    Action::SetCurrentSnapshot(any)
                };
                if let Action::RollbackToSnapshot(_) = action {
                    model.current = Some(id);
                }
                client.manage_snapshots(&ident, action).await.unwrap();
            }
            73..=77 if live.len() >= 2 => {
                // Compaction: every (small) live file into one, as a replace commit.
                let r = client
                    .compact(pb::CompactRequest {
                        ident: pb_ident(&ident),
                        target_file_size_bytes: Some(64 << 20),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                assert_eq!(r.files_rewritten as usize, live.len(), "seed {seed}");
                let id = r.snapshot_id.expect("a replace snapshot");
                let files = files_of(&client, &ident, id).await;
                assert_eq!(files.len(), 1, "seed {seed}");
                let merged = files.iter().next().unwrap().clone();
                assert!(!live.contains(&merged));
                let rows: Vec<i64> = live.iter().flat_map(|f| model.rows[f].clone()).collect();
                model.rows.insert(merged, rows);
                add_snapshot(&client, &ident, &mut model, id, files).await;
                compactions += 1;
            }
            78..=99 => {
                let retain_last = rng.gen_range(1..4u32);
                let cutoff = if rng.gen_bool(0.7) || snaps.is_empty() {
                    now_ms() + 1000
                } else {
                    model.snaps[snaps.choose(&mut rng).unwrap()].ts
                };
                let expected = model.retained(cutoff, retain_last as usize);
                let before: BTreeSet<i64> = model.snaps.keys().copied().collect();
                let cancel = rng.gen_bool(0.25);
                cancel_attempts += u32::from(cancel);
                let call = expire(&client, &ident, Some(cutoff), Some(retain_last), false);
                let outcome = if cancel {
                    let wait = Duration::from_micros(rng.gen_range(0..4000));
                    tokio::time::timeout(wait, call).await.ok()
                } else {
                    Some(call.await)
                };
                if outcome.is_none() {
                    // The server finishes a run whose client gave up: wait until its lease
                    // is free (a no-op run is not skipped).
                    for _ in 0..500 {
                        let r = expire(&client, &ident, Some(0), Some(u32::MAX), false).await;
                        if !r.skipped {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                let now: BTreeSet<i64> = snapshot_ids(&client, &ident).await;
                match &outcome {
                    Some(r) if !r.skipped => {
                        assert!(r.error.is_empty(), "{r:?}");
                        assert_eq!(now, expected, "retention (seed {seed}, step {step})");
                        expiries.0 += 1;
                    }
                    _ => {
                        assert!(
                            now == before || now == expected,
                            "a cancelled or skipped run removed a partial set (seed {seed}, step {step})"
                        );
                        expiries.1 += 1;
                    }
                }
                for id in before.difference(&now) {
                    let s = model.snaps.remove(id).unwrap();
                    model.gone_lists.push(s.manifest_list);
                }
                // Finish every recorded deletion, then nothing unreferenced may remain.
                if outcome.as_ref().is_some_and(|r| !r.skipped) {
                    let mut rounds = 0;
                    loop {
                        let r = expire(&client, &ident, Some(0), Some(u32::MAX), false).await;
                        assert!(r.expired_snapshot_ids.is_empty(), "{r:?}");
                        if !r.skipped && r.failed_deletes == 0 {
                            break;
                        }
                        rounds += 1;
                        assert!(rounds < 50, "deletions never finished (seed {seed})");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    let needed: BTreeSet<String> = model
                        .snaps
                        .values()
                        .flat_map(|s| s.files.iter().cloned())
                        .collect();
                    assert_eq!(
                        list_objects(&data_dir),
                        needed,
                        "data files on disk vs needed (seed {seed}, step {step})"
                    );
                    for l in &model.gone_lists {
                        assert!(!object_exists(l), "{l} left behind (seed {seed})");
                    }
                }
            }
            _ => continue,
        }
        check(&client, &ident, &model, step, seed).await;
    }
    eprintln!(
        "seed {seed}: {} expiries completed, {} cancelled ({cancel_attempts} tried), \
         {compactions} compactions",
        expiries.0, expiries.1
    );
    assert!(
        expiries.0 >= 10 && cancel_attempts >= 1 && compactions >= 1,
        "too few expiries ran or were cancelled, or no compaction: {expiries:?} \
         {cancel_attempts} {compactions}"
    );
    // Garbage of commits that lost a race and whose best-effort delete failed (injected
    // faults) is recorded, so expiry finishes it without listing: afterwards the listing
    // sweep finds nothing unreferenced under the table.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for round in 0.. {
        let r = expire(&client, &ident, Some(0), Some(u32::MAX), false).await;
        if !r.skipped && r.failed_deletes == 0 {
            break;
        }
        assert!(
            round < 50,
            "recorded deletions never finished (seed {seed})"
        );
    }
    let left = client
        .remove_orphan_files(pb::RemoveOrphanFilesRequest {
            ident: pb_ident(&ident),
            older_than_ms: Some(now_ms() + 1000),
            dry_run: true,
            sweep_listing: true,
        })
        .await
        .unwrap();
    assert!(left.listed_objects > 0);
    assert!(
        left.orphan_paths.is_empty(),
        "left (seed {seed}): {:?}",
        left.orphan_paths
    );
    // Every retained snapshot reads exactly its rows, with iceberg-rust.
    for (id, s) in &model.snaps {
        let mut want: Vec<i64> = s.files.iter().flat_map(|f| model.rows[f].clone()).collect();
        want.sort_unstable();
        assert_eq!(
            read_ids(&client, &ident, Some(*id)).await,
            want,
            "rows of {id} (seed {seed})"
        );
    }
}

// ---- orphan files -----------------------------------------------------------------------

/// Files written to reserved paths and never committed are found from the catalog's record
/// (no listing) and deleted once older than the grace period; committed files stay. The
/// listing sweep also finds garbage nobody reserved, and leaves every file a snapshot
/// needs: the table reads the same before and after, also at its first snapshot.
#[tokio::test]
async fn orphans_are_found_from_reservations_and_the_sweep_only_finds_garbage() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let (ident, t) = create_table(&client, "ns", "orph", true).await;
    // A writer through the TableWriter: its files are named by reservation.
    let mut w = firn_client::TableWriter::new(&client, &ident, Default::default())
        .await
        .unwrap();
    w.write(&batch(0..10, 0)).await.unwrap();
    let first = w.commit().await.unwrap().snapshot_id;
    let committed = files_of(&client, &ident, first).await;
    // A writer that crashed before committing: reserved, written, never committed.
    let reserved = client
        .reserve_data_files(&ident, vec!["ts_day=2026-11-22".into()])
        .await
        .unwrap();
    assert!(
        reserved[0].starts_with(&format!("{}/data/ts_day=2026-11-22/", t.location)),
        "{reserved:?}"
    );
    for bad in ["../escape", "/abs", "a//b", "day=1/", "a/./b"] {
        let e = client
            .reserve_data_files(&ident, vec![bad.into()])
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some(tonic::Code::InvalidArgument), "{bad}: {e}");
    }
    let crashed = reserved[0].clone();
    put_object(&crashed, b"half a parquet file".to_vec());
    // An abandoned TableWriter: reserved paths, no commit.
    let mut abandoned = firn_client::TableWriter::new(&client, &ident, Default::default())
        .await
        .unwrap();
    abandoned.write(&batch(100..110, 1)).await.unwrap();
    drop(abandoned);
    // Garbage nobody reserved (another engine's failed write).
    let (garbage, _) = write_parquet(&t.location, "engine-garbage.parquet", &batch(0..3, 0));
    let (second, _) = append(&client, &ident, &t.location, 10..20).await;
    let before = read_ids(&client, &ident, None).await;
    assert_eq!(before, (0..20).collect::<Vec<_>>());

    let run = |older_than_ms: i64, dry_run: bool, sweep_listing: bool| {
        let client = client.clone();
        let ident = ident.clone();
        async move {
            client
                .remove_orphan_files(pb::RemoveOrphanFilesRequest {
                    ident: pb_ident(&ident),
                    older_than_ms: Some(older_than_ms),
                    dry_run,
                    sweep_listing,
                })
                .await
                .unwrap()
        }
    };
    // Within the grace period nothing is an orphan.
    let young = run(now_ms() - 60_000, false, true).await;
    assert!(young.orphan_paths.is_empty(), "{young:?}");
    assert!(object_exists(&crashed) && object_exists(&garbage));

    let dry = run(now_ms() + 1000, true, false).await;
    assert!(dry.orphan_paths.contains(&reserved[0]), "{dry:?}");
    assert!(object_exists(&crashed), "a dry run deletes nothing");
    // Without listing: the reserved, uncommitted paths (the crashed and abandoned writes).
    let r = run(now_ms() + 1000, false, false).await;
    assert_eq!(r.listed_objects, 0, "found without listing");
    assert!(r.orphan_paths.contains(&reserved[0]));
    // The dry run counted what the real run deleted (a reservation never written is no file).
    assert_eq!(
        (dry.orphan_paths.len(), dry.deleted_files, dry.bytes_freed),
        (r.orphan_paths.len(), r.deleted_files, r.bytes_freed)
    );
    assert!(r.deleted_files > 0);
    assert!(
        r.orphan_paths.len() >= 2,
        "the abandoned writer's reservation too: {r:?}"
    );
    for p in &r.orphan_paths {
        assert!(!committed.contains(p), "{p} is committed");
    }
    assert!(!object_exists(&crashed), "the crashed write's file is gone");
    assert!(
        object_exists(&garbage),
        "unreserved garbage needs the sweep"
    );
    assert_eq!(r.failed_deletes, 0);
    // The sweep finds the unreserved garbage, and nothing else.
    let swept = run(now_ms() + 1000, false, true).await;
    assert!(swept.listed_objects > 0);
    assert_eq!(swept.orphan_paths, vec![garbage.clone()], "{swept:?}");
    assert!(!object_exists(&garbage));
    assert_eq!(read_ids(&client, &ident, None).await, before);
    assert_eq!(
        read_ids(&client, &ident, Some(first)).await,
        (0..10).collect::<Vec<_>>()
    );
    assert_eq!(files_of(&client, &ident, second).await.len(), 2);
    // Nothing left to find.
    let again = run(now_ms() + 1000, false, true).await;
    assert!(again.orphan_paths.is_empty(), "{again:?}");
}

// ---- compaction --------------------------------------------------------------------------

/// Compaction rewrites the small files of each partition into one, as a `replace` commit:
/// the same rows (files with and without field ids), older snapshots unchanged, and a
/// second run finds nothing to do.
#[tokio::test]
async fn compaction_rewrites_small_files_and_keeps_rows_and_history() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let (ident, t) = create_table(&client, "ns", "small", true).await;
    for i in 0..6 {
        let mut w = firn_client::TableWriter::new(&client, &ident, Default::default())
            .await
            .unwrap();
        w.write(&batch(i * 10..i * 10 + 10, i % 2)).await.unwrap();
        w.commit().await.unwrap();
    }
    // A file without field ids, as pyarrow writes it (day 0).
    let (_, plain) = append(&client, &ident, &t.location, 100..105).await;
    let before_snapshot = client
        .load_table(&ident, false)
        .await
        .unwrap()
        .current_snapshot_id
        .unwrap();
    let before_files = files_of(&client, &ident, before_snapshot).await;
    assert_eq!(before_files.len(), 7);
    let before_rows = read_ids(&client, &ident, None).await;

    let dry = client
        .compact(pb::CompactRequest {
            ident: pb_ident(&ident),
            target_file_size_bytes: Some(64 << 20),
            dry_run: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        (dry.files_rewritten, dry.files_written, dry.snapshot_id),
        (7, 2, None)
    );
    let r = client
        .compact(pb::CompactRequest {
            ident: pb_ident(&ident),
            target_file_size_bytes: Some(64 << 20),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((r.files_rewritten, r.files_written, r.records), (7, 2, 65));
    let after = r.snapshot_id.unwrap();
    let snap = client.get_snapshot(&ident, after).await.unwrap();
    assert_eq!(snap.operation, "replace");
    assert_eq!(snap.summary["total-records"], "65");
    let after_files = files_of(&client, &ident, after).await;
    assert_eq!(after_files.len(), 2, "one file per day partition");
    assert!(after_files.is_disjoint(&before_files));
    assert!(!after_files.contains(&plain));
    assert_eq!(read_ids(&client, &ident, None).await, before_rows);
    // Time travel: the snapshot before still has its files and rows.
    assert_eq!(
        files_of(&client, &ident, before_snapshot).await,
        before_files
    );
    assert_eq!(
        read_ids(&client, &ident, Some(before_snapshot)).await,
        before_rows
    );
    let session = firn_query::FirnSession::connect(&server.endpoint)
        .await
        .unwrap();
    let b = session
        .sql("SELECT count(*), sum(id) FROM ns.small WHERE name LIKE 'row-%'")
        .await
        .unwrap();
    let col = |i: usize| {
        b[0].column(i)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .unwrap()
            .value(0)
    };
    assert_eq!((col(0), col(1)), (65, before_rows.iter().sum::<i64>()));
    let again = client
        .compact(pb::CompactRequest {
            ident: pb_ident(&ident),
            target_file_size_bytes: Some(64 << 20),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((again.files_rewritten, again.snapshot_id), (0, None));
}

/// A replace commit based on an older snapshot lands on top of appends made meanwhile
/// (they stay), and conflicts when a file it replaces was removed meanwhile.
#[tokio::test]
async fn replace_commits_commute_with_appends_but_not_with_removals() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let (ident, t) = create_table(&client, "ns", "repl", false).await;
    let (_, a) = append(&client, &ident, &t.location, 0..5).await;
    let (base, b) = append(&client, &ident, &t.location, 5..10).await;
    // Meanwhile: an append.
    let (_, c) = append(&client, &ident, &t.location, 10..15).await;
    let (merged, size) = write_parquet(&t.location, "merged.parquet", &batch(0..10, 0));
    let replace = |id: &str, base: i64, add: pb::DataFile, remove: Vec<String>| pb::CommitRequest {
        ident: pb_ident(&ident),
        commit_id: id.to_string(),
        base_snapshot_id: Some(base),
        operation: Some(pb::commit_request::Operation::Replace(pb::ReplaceFilesOp {
            add: vec![add],
            remove,
        })),
        summary: HashMap::new(),
    };
    let r = client
        .commit_once(replace(
            "r1",
            base,
            data_file(&merged, size),
            vec![a.clone(), b.clone()],
        ))
        .await
        .unwrap();
    assert_eq!(
        files_of(&client, &ident, r.snapshot_id).await,
        BTreeSet::from([merged.clone(), c.clone()]),
        "the append made meanwhile stays"
    );
    assert_eq!(
        read_ids(&client, &ident, None).await,
        (0..15).collect::<Vec<_>>()
    );
    // Based on the same old snapshot, replacing a (gone now): a conflict, nothing changed.
    let (again, size2) = write_parquet(&t.location, "again.parquet", &batch(0..5, 0));
    let e = client
        .commit_once(replace("r2", base, data_file(&again, size2), vec![a]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::Aborted), "{e}");
    assert_eq!(
        read_ids(&client, &ident, None).await,
        (0..15).collect::<Vec<_>>()
    );
}

/// `firn serve --maintenance-interval`: two replicas schedule expiry; the table's own
/// settings (a 1 ms maximum age, keep 2) are applied, and writers keep committing.
#[tokio::test]
async fn scheduled_expiry_runs_with_table_settings_across_replicas() {
    let server = TestServer::start().await;
    let replica = server.replica().await;
    let client = server.client().await;
    let (ident, t) = table_with_properties(
        &client,
        "sched",
        &[
            ("history.expire.max-snapshot-age-ms", "1"),
            ("history.expire.min-snapshots-to-keep", "2"),
        ],
    )
    .await;
    let a = server
        .catalog
        .spawn_scheduled_expiry(Duration::from_millis(200));
    let b = replica
        .catalog
        .spawn_scheduled_expiry(Duration::from_millis(200));
    for i in 0..10 {
        append(&client, &ident, &t.location, i * 10..i * 10 + 10).await;
    }
    let mut left = usize::MAX;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = snapshot_ids(&client, &ident).await.len();
        if left == 2 {
            break;
        }
    }
    a.abort();
    b.abort();
    assert_eq!(left, 2, "the table's min-snapshots-to-keep");
    assert_eq!(
        read_ids(&client, &ident, None).await,
        (0..100).collect::<Vec<_>>()
    );
}

/// `CALL system.expire_snapshots` in `firn sql`, with Spark's argument names: by age and
/// count, and by explicit ids.
#[tokio::test]
async fn sql_procedure_expires_snapshots() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let (ident, t) = create_table(&client, "ns", "sqlexp", false).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            append(&client, &ident, &t.location, i * 10..i * 10 + 10)
                .await
                .0,
        );
    }
    let session = firn_query::FirnSession::connect(&server.endpoint)
        .await
        .unwrap();
    let value = |b: &[arrow::array::RecordBatch], col: &str| {
        b[0].column_by_name(col)
            .unwrap()
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .unwrap()
            .value(0)
    };
    let b = session
        .sql(&format!(
            "CALL system.expire_snapshots(table => 'ns.sqlexp', snapshot_ids => make_array({}, {}))",
            ids[0], ids[1]
        ))
        .await
        .unwrap();
    assert_eq!(value(&b, "expired_snapshots_count"), 2);
    assert_eq!(value(&b, "deleted_manifest_lists_count"), 2);
    let b = session
        .sql("CALL system.expire_snapshots('ns.sqlexp', now() + INTERVAL '1 second', 2)")
        .await
        .unwrap();
    assert_eq!(value(&b, "expired_snapshots_count"), 1);
    assert_eq!(
        value(&b, "deleted_data_files_count"),
        0,
        "appended files stay live"
    );
    assert_eq!(
        snapshot_ids(&client, &ident).await,
        BTreeSet::from([ids[3], ids[4]])
    );
    let e = session
        .sql("CALL system.expire_snapshots('ns.sqlexp', retain_last => 0)")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("retain_last"), "{e}");

    // Spark's other maintenance procedures.
    let (garbage, _) = write_parquet(&t.location, "lost.parquet", &batch(0..1, 0));
    let b = session
        .sql(
            "CALL system.remove_orphan_files(table => 'ns.sqlexp', \
             older_than => now() + INTERVAL '1 second', dry_run => true)",
        )
        .await
        .unwrap();
    let orphans = b[0]
        .column(0)
        .as_any()
        .downcast_ref::<arrow::array::StringArray>()
        .unwrap();
    assert_eq!(
        orphans.iter().flatten().collect::<Vec<_>>(),
        [garbage.as_str()]
    );
    assert!(object_exists(&garbage), "a dry run");
    let b = session
        .sql("CALL system.rewrite_data_files(table => 'ns.sqlexp', where => 'id >= 0')")
        .await
        .unwrap();
    assert_eq!(value(&b, "rewritten_data_files_count"), 5);
    assert_eq!(value(&b, "added_data_files_count"), 1);
    let b = session
        .sql("SELECT count(*) AS n, sum(id) AS s FROM ns.sqlexp")
        .await
        .unwrap();
    assert_eq!((value(&b, "n"), value(&b, "s")), (50, (0..50).sum::<i64>()));
}
