//! A caller with only network access tries to make Firn read, report or delete what the
//! table does not own: encoded paths, links, overlapping tables, purges through borrowed
//! metadata, lying statistics, bad metadata commits and specs that would panic. Each is
//! refused with a clear error, and every table stays exactly as it was.

use std::collections::HashMap;

use firn_client::{FirnClient, TableIdent, proto as pb};
use firn_tests::*;
use serde_json::{Value, json};
use tonic::Code;

/// Version, current snapshot and snapshot count: what a refused request must not change.
async fn state(client: &FirnClient, ident: &TableIdent) -> (i64, Option<i64>, usize) {
    let t = client.load_table(ident, false).await.unwrap();
    let n = client.list_snapshots(ident).await.unwrap().len();
    (t.version, t.current_snapshot_id, n)
}

fn refused<T: std::fmt::Debug>(r: firn_client::Result<T>, needle: &str) {
    let e = r.expect_err("must be refused");
    assert_eq!(e.code(), Some(Code::InvalidArgument), "{e}");
    assert!(
        e.to_string().contains(needle),
        "{e} does not mention {needle:?}"
    );
}

/// A table `ns.name` holding `ids` in one data file, committed: (ident, table, file, size).
async fn table_with_rows(
    client: &FirnClient,
    name: &str,
    ids: std::ops::Range<i64>,
) -> (TableIdent, pb::Table, String, u64) {
    let (ident, t) = create_table(client, "ns", name, false).await;
    let (f, size) = write_parquet(&t.location, &format!("{name}.parquet"), &batch(ids, 0));
    client
        .commit_once(append_request(&ident, vec![data_file(&f, size)]))
        .await
        .unwrap();
    (ident, t, f, size)
}

/// A REST answer that is a 400 ErrorModel whose message mentions `needle`.
fn rest_refused(status: u16, body: &Value, needle: &str) {
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(needle),
        "{message} does not mention {needle:?}"
    );
}

fn warehouse_root(server: &TestServer) -> String {
    server.catalog.warehouse().root().to_string()
}

#[tokio::test]
async fn encoded_and_linked_paths_never_leave_the_table() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let (ident, t) = create_table(&client, "ns", "t", false).await;
    let (_, other) = create_table(&client, "ns", "other", false).await;
    // A file of another table, and one outside the warehouse, that must survive.
    let (victim, size) = write_parquet(&other.location, "victim.parquet", &batch(0..3, 0));
    // Next to the warehouse root, in the same store (a directory, or a bucket's prefix).
    let root = warehouse_root(&server);
    let outside = format!(
        "{}/outside",
        root.trim_end_matches('/').rsplit_once('/').unwrap().0
    );
    let secret = format!("{outside}/secret.parquet");
    put_object(&secret, read_object(&victim).unwrap());
    let before = state(&client, &ident).await;

    let other_dir = other.location.rsplit('/').next().unwrap();
    for path in [
        format!(
            "{}/data/%2e%2e/%2e%2e/{other_dir}/data/victim.parquet",
            t.location
        ),
        format!(
            "{}/data/.%2E/.%2e/{other_dir}/data/victim.parquet",
            t.location
        ),
        format!(
            "{}/data/..\\..\\{other_dir}\\data\\victim.parquet",
            t.location
        ),
        format!("{}/data//victim.parquet", t.location),
        format!(
            "{}/data/%2e%2e%2f%2e%2e%2f{other_dir}/victim.parquet",
            t.location
        ),
    ] {
        refused(
            client
                .commit_once(append_request(&ident, vec![data_file(&path, size)]))
                .await,
            "add.path",
        );
    }
    // Reserved paths and table locations are checked the same way.
    refused(
        client
            .reserve_data_files(&ident, vec!["%2e%2e/%2e%2e".into()])
            .await,
        "partition",
    );
    let escaping = format!(
        "{}ns/x/%2e%2e/%2e%2e/%2e%2e/escaped",
        warehouse_root(&server)
    );
    refused(
        client
            .create_table(pb::CreateTableRequest {
                ident: pb_ident(&TableIdent::new("ns", "escaping")),
                fields: test_fields(),
                partition_by: vec![],
                location: escaping,
                properties: HashMap::new(),
            })
            .await,
        "location",
    );
    // A link inside the table pointing outside it is not followed (object stores have
    // no links).
    if t.location.starts_with("file://") {
        let data = local_path(&t.location).join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::os::unix::fs::symlink(local_path(&outside), data.join("linked")).unwrap();
        refused(
            client
                .commit_once(append_request(
                    &ident,
                    vec![data_file(
                        &format!("{}/data/linked/secret.parquet", t.location),
                        size,
                    )],
                ))
                .await,
            "symbolic link",
        );
    }
    assert_eq!(state(&client, &ident).await, before);
    // An orphan sweep of the table follows no link either.
    let r = client
        .remove_orphan_files(pb::RemoveOrphanFilesRequest {
            ident: pb_ident(&ident),
            older_than_ms: Some(i64::MAX),
            dry_run: false,
            sweep_listing: true,
        })
        .await;
    drop(r);
    assert!(
        object_exists(&secret),
        "a file outside the warehouse was deleted"
    );
    assert!(object_exists(&victim), "another table's file was deleted");
}

#[tokio::test]
async fn tables_never_overlap() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let (a_ident, a, _, _) = table_with_rows(&client, "a", 0..5).await;
    let root = warehouse_root(&server);
    for (name, location) in [
        ("same", a.location.clone()),
        ("same_slash", format!("{}/", a.location)),
        ("inside", format!("{}/data/sub", a.location)),
        ("namespace", format!("{root}ns")),
        ("root", root.clone()),
    ] {
        let r = client
            .create_table(pb::CreateTableRequest {
                ident: pb_ident(&TableIdent::new("ns", name)),
                fields: test_fields(),
                partition_by: vec![],
                location,
                properties: HashMap::new(),
            })
            .await;
        refused(r, "location");
    }
    // A table can't be created around another one either.
    client.create_namespace("outer").await.unwrap();
    let (_, inner) = create_table(&client, "outer", "inner", false).await;
    let around = inner.location.rsplit_once('/').unwrap().0.to_string();
    refused(
        client
            .create_table(pb::CreateTableRequest {
                ident: pb_ident(&TableIdent::new("outer", "around")),
                fields: test_fields(),
                partition_by: vec![],
                location: format!("{around}/"),
                properties: HashMap::new(),
            })
            .await,
        "location",
    );
    // A REST stage-create is refused the same way, before the client writes anything.
    let staged = json!({
        "name": "staged",
        "location": format!("{}/data", a.location),
        "stage-create": true,
        "schema": {"type": "struct", "schema-id": 0, "fields": [
            {"id": 1, "name": "id", "required": false, "type": "long"}
        ]}
    });
    let (status, body) =
        rest_call(&server, "POST", "/v1/namespaces/ns/tables", Some(&staged)).await;
    rest_refused(status, &body, "inside the location of table ns.a");
    // Registering a copy of a's metadata would make a second table at a's location.
    let (status, body) = rest_call(
        &server,
        "POST",
        "/v1/namespaces/ns/register",
        Some(&json!({"name": "copy", "metadata-location": a.metadata_location})),
    )
    .await;
    rest_refused(status, &body, "ns.a");
    assert_eq!(
        read_ids(&client, &a_ident, None).await,
        (0..5).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn purging_a_table_never_deletes_what_it_borrowed() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let (a_ident, _, f, _) = table_with_rows(&client, "a", 0..5).await;
    let a = client.load_table(&a_ident, false).await.unwrap();
    // Another engine's copy of a's metadata, at its own location, naming a's manifests.
    let mut meta: Value =
        serde_json::from_slice(&read_object(&a.metadata_location).unwrap()).unwrap();
    let copy = format!("{}ns/borrowed", warehouse_root(&server));
    meta["location"] = json!(copy);
    meta["table-uuid"] = json!(uuid::Uuid::new_v4().to_string());
    let copy_meta = format!("{copy}/metadata/00000-x.metadata.json");
    put_object(&copy_meta, meta.to_string().into_bytes());
    let (status, body) = rest_call(
        &server,
        "POST",
        "/v1/namespaces/ns/register",
        Some(&json!({"name": "borrowed", "metadata-location": copy_meta})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // It reads a's files, as registered tables may.
    let b_ident = TableIdent::new("ns", "borrowed");
    let plan = client.plan_scan(&b_ident, None, None).await.unwrap();
    assert_eq!(plan.files.len(), 1);
    assert_eq!(plan.files[0].path, f);
    let (status, body) = rest_call(
        &server,
        "DELETE",
        "/v1/namespaces/ns/tables/borrowed?purgeRequested=true",
        None,
    )
    .await;
    assert_eq!(status, 204, "{body}");
    // Everything of a is still there.
    let snap = client.list_snapshots(&a_ident).await.unwrap();
    for s in &snap {
        assert_snapshot_files_on_disk(&s.manifest_list);
    }
    assert!(object_exists(&f));
    assert_eq!(
        read_ids(&client, &a_ident, None).await,
        (0..5).collect::<Vec<_>>()
    );
}

/// Statistics for the test table's `id` column (field id 1).
fn stats(records: u64, id: (i64, i64), values: u64, nulls: u64) -> pb::FileStats {
    pb::FileStats {
        record_count: records,
        columns: HashMap::from([(
            1,
            pb::ColumnStats {
                column_size: None,
                value_count: Some(values),
                null_count: Some(nulls),
                nan_count: None,
                lower_bound: Some(id.0.to_le_bytes().to_vec()),
                upper_bound: Some(id.1.to_le_bytes().to_vec()),
            },
        )]),
        partition_json: String::new(),
        split_offsets: vec![],
    }
}

#[tokio::test]
async fn writer_statistics_are_checked_against_the_file() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let (ident, t) = create_table(&client, "ns", "t", false).await;
    let (f, size) = write_parquet(&t.location, "f.parquet", &batch(0..9, 0));
    let with = |s: pb::FileStats| {
        append_request(
            &ident,
            vec![pb::DataFile {
                path: f.clone(),
                file_size_bytes: size,
                stats: Some(s),
            }],
        )
    };
    for (s, needle) in [
        (stats(1_000_000_000_000, (0, 8), 9, 0), "footer"),
        (stats(9, (8, 0), 9, 0), "above upper bound"),
        (stats(9, (0, 8), 5, 6), "nulls"),
        (stats(9, (0, 8), 10, 0), "values in 9 records"),
        // Bounds that would prune the file for `id = 8` (or `id = 0`).
        (stats(9, (0, 7), 9, 0), "excludes values"),
        (stats(9, (1, 8), 9, 0), "excludes values"),
    ] {
        refused(client.commit_once(with(s)).await, needle);
    }
    assert_eq!(state(&client, &ident).await.2, 0);
    // Honest statistics (wider bounds are fine: writers truncate) are kept as the footer
    // has them, so scans prune correctly.
    client
        .commit_once(with(stats(9, (-5, 100), 9, 0)))
        .await
        .unwrap();
    let eq = |v: i64| pb::Filter {
        kind: Some(pb::filter::Kind::Compare(pb::Comparison {
            column: "id".into(),
            op: pb::comparison::Op::Eq.into(),
            value: Some(pb::Literal {
                value: Some(pb::literal::Value::Long(v)),
            }),
        })),
    };
    let plan = |v| client.plan_scan(&ident, None, Some(eq(v)));
    assert_eq!(plan(8).await.unwrap().files.len(), 1);
    assert_eq!(
        plan(100).await.unwrap().files.len(),
        0,
        "bounds not the footer's"
    );
    assert_eq!(
        read_ids(&client, &ident, None).await,
        (0..9).collect::<Vec<_>>()
    );
}

/// A REST commit adding an `overwrite` snapshot with `manifest_list` on top of main.
fn add_snapshot(current: Option<i64>, manifest_list: &str) -> Value {
    let id = 4_242_424_242_i64;
    json!({
        "requirements": [{"type": "assert-ref-snapshot-id", "ref": "main", "snapshot-id": current}],
        "updates": [
            {"action": "add-snapshot", "snapshot": {
                "snapshot-id": id,
                "parent-snapshot-id": current,
                "sequence-number": 99,
                "timestamp-ms": std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as i64,
                "manifest-list": manifest_list,
                "summary": {"operation": "overwrite"},
                "schema-id": 0
            }},
            {"action": "set-snapshot-ref", "ref-name": "main", "type": "branch", "snapshot-id": id}
        ]
    })
}

#[tokio::test]
async fn rest_metadata_commits_are_checked_like_appends() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let (ident, t, f, _) = table_with_rows(&client, "t", 0..4).await;
    let (other_ident, _, _, _) = table_with_rows(&client, "other", 10..12).await;
    let other_list = client.list_snapshots(&other_ident).await.unwrap()[0]
        .manifest_list
        .clone();
    let before = state(&client, &ident).await;
    let url = "/v1/namespaces/ns/tables/t";
    for (list, needle) in [
        ("/etc/passwd".to_string(), "manifest-list"),
        ("file:///etc/passwd".to_string(), "outside"),
        ("s3://bucket/x/snap.avro".to_string(), "manifest-list"),
        ("http://example.com/snap.avro".to_string(), "manifest-list"),
        (
            format!("{}/metadata/missing.avro", t.location),
            "does not exist",
        ),
        (f.clone(), "manifest list"),
        (other_list, "outside"),
    ] {
        let (status, body) =
            rest_call(&server, "POST", url, Some(&add_snapshot(before.1, &list))).await;
        rest_refused(status, &body, needle);
    }
    // What Firn does not keep is refused, not acknowledged.
    for (update, needle) in [
        (
            json!({"action": "remove-snapshot-ref", "ref-name": "main"}),
            "main",
        ),
        (
            json!({"action": "upgrade-format-version", "format-version": 3}),
            "format version 2",
        ),
    ] {
        let (status, body) = rest_call(
            &server,
            "POST",
            url,
            Some(&json!({"requirements": [], "updates": [update]})),
        )
        .await;
        rest_refused(status, &body, needle);
    }
    assert_eq!(state(&client, &ident).await, before);
    assert_eq!(
        read_ids(&client, &ident, None).await,
        (0..4).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn specs_that_would_panic_are_refused() {
    let server = TestServer::start().await;
    let client = server.client().await;
    client.create_namespace("ns").await.unwrap();
    let create = |fields: Vec<pb::Field>, partition: Vec<pb::PartitionField>| {
        client.create_table(pb::CreateTableRequest {
            ident: pb_ident(&TableIdent::new("ns", "t")),
            fields,
            partition_by: partition,
            location: String::new(),
            properties: HashMap::new(),
        })
    };
    let by = |transform: &str, column: &str| {
        vec![pb::PartitionField {
            source_column: column.into(),
            transform: transform.into(),
            name: String::new(),
        }]
    };
    refused(
        create(test_fields(), by("bucket[0]", "id")).await,
        "bucket[0]",
    );
    refused(
        create(test_fields(), by("truncate[0]", "name")).await,
        "truncate[0]",
    );
    let column = |name: &str, ty: &str| {
        vec![pb::Field {
            name: name.into(),
            r#type: ty.into(),
            required: false,
            doc: String::new(),
        }]
    };
    for (name, ty) in [
        ("d", "decimal(39,0)"),
        ("d", "decimal(10,11)"),
        ("f", "fixed[0]"),
        ("s", r#"{"type":"struct","fields":[]}"#),
        ("a\u{0}b", "int"),
    ] {
        let e = create(column(name, ty), vec![]).await.expect_err(ty);
        assert_eq!(e.code(), Some(Code::InvalidArgument), "{ty}: {e}");
    }
    assert!(client.list_tables("ns").await.unwrap().is_empty());
    // The server is still there for a valid table.
    create(test_fields(), by("bucket[4]", "id")).await.unwrap();
}

#[tokio::test]
async fn a_commit_id_reused_for_another_request_is_refused() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let (ident, t) = create_table(&client, "ns", "t", false).await;
    let (f1, s1) = write_parquet(&t.location, "f1.parquet", &batch(0..3, 0));
    let (f2, s2) = write_parquet(&t.location, "f2.parquet", &batch(3..6, 0));
    let mut first = append_request(&ident, vec![data_file(&f1, s1)]);
    first.commit_id = "job-42".into();
    let landed = client.commit_once(first.clone()).await.unwrap();
    // The same request again is a retry: answered with the first outcome.
    let again = client.commit_once(first).await.unwrap();
    assert!(again.replayed && again.snapshot_id == landed.snapshot_id);
    // Another request under the same id is not (it used to get the first one's answer).
    let mut other = append_request(&ident, vec![data_file(&f2, s2)]);
    other.commit_id = "job-42".into();
    refused(client.commit_once(other).await, "different request");
    assert_eq!(read_ids(&client, &ident, None).await, vec![0, 1, 2]);
}

#[tokio::test]
async fn names_and_paths_too_long_for_a_file_system_are_final_errors() {
    let server = TestServer::start().await;
    let client = server.client().await;
    // The longest table name works end to end (its directory name is kept short).
    let long = "t".repeat(255);
    let (ident, t) = create_table(&client, "ns", &long, false).await;
    let (f, size) = write_parquet(&t.location, "f.parquet", &batch(0..2, 0));
    client
        .commit_once(append_request(&ident, vec![data_file(&f, size)]))
        .await
        .unwrap();
    assert_eq!(read_ids(&client, &ident, None).await, vec![0, 1]);
    // A location no file system can hold is refused as such (not "unavailable").
    let r = client
        .create_table(pb::CreateTableRequest {
            ident: pb_ident(&TableIdent::new("ns", "deep")),
            fields: test_fields(),
            partition_by: vec![],
            location: format!("{}ns/{}", warehouse_root(&server), "d".repeat(300)),
            properties: HashMap::new(),
        })
        .await;
    refused(r, "longer than 255 bytes");
}

#[tokio::test]
async fn a_retried_idempotency_key_gets_the_first_answer() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let (ident, _) = create_table(&client, "ns", "t", false).await;
    // Clients only send keys (and retry mutations) when the server says it keeps them.
    let (_, config) = rest_call(&server, "GET", "/v1/config", None).await;
    assert_eq!(config["idempotency-key-lifetime"], "PT24H");
    let url = "/v1/namespaces/ns/tables/t";
    let refused = json!({"requirements": [], "updates": [
        {"action": "remove-snapshot-ref", "ref-name": "main"}
    ]});
    let key = [("Idempotency-Key", "0193a9c4-0000-7000-8000-000000000001")];
    let (status, first) = rest_call_with(&server, "POST", url, &key, Some(&refused)).await;
    assert_eq!(status, 400, "{first}");
    let (status, again) = rest_call_with(&server, "POST", url, &key, Some(&refused)).await;
    assert_eq!((status, &again), (400, &first));
    // The same key for another request is refused.
    let other = json!({"requirements": [], "updates": [
        {"action": "set-properties", "updates": {"a": "b"}}
    ]});
    let (status, body) = rest_call_with(&server, "POST", url, &key, Some(&other)).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["type"], "UnprocessableEntityException");
    // A mutation that succeeded is answered the same on retry, not "already exists".
    let create = json!({"namespace": ["ns2"]});
    let key2 = [("Idempotency-Key", "0193a9c4-0000-7000-8000-000000000002")];
    let (status, first) =
        rest_call_with(&server, "POST", "/v1/namespaces", &key2, Some(&create)).await;
    assert_eq!(status, 200, "{first}");
    let (status, again) =
        rest_call_with(&server, "POST", "/v1/namespaces", &key2, Some(&create)).await;
    assert_eq!((status, again), (200, first));
    assert_eq!(state(&client, &ident).await.0, 0, "the table is unchanged");
}

/// The seed of the randomized runs below: `FIRN_FUZZ_SEED` replays one.
fn fuzz_seed() -> u64 {
    std::env::var("FIRN_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261201)
}

fn pick<'a, T>(rng: &mut impl rand::Rng, xs: &'a [T]) -> &'a T {
    &xs[rng.gen_range(0..xs.len())]
}

/// A path segment an attacker might try.
fn segment(rng: &mut impl rand::Rng) -> String {
    pick(
        rng,
        &[
            "data",
            "x.parquet",
            "..",
            ".",
            "%2e%2e",
            ".%2E",
            "%2f",
            "%5c",
            "\\",
            "",
            "a%00b",
            "\u{0}",
            "ts=10%3A00",
            "~",
            "%",
            "%zz",
            "é",
            "a b",
        ],
    )
    .to_string()
}

/// Random CreateTable requests, data-file commits and REST commit bodies, seeded: the server
/// never fails with an internal or unavailable error (no input reaches a panic or is
/// mistaken for an outage), keeps serving, and a refused request changes nothing.
#[tokio::test]
async fn randomized_bad_requests_are_refused_and_change_nothing() {
    use rand::{Rng, SeedableRng};
    let seed = fuzz_seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let server = TestServer::start().await;
    let client = server.client().await;
    let (ident, t, f, size) = table_with_rows(&client, "t", 0..5).await;
    let final_code = |c: Code| {
        matches!(
            c,
            Code::InvalidArgument | Code::AlreadyExists | Code::NotFound | Code::FailedPrecondition
        )
    };
    let types = [
        "long",
        "string",
        "decimal(38,2)",
        "decimal(39,0)",
        "decimal(5,9)",
        "fixed[0]",
        "fixed[16]",
        "{\"type\":\"struct\",\"fields\":[]}",
        "{\"type\":\"list\"}",
        "garbage",
        "{\"type\":\"map\",\"key-id\":1,\"key\":\"string\",\"value-id\":2,\"value\":\"int\",\"value-required\":false}",
    ];
    let transforms = [
        "identity",
        "bucket[0]",
        "bucket[16]",
        "truncate[0]",
        "truncate[4]",
        "day",
        "year",
        "void",
        "bucket[-1]",
        "truncate[99999999999]",
        "nonsense",
    ];
    for i in 0..150 {
        let ctx = format!("seed {seed}, create {i}");
        let name: String = (0..rng.gen_range(1..4))
            .map(|_| segment(&mut rng))
            .collect::<Vec<_>>()
            .join("");
        let fields = vec![pb::Field {
            name: if rng.gen_bool(0.5) {
                "id".into()
            } else {
                name.clone()
            },
            r#type: pick(&mut rng, &types).to_string(),
            required: rng.gen_bool(0.3),
            doc: String::new(),
        }];
        let partition_by = if rng.gen_bool(0.6) {
            vec![pb::PartitionField {
                source_column: "id".into(),
                transform: pick(&mut rng, &transforms).to_string(),
                name: String::new(),
            }]
        } else {
            vec![]
        };
        let location = if rng.gen_bool(0.5) {
            String::new()
        } else {
            let segs: Vec<String> = (0..rng.gen_range(0..5))
                .map(|_| segment(&mut rng))
                .collect();
            format!(
                "{}{}",
                pick(
                    &mut rng,
                    &[
                        t.location.clone() + "/",
                        warehouse_root(&server),
                        "file:///tmp/".into()
                    ]
                ),
                segs.join("/")
            )
        };
        let r = client
            .create_table(pb::CreateTableRequest {
                ident: pb_ident(&TableIdent::new("ns", format!("f{i}"))),
                fields,
                partition_by,
                location,
                properties: HashMap::new(),
            })
            .await;
        if let Err(e) = r {
            assert!(e.code().is_some_and(final_code), "{ctx}: {e}");
        }
    }
    let before = state(&client, &ident).await;
    for i in 0..150 {
        let ctx = format!("seed {seed}, commit {i}");
        let segs: Vec<String> = (0..rng.gen_range(1..5))
            .map(|_| segment(&mut rng))
            .collect();
        let path = format!("{}/data/{}", t.location, segs.join("/"));
        let mut req = append_request(
            &ident,
            vec![pb::DataFile {
                path: if rng.gen_bool(0.2) { f.clone() } else { path },
                file_size_bytes: if rng.gen_bool(0.8) { size } else { rng.r#gen() },
                stats: rng.gen_bool(0.7).then(|| {
                    let lo: i64 = rng.gen_range(-3..6);
                    stats(
                        *pick(&mut rng, &[5, 0, 6, u64::MAX]),
                        (lo, lo + rng.gen_range(-2..8)),
                        *pick(&mut rng, &[5, 4, 9]),
                        *pick(&mut rng, &[0, 1, 6]),
                    )
                }),
            }],
        );
        // Never the same file twice: `f` is committed already.
        req.commit_id = format!("fuzz-{i}");
        match client.commit_once(req).await {
            Ok(o) => panic!("{ctx}: accepted {o:?}"),
            Err(e) => assert!(e.code().is_some_and(final_code), "{ctx}: {e}"),
        }
    }
    assert_eq!(state(&client, &ident).await, before, "seed {seed}");
    let url = "/v1/namespaces/ns/tables/t";
    let actions = [
        json!({"action": "remove-snapshot-ref", "ref-name": "main"}),
        json!({"action": "upgrade-format-version", "format-version": 3}),
        json!({"action": "set-location", "location": "file:///elsewhere"}),
        json!({"action": "add-spec", "spec": {"fields": [{"source-id": 1, "field-id": 1000, "name": "b", "transform": "bucket[0]"}]}}),
        json!({"action": "add-schema", "schema": {"type": "struct", "schema-id": 1, "fields": [{"id": 1, "name": "x\u{0}", "required": false, "type": "decimal(40,2)"}]}}),
        json!({"action": "assign-uuid", "uuid": uuid::Uuid::new_v4().to_string()}),
        json!({"action": "remove-snapshots", "snapshot-ids": [before.1]}),
        json!({"action": "nonsense"}),
        json!(42),
    ];
    for i in 0..100 {
        let ctx = format!("seed {seed}, REST {i}");
        let body = if rng.gen_bool(0.5) {
            let segs: Vec<String> = (0..rng.gen_range(1..5))
                .map(|_| segment(&mut rng))
                .collect();
            let list = format!(
                "{}{}",
                pick(
                    &mut rng,
                    &[
                        t.location.clone() + "/metadata/",
                        warehouse_root(&server),
                        "/".into(),
                        "s3://b/".into()
                    ]
                ),
                segs.join("/")
            );
            add_snapshot(before.1, &list)
        } else {
            json!({"requirements": [], "updates": [pick(&mut rng, &actions).clone()]})
        };
        let (status, answer) = rest_call(&server, "POST", url, Some(&body)).await;
        assert!(
            matches!(status, 400 | 404 | 409 | 422),
            "{ctx}: {status} {answer} for {body}"
        );
        assert!(answer["error"]["message"].is_string(), "{ctx}: {answer}");
    }
    assert_eq!(state(&client, &ident).await, before, "seed {seed}");
    assert_eq!(
        read_ids(&client, &ident, None).await,
        (0..5).collect::<Vec<_>>()
    );
}
