//! Many writers at once: separate OS processes appending to one table.

use std::process::Stdio;

use firn_client::{FirnClient, TableIdent, TableWriter, WriterOptions};
use firn_tests::*;

const PROCESSES: i64 = 8;
const APPENDS: i64 = 50;
const ROWS: i64 = 3;

/// One writer process of `eight_processes_fifty_appends_each` (run by it, with `--ignored`).
#[tokio::test]
#[ignore = "a child process of eight_processes_fifty_appends_each"]
async fn writer_child() {
    let endpoint =
        std::env::var("FIRN_CHILD_ENDPOINT").expect("run by eight_processes_fifty_appends_each");
    let w: i64 = std::env::var("FIRN_CHILD_INDEX").unwrap().parse().unwrap();
    let client = FirnClient::connect(&endpoint)
        .await
        .unwrap()
        .with_client_name(format!("child-{w}"));
    let ident = TableIdent::new("ns", "many");
    let mut ok = 0;
    for i in 0..APPENDS {
        let first = (w * APPENDS + i) * ROWS;
        let mut writer = TableWriter::new(&client, &ident, WriterOptions::default())
            .await
            .unwrap();
        writer
            .write(&batch(first..first + ROWS, i % 3))
            .await
            .unwrap();
        writer.commit().await.unwrap();
        ok += 1;
    }
    println!("CHILD-OK {ok}");
}

#[tokio::test]
async fn eight_processes_fifty_appends_each() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let (ident, _) = create_table(&client, "ns", "many", true).await;
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..PROCESSES)
        .map(|w| {
            tokio::process::Command::new(&exe)
                .args([
                    "--exact",
                    "concurrency::writer_child",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("FIRN_CHILD_ENDPOINT", &server.endpoint)
                .env("FIRN_CHILD_INDEX", w.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().await.unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains(&format!("CHILD-OK {APPENDS}")),
            "a writer failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let snaps = client.list_snapshots(&ident).await.unwrap();
    assert_eq!(snaps.len() as i64, PROCESSES * APPENDS);
    assert_eq!(
        snaps.last().unwrap().summary["total-records"],
        (PROCESSES * APPENDS * ROWS).to_string()
    );
    assert_eq!(
        read_ids(&client, &ident, None).await,
        (0..PROCESSES * APPENDS * ROWS).collect::<Vec<_>>()
    );
    // Each snapshot's parent is the previous one: one linear history, nothing lost.
    for pair in snaps.windows(2) {
        assert_eq!(pair[1].parent_snapshot_id, Some(pair[0].snapshot_id));
    }
}
