//! The SQL surface, pinned by sqllogictest files in `tests/slt/` (each run against a fresh
//! server), and scan planning checked through the gRPC API.
//!
//! Besides plain SQL, the `.slt` files may use `LET name = <query>`: the first value of the
//! query's result is kept, and `${name}` in later statements is replaced by it (snapshot
//! ids and commit times differ from run to run).

use std::collections::HashMap;
use std::path::PathBuf;

use arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::arrow::array::RecordBatch;
use firn_client::proto as pb;
use firn_query::{FirnSession, QueryError};
use firn_tests::TestServer;
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};

struct FirnDb {
    session: FirnSession,
    vars: HashMap<String, String>,
}

fn cells(batches: &[RecordBatch]) -> Vec<Vec<String>> {
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for b in batches {
        let fmts: Vec<ArrayFormatter> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("formatter"))
            .collect();
        for r in 0..b.num_rows() {
            rows.push(
                fmts.iter()
                    .map(|f| {
                        let s = f.value(r).to_string();
                        if s.is_empty() {
                            "(empty)".to_string()
                        } else {
                            s
                        }
                    })
                    .collect(),
            );
        }
    }
    rows
}

impl FirnDb {
    fn substitute(&self, sql: &str) -> String {
        let mut out = sql.to_string();
        for (k, v) in &self.vars {
            out = out.replace(&format!("${{{k}}}"), v);
        }
        out
    }
}

#[async_trait::async_trait]
impl AsyncDB for FirnDb {
    type Error = QueryError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, QueryError> {
        let sql = self.substitute(sql);
        if let Some(rest) = sql.trim().strip_prefix("LET ") {
            let (name, query) = rest
                .split_once('=')
                .ok_or_else(|| QueryError::Invalid("LET name = query".into()))?;
            let rows = cells(&self.session.sql(query).await?);
            let v = rows
                .first()
                .and_then(|r| r.first())
                .cloned()
                .ok_or_else(|| QueryError::Invalid(format!("LET {name}: no value")))?;
            self.vars.insert(name.trim().to_string(), v);
            return Ok(DBOutput::StatementComplete(0));
        }
        let batches = self.session.sql(&sql).await?;
        let width = batches.first().map(|b| b.num_columns()).unwrap_or(0);
        Ok(DBOutput::Rows {
            types: vec![DefaultColumnType::Any; width],
            rows: cells(&batches),
        })
    }

    async fn shutdown(&mut self) {}

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await
    }
}

async fn run_slt(name: &str) {
    let server = TestServer::start().await;
    let endpoint = server.endpoint.clone();
    let mut runner = sqllogictest::Runner::new(move || {
        let endpoint = endpoint.clone();
        async move {
            Ok(FirnDb {
                session: FirnSession::connect(&endpoint).await?,
                vars: HashMap::new(),
            })
        }
    });
    runner.with_column_validator(|_, _| true);
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("slt")
        .join(name);
    if let Err(e) = runner.run_file_async(&path).await {
        panic!("{}: {}", path.display(), e.display(true));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt_time_travel() {
    run_slt("time_travel.slt").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt_metadata_tables() {
    run_slt("metadata.slt").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt_writes() {
    run_slt("writes.slt").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt_procedures() {
    run_slt("procedures.slt").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt_queries() {
    run_slt("queries.slt").await;
}

/// A selective filter is answered from fewer files: the server prunes by column bounds
/// and identity partitions, and never drops a file that holds a matching row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_scan_prunes_files_by_statistics() {
    let server = TestServer::start().await;
    let session = FirnSession::connect(&server.endpoint).await.unwrap();
    session
        .sql("CREATE SCHEMA p; CREATE TABLE p.t (id bigint, region string) PARTITIONED BY (region)")
        .await
        .unwrap();
    for i in 0..10i64 {
        session
            .sql(&format!(
                "INSERT INTO p.t SELECT value + {} AS id, 'r{}' AS region FROM generate_series(1, 100)",
                i * 100,
                i % 2
            ))
            .await
            .unwrap();
    }
    let client = server.client().await;
    let ident = firn_client::TableIdent::new("p", "t");
    let cmp = |column: &str, op: pb::comparison::Op, v: pb::literal::Value| pb::Filter {
        kind: Some(pb::filter::Kind::Compare(pb::Comparison {
            column: column.into(),
            op: op as i32,
            value: Some(pb::Literal { value: Some(v) }),
        })),
    };
    let all = client.plan_scan(&ident, None, None).await.unwrap();
    assert_eq!(all.files.len(), 10);
    assert_eq!(all.files_total, 10);
    use pb::comparison::Op;
    use pb::literal::Value;
    let one = client
        .plan_scan(&ident, None, Some(cmp("id", Op::Eq, Value::Long(250))))
        .await
        .unwrap();
    assert_eq!(one.files.len(), 1, "{:?}", one.files);
    assert_eq!(one.files_total, 10);
    let region = client
        .plan_scan(
            &ident,
            None,
            Some(cmp("region", Op::Eq, Value::String("r1".into()))),
        )
        .await
        .unwrap();
    assert_eq!(region.files.len(), 5);
    let none = client
        .plan_scan(&ident, None, Some(cmp("id", Op::Gt, Value::Long(1000))))
        .await
        .unwrap();
    assert!(none.files.is_empty());
    // The same answers through SQL, where the filter is applied to rows too.
    let n = session
        .sql("SELECT count(*) FROM p.t WHERE id = 250 OR region = 'r1'")
        .await
        .unwrap();
    assert_eq!(cells(&n), vec![vec!["501".to_string()]]);
    // A filter the server cannot use (a function of a column) prunes nothing but stays right.
    let n = session
        .sql("SELECT count(*) FROM p.t WHERE id % 7 = 0")
        .await
        .unwrap();
    assert_eq!(cells(&n), vec![vec!["142".to_string()]]);
}

/// Files written without Iceberg field ids (as pyarrow writes them) read by name; rows that
/// SQL writes are read back by iceberg-rust, an independent Iceberg reader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_reads_plain_files_and_iceberg_reads_sql_writes() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let (ident, t) = firn_tests::create_table(&client, "x", "t", true).await;
    let (uri, size) =
        firn_tests::write_parquet(&t.location, "plain.parquet", &firn_tests::batch(0..10, 1));
    client
        .commit_once(firn_tests::append_request(
            &ident,
            vec![firn_tests::data_file(&uri, size)],
        ))
        .await
        .unwrap();
    let session = FirnSession::connect(&server.endpoint).await.unwrap();
    let got = session
        .sql("SELECT count(*), sum(id), min(name) FROM x.t WHERE ts IS NOT NULL")
        .await
        .unwrap();
    assert_eq!(cells(&got), vec![vec!["10", "45", "row-0"]]);
    session
        .sql("INSERT INTO x.t VALUES (100, 'sql', TIMESTAMP '2026-11-25 10:00:00'), (101, 'sql', NULL)")
        .await
        .unwrap();
    let ids = firn_tests::read_ids(&client, &ident, None).await;
    assert_eq!(ids, (0..10).chain([100, 101]).collect::<Vec<_>>());
    let got = session
        .sql("SELECT count(*) FROM x.t WHERE name = 'sql' AND id > 100")
        .await
        .unwrap();
    assert_eq!(cells(&got), vec![vec!["1"]]);
}

/// A table with an equality delete file (as Spark or DuckDB write them over REST, committed
/// here through the same metadata-commit path): SQL returns exactly the rows not deleted, in
/// data older than the delete only, and time travel before the delete still sees them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_applies_row_level_deletes() {
    use iceberg::spec::{
        DataContentType, DataFileBuilder, DataFileFormat, FormatVersion, ManifestList,
        ManifestListWriter, ManifestWriterBuilder, Operation, Snapshot, SnapshotReference,
        SnapshotRetention, Struct, Summary, TableMetadata,
    };
    use iceberg::{TableRequirement, TableUpdate};

    let server = TestServer::start().await;
    let session = FirnSession::connect(&server.endpoint).await.unwrap();
    session
        .sql("CREATE SCHEMA d; CREATE TABLE d.t (id bigint NOT NULL, name string); INSERT INTO d.t VALUES (1,'a'),(2,'b'),(3,'c'),(4,'d'),(5,'e')")
        .await
        .unwrap();
    let client = server.client().await;
    let ident = firn_client::TableIdent::new("d", "t");
    let t = client.load_table(&ident, true).await.unwrap();
    let meta: TableMetadata = serde_json::from_str(&t.metadata_json).unwrap();
    let before = meta.current_snapshot_id().unwrap();
    // As another engine would: with the storage access the server hands out.
    let file_io =
        firn_core::FirnStorageFactory::file_io(&client.storage_config(&ident).await.unwrap());

    // The equality delete file: ids 2 and 4, column `id` with its field id.
    let id_field =
        arrow::datatypes::Field::new("id", arrow::datatypes::DataType::Int64, false).with_metadata(
            HashMap::from([("PARQUET:field_id".to_string(), "1".to_string())]),
        );
    let batch = arrow::array::RecordBatch::try_new(
        std::sync::Arc::new(arrow::datatypes::Schema::new(vec![id_field])),
        vec![std::sync::Arc::new(arrow::array::Int64Array::from(vec![
            2, 4,
        ]))],
    )
    .unwrap();
    let (path, size) = firn_tests::write_parquet(meta.location(), "eq-delete.parquet", &batch);
    let delete = DataFileBuilder::default()
        .content(DataContentType::EqualityDeletes)
        .file_path(path)
        .file_format(DataFileFormat::Parquet)
        .partition(Struct::empty())
        .record_count(2)
        .file_size_in_bytes(size)
        .equality_ids(Some(vec![1]))
        .build()
        .unwrap();
    let snapshot_id = 777_000_001;
    let seq = meta.last_sequence_number() + 1;
    let manifest_path = format!("{}/metadata/eq-delete-m0.avro", meta.location());
    let mut w = ManifestWriterBuilder::new(
        file_io.new_output(&manifest_path).unwrap(),
        Some(snapshot_id),
        meta.current_schema().clone(),
        meta.default_partition_spec().as_ref().clone(),
    )
    .build_v2_deletes();
    w.add_file(delete, seq).unwrap();
    let delete_manifest = w.write_manifest_file().await.unwrap();
    let old_list = file_io
        .new_input(meta.current_snapshot().unwrap().manifest_list())
        .unwrap()
        .read()
        .await
        .unwrap();
    let mut manifests = ManifestList::parse_with_version(&old_list, FormatVersion::V2)
        .unwrap()
        .entries()
        .to_vec();
    manifests.push(delete_manifest);
    let list_path = format!("{}/metadata/snap-{snapshot_id}.avro", meta.location());
    let mut lw = ManifestListWriter::v2(
        file_io
            .new_output(&list_path)
            .unwrap()
            .writer()
            .await
            .unwrap(),
        snapshot_id,
        Some(before),
        seq,
    );
    lw.add_manifests(manifests.into_iter()).unwrap();
    lw.close().await.unwrap();
    let snapshot = Snapshot::builder()
        .with_snapshot_id(snapshot_id)
        .with_parent_snapshot_id(Some(before))
        .with_sequence_number(seq)
        .with_timestamp_ms(meta.last_updated_ms() + 1)
        .with_manifest_list(list_path)
        .with_schema_id(meta.current_schema_id())
        .with_summary(Summary {
            operation: Operation::Delete,
            additional_properties: HashMap::new(),
        })
        .build();
    let caller = server.catalog.authenticate(None).await.unwrap();
    server
        .catalog
        .commit_metadata(
            &caller,
            firn_core::TableChange {
                ident: ident.clone(),
                requirements: vec![TableRequirement::RefSnapshotIdMatch {
                    r#ref: "main".into(),
                    snapshot_id: Some(before),
                }],
                updates: vec![
                    TableUpdate::AddSnapshot { snapshot },
                    TableUpdate::SetSnapshotRef {
                        ref_name: "main".into(),
                        reference: SnapshotReference::new(
                            snapshot_id,
                            SnapshotRetention::branch(None, None, None),
                        ),
                    },
                ],
            },
            "test",
            None,
        )
        .await
        .unwrap();
    let rows = |sql: &'static str| {
        let session = session.clone();
        async move { cells(&session.sql(sql).await.unwrap()) }
    };
    let ids = |v: Vec<Vec<String>>| v.into_iter().map(|r| r[0].clone()).collect::<Vec<_>>();
    assert_eq!(
        ids(rows("SELECT id FROM d.t ORDER BY id").await),
        ["1", "3", "5"]
    );
    // The row count is not taken from file statistics when deletes apply.
    assert_eq!(ids(rows("SELECT count(*) FROM d.t").await), ["3"]);
    // An equality delete applies to older data only: a later insert of id 2 stays.
    session
        .sql("INSERT INTO d.t VALUES (2, 'again'), (6, 'f')")
        .await
        .unwrap();
    assert_eq!(
        rows("SELECT id, name FROM d.t ORDER BY id").await,
        [
            ["1", "a"],
            ["2", "again"],
            ["3", "c"],
            ["5", "e"],
            ["6", "f"]
        ]
    );
    assert_eq!(
        ids(session
            .sql(&format!("SELECT count(*) FROM d.t VERSION AS OF {before}"))
            .await
            .map(|b| cells(&b))
            .unwrap()),
        ["5"]
    );
}

#[tokio::test]
async fn expressions_too_deep_to_plan_are_refused_not_a_crash() {
    let server = TestServer::start().await;
    let session = FirnSession::connect(&server.endpoint).await.unwrap();
    // 20,000 terms used to overflow the stack of `firn sql`.
    let deep = format!("SELECT {}", vec!["1"; 20_000].join("+"));
    let e = session.sql(&deep).await.unwrap_err();
    assert!(e.to_string().contains("nest deeper"), "{e}");
    // A long but plannable one still runs (on this test thread's small stack), and the
    // session goes on.
    let ok = format!("SELECT {} AS n", vec!["1"; 40].join("+"));
    let batches = session.sql(&ok).await.unwrap();
    let n = batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .unwrap()
        .value(0);
    assert_eq!(n, 40);
}
