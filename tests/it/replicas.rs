//! Two Firn servers on one catalog database and warehouse (replicas): their commits race on
//! the pointer swap, and neither may lose, duplicate or wrongly refuse a commit.

use firn_client::proto as pb;
use firn_tests::*;

#[tokio::test]
async fn replicas_share_tables_without_losing_commits() {
    let a = TestServer::start().await;
    let b = a.replica().await;
    let (ca, cb) = (a.client().await, b.client().await);
    let (ident, t) = create_table(&ca, "ns", "shared", false).await;

    // Appends through both replicas at once.
    let mut tasks = Vec::new();
    for w in 0..6i64 {
        let client = if w % 2 == 0 { ca.clone() } else { cb.clone() };
        let (ident, location) = (ident.clone(), t.location.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..20i64 {
                let first = (w * 20 + i) * 2;
                let (u, s) = write_parquet(
                    &location,
                    &format!("w{w}-{i}.parquet"),
                    &batch(first..first + 2, 0),
                );
                client
                    .commit_once(append_request(&ident, vec![data_file(&u, s)]))
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let snaps = ca.list_snapshots(&ident).await.unwrap();
    assert_eq!(snaps.len(), 120);
    for pair in snaps.windows(2) {
        assert_eq!(
            pair[1].parent_snapshot_id,
            Some(pair[0].snapshot_id),
            "history forked"
        );
    }
    assert_eq!(
        read_ids(&cb, &ident, None).await,
        (0..240).collect::<Vec<_>>()
    );

    // B has a cached view of the table; A moves it on; an overwrite based on A's snapshot,
    // sent to B, must not be refused as a conflict.
    let (u, s) = write_parquet(&t.location, "via-a.parquet", &batch(1000..1001, 0));
    let via_a = ca
        .commit_once(append_request(&ident, vec![data_file(&u, s)]))
        .await
        .unwrap();
    let (u2, s2) = write_parquet(&t.location, "ow.parquet", &batch(2000..2003, 0));
    let ow = overwrite_request(
        &ident,
        "overwrite-via-b",
        Some(via_a.snapshot_id),
        vec![data_file(&u2, s2)],
        pb::overwrite_op::Remove::Files(pb::FileList {
            paths: vec![u.clone()],
        }),
    );
    let r = cb
        .commit_once(ow)
        .await
        .expect("B refused a commit based on A's current snapshot");
    assert_eq!(r.parent_snapshot_id, Some(via_a.snapshot_id));
    let ids = read_ids(&ca, &ident, None).await;
    assert!(ids.contains(&2000) && !ids.contains(&1000));
    assert_eq!(ids.len(), 243);
}

/// A `firn serve` process, one of several replicas on one catalog and one warehouse.
struct Replica {
    child: KillOnDrop,
    grpc: String,
    rest: String,
}

/// Starts a replica with its own data directory under `shared`, on the suite's catalog and
/// warehouse (PostgreSQL and S3 in the team run), else a catalog file and a warehouse
/// directory in `shared` that all replicas open.
async fn replica(shared: &std::path::Path, n: usize) -> Replica {
    let mut backend = serve_backend_args(&shared.join("backend"));
    if !backend.iter().any(|a| a == "--catalog-url") {
        backend.extend([
            "--catalog-url".into(),
            format!("sqlite://{}", shared.join("catalog.db").display()),
        ]);
    }
    if !backend.iter().any(|a| a == "--warehouse") {
        let dir = shared.join("warehouse");
        std::fs::create_dir_all(&dir).unwrap();
        backend.extend(["--warehouse".into(), format!("file://{}", dir.display())]);
    }
    let (grpc, rest) = (free_port(), free_port());
    let child = std::process::Command::new(firn_bin())
        .args(["serve", "--data-dir"])
        .arg(shared.join(format!("replica-{n}")))
        .args(backend)
        .args(["--grpc-listen", &format!("127.0.0.1:{grpc}")])
        .args(["--rest-listen", &format!("127.0.0.1:{rest}")])
        .args(["--admin-listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(&format!("127.0.0.1:{grpc}")).await;
    wait_for_port(&format!("127.0.0.1:{rest}")).await;
    Replica {
        child: KillOnDrop(child),
        grpc: format!("http://127.0.0.1:{grpc}"),
        rest: format!("http://127.0.0.1:{rest}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_twelve_writers_one_killed_nothing_acknowledged_lost() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let shared = tempfile::tempdir().unwrap();
    let mut replicas = Vec::new();
    for n in 0..3 {
        replicas.push(replica(shared.path(), n).await);
    }
    let all: Vec<String> = replicas.iter().map(|r| r.grpc.clone()).collect();
    let client = firn_client::FirnClient::connect(&all.join(","))
        .await
        .unwrap();
    let (ident, t) = create_table(&client, "team", "events", false).await;

    // Eight Rust writers over gRPC, each given all three replicas (starting at a different
    // one), and four PyIceberg writers over REST on the replicas that stay up.
    let (grpc_writers, per_grpc, rest_writers, per_rest) = (8i64, 20i64, 4usize, 8usize);
    let acks = std::sync::Arc::new(AtomicUsize::new(0));
    let run = std::time::Instant::now();
    let mut tasks = Vec::new();
    for w in 0..grpc_writers {
        let mut order = all.clone();
        order.rotate_left(w as usize % 3);
        let (ident, location, acks) = (ident.clone(), t.location.clone(), acks.clone());
        tasks.push(tokio::spawn(async move {
            let client = firn_client::FirnClient::connect(&order.join(","))
                .await
                .unwrap()
                .with_retry(firn_client::RetryPolicy {
                    max_attempts: 40,
                    initial_backoff: std::time::Duration::from_millis(10),
                    max_backoff: std::time::Duration::from_millis(200),
                });
            let mut acked = Vec::new();
            for i in 0..per_grpc {
                let first = (w * per_grpc + i) * 2;
                let (u, s) = write_parquet(
                    &location,
                    &format!("g{w}-{i}.parquet"),
                    &batch(first..first + 2, 0),
                );
                let r = client
                    .commit(
                        append_request(&ident, vec![data_file(&u, s)]),
                        |r| async move { Ok(Some(r)) },
                    )
                    .await
                    .unwrap_or_else(|e| panic!("writer {w} commit {i} failed: {e}"));
                acked.push(r.snapshot_id);
                acks.fetch_add(1, Ordering::SeqCst);
            }
            acked
        }));
    }
    let (_, python) = crate::python::python();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tools/python/pyiceberg_append_loop.py");
    let rest: Vec<_> = (0..rest_writers)
        .map(|k| {
            tokio::process::Command::new(&python)
                .arg(&script)
                .arg(&replicas[1 + k % 2].rest)
                .arg("team.events")
                .arg((100_000 + k * 1000).to_string())
                .arg(per_rest.to_string())
                .output()
        })
        .collect();
    let rest = tokio::spawn(futures::future::join_all(rest));

    // One replica dies (SIGKILL) once the writers are well under way.
    let started = std::time::Instant::now();
    while acks.load(Ordering::SeqCst) < 40 {
        assert!(started.elapsed().as_secs() < 120, "the writers stalled");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    replicas[0].child.kill().unwrap();
    replicas[0].child.wait().unwrap();

    let mut acked = Vec::new();
    for task in tasks {
        acked.extend(task.await.unwrap());
    }
    for out in rest.await.unwrap() {
        let out = out.unwrap();
        assert!(
            out.status.success(),
            "a REST writer failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let total = grpc_writers as usize * per_grpc as usize + rest_writers * per_rest;
    eprintln!(
        "{total} commits through 3 replicas (one killed) in {:.2} s: {:.0} commits/s",
        run.elapsed().as_secs_f64(),
        total as f64 / run.elapsed().as_secs_f64()
    );
    let survivor = firn_client::FirnClient::connect(&replicas[2].grpc)
        .await
        .unwrap();
    let snaps = survivor.list_snapshots(&ident).await.unwrap();
    let ids: std::collections::BTreeSet<i64> = snaps.iter().map(|s| s.snapshot_id).collect();
    assert!(
        acked.iter().all(|a| ids.contains(a)),
        "an acknowledged commit is missing"
    );
    assert_eq!(snaps.len(), total, "a commit lost or applied twice");
    let mut want: Vec<i64> = (0..grpc_writers * per_grpc * 2).collect();
    for k in 0..rest_writers {
        let start = (100_000 + k * 1000) as i64;
        want.extend(start..start + per_rest as i64);
    }
    want.sort_unstable();
    assert_eq!(read_ids(&survivor, &ident, None).await, want);
}
