//! Bad input of every kind: a clear status, and the table exactly as it was.

use std::collections::HashMap;

use firn_client::{FirnClient, TableIdent, proto as pb};
use firn_tests::*;
use tonic::Code;

/// Version and current snapshot: what must not change.
async fn state(client: &FirnClient, ident: &TableIdent) -> (i64, Option<i64>, usize) {
    let t = client.load_table(ident, false).await.unwrap();
    let n = client.list_snapshots(ident).await.unwrap().len();
    (t.version, t.current_snapshot_id, n)
}

async fn expect(code: Code, r: firn_client::Result<impl std::fmt::Debug>, needle: &str) {
    let e = r.expect_err("must fail");
    assert_eq!(e.code(), Some(code), "{e}");
    assert!(
        e.to_string().contains(needle),
        "message {e:?} does not mention {needle:?}"
    );
}

#[tokio::test]
async fn bad_names_and_unknown_objects() {
    let server = TestServer::start().await;
    let client = server.client().await;
    expect(
        Code::InvalidArgument,
        client.create_namespace("a.b").await,
        "namespace",
    )
    .await;
    expect(
        Code::InvalidArgument,
        client.create_namespace("").await,
        "empty",
    )
    .await;
    expect(
        Code::InvalidArgument,
        client.create_namespace(&"x".repeat(300)).await,
        "longer",
    )
    .await;
    let (ident, _) = create_table(&client, "ns", "t", false).await;
    expect(
        Code::AlreadyExists,
        client.create_namespace("ns").await,
        "ns",
    )
    .await;
    let mut req = pb::CreateTableRequest {
        ident: pb_ident(&TableIdent::new("ns", "bad name")),
        fields: test_fields(),
        partition_by: vec![],
        location: String::new(),
        properties: HashMap::new(),
    };
    expect(
        Code::InvalidArgument,
        client.create_table(req.clone()).await,
        "table name",
    )
    .await;
    req.ident = pb_ident(&TableIdent::new("nope", "t"));
    expect(
        Code::NotFound,
        client.create_table(req.clone()).await,
        "namespace nope",
    )
    .await;
    req.ident = pb_ident(&ident);
    expect(
        Code::AlreadyExists,
        client.create_table(req.clone()).await,
        "ns.t",
    )
    .await;
    req.ident = pb_ident(&TableIdent::new("ns", "t2"));
    req.fields[1].r#type = "strang".into();
    expect(
        Code::InvalidArgument,
        client.create_table(req.clone()).await,
        "strang",
    )
    .await;
    req.fields = test_fields();
    req.location = "file:///etc/firn".into();
    expect(
        Code::InvalidArgument,
        client.create_table(req.clone()).await,
        "outside the warehouse",
    )
    .await;
    req.location = String::new();
    req.partition_by = vec![pb::PartitionField {
        source_column: "name".into(),
        transform: "day".into(),
        name: String::new(),
    }];
    expect(
        Code::InvalidArgument,
        client.create_table(req.clone()).await,
        "cannot partition",
    )
    .await;
    expect(
        Code::NotFound,
        client
            .load_table(&TableIdent::new("ns", "missing"), false)
            .await,
        "ns.missing",
    )
    .await;
    expect(
        Code::NotFound,
        client.list_snapshots(&TableIdent::new("nope", "t")).await,
        "namespace nope",
    )
    .await;
    expect(
        Code::FailedPrecondition,
        client.drop_namespace("ns").await,
        "not empty",
    )
    .await;
}

#[tokio::test]
async fn bad_commits_leave_the_table_unchanged() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let (ident, t) = create_table(&client, "ns", "t", true).await;
    let (good, gs) = write_parquet(&t.location, "good.parquet", &batch(0..10, 0));
    client
        .commit_once(append_request(&ident, vec![data_file(&good, gs)]))
        .await
        .unwrap();
    let before = state(&client, &ident).await;
    let commit = |files: Vec<pb::DataFile>| client.commit_once(append_request(&ident, files));

    // A file that does not exist.
    expect(
        Code::InvalidArgument,
        commit(vec![data_file(
            &format!("{}/data/missing.parquet", t.location),
            10,
        )])
        .await,
        "does not exist",
    )
    .await;
    // The wrong size.
    let (u, s) = write_parquet(&t.location, "f1.parquet", &batch(10..20, 0));
    expect(
        Code::InvalidArgument,
        commit(vec![data_file(&u, s + 1)]).await,
        "bytes in storage",
    )
    .await;
    // Outside the table's location.
    let outside = format!("{}elsewhere.parquet", server.catalog.warehouse().root());
    expect(
        Code::InvalidArgument,
        commit(vec![data_file(&outside, 1)]).await,
        "outside the table",
    )
    .await;
    let sneaky = format!("{}/data/../../other/x.parquet", t.location);
    expect(
        Code::InvalidArgument,
        commit(vec![data_file(&sneaky, 1)]).await,
        "",
    )
    .await;
    // The same file twice.
    expect(
        Code::InvalidArgument,
        commit(vec![data_file(&u, s), data_file(&u, s)]).await,
        "twice",
    )
    .await;
    // A file already in the table.
    expect(
        Code::InvalidArgument,
        commit(vec![data_file(&good, gs)]).await,
        "already part of",
    )
    .await;
    // Schema mismatch: a column the table lacks, and a column of the wrong type.
    let extra = arrow::array::RecordBatch::try_from_iter(vec![
        (
            "id",
            std::sync::Arc::new(arrow::array::Int64Array::from(vec![1])) as _,
        ),
        (
            "color",
            std::sync::Arc::new(arrow::array::StringArray::from(vec!["red"])) as _,
        ),
    ])
    .unwrap();
    let (u2, s2) = write_parquet(&t.location, "extra.parquet", &extra);
    expect(
        Code::InvalidArgument,
        commit(vec![data_file(&u2, s2)]).await,
        "color",
    )
    .await;
    let wrong = arrow::array::RecordBatch::try_from_iter(vec![(
        "id",
        std::sync::Arc::new(arrow::array::StringArray::from(vec!["1"])) as _,
    )])
    .unwrap();
    let (u3, s3) = write_parquet(&t.location, "wrong.parquet", &wrong);
    expect(
        Code::InvalidArgument,
        commit(vec![data_file(&u3, s3)]).await,
        "does not fit",
    )
    .await;
    // Rows of several partitions in one file.
    let mixed = arrow::compute::concat_batches(
        &batch(0..1, 0).schema(),
        &[batch(50..51, 0), batch(51..52, 3)],
    )
    .unwrap();
    let (u4, s4) = write_parquet(&t.location, "mixed.parquet", &mixed);
    expect(
        Code::InvalidArgument,
        commit(vec![data_file(&u4, s4)]).await,
        "several partitions",
    )
    .await;
    // Not a Parquet file.
    let junk = format!("{}/data/junk.parquet", t.location);
    put_object(&junk, b"definitely not parquet".to_vec());
    expect(
        Code::InvalidArgument,
        commit(vec![data_file(&junk, 22)]).await,
        "Parquet",
    )
    .await;
    // Deleting a file that is not live; a stale base for a non-commuting operation.
    let del = delete_request(&ident, "d1", before.1, vec![u.clone()]);
    expect(
        Code::InvalidArgument,
        client.commit_once(del).await,
        "not a live file",
    )
    .await;
    let stale = delete_request(&ident, "d2", Some(12345), vec![u.clone()]);
    expect(Code::Aborted, client.commit_once(stale).await, "12345").await;
    // No operation at all; an oversized request.
    let mut none = append_request(&ident, vec![]);
    none.operation = None;
    expect(
        Code::InvalidArgument,
        client.commit_once(none).await,
        "operation",
    )
    .await;
    let huge: Vec<pb::DataFile> = (0..400_000)
        .map(|i| data_file(&format!("{}/data/{i:0>200}.parquet", t.location), 1))
        .collect();
    let e = commit(huge).await.expect_err("oversized");
    assert!(
        matches!(e.code(), Some(Code::ResourceExhausted | Code::OutOfRange)),
        "{e}"
    );

    assert_eq!(
        state(&client, &ident).await,
        before,
        "a failed commit changed the table"
    );
    assert_eq!(
        read_ids(&client, &ident, None).await,
        (0..10).collect::<Vec<_>>()
    );
}
