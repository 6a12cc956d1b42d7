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
