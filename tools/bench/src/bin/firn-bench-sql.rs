//! SQL scan benchmark: the same queries through Firn (`firn sql`'s engine: server-side
//! planning over gRPC, then DataFusion's Parquet reader) and through plain DataFusion
//! reading the same Parquet files by path, in one process, on one machine. Also: how long
//! planning a scan takes on a table with a long history, for old and new snapshots.
//!
//! Run: `cargo run --release -p firn-bench --bin firn-bench-sql` (`--quick` for a smoke run).

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use datafusion::arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::prelude::{SessionConfig, SessionContext};
use firn_client::proto as pb;
use firn_client::{TableIdent, TableWriter, WriterOptions};
use firn_query::FirnSession;
use firn_tests::TestServer;

#[derive(Parser)]
struct Args {
    /// A small data set (a smoke run, not the reported figures).
    #[arg(long)]
    quick: bool,
    /// Rows in the scanned table.
    #[arg(long, default_value_t = 12_000_000)]
    rows: usize,
    /// Data files (one commit each).
    #[arg(long, default_value_t = 60)]
    files: usize,
    /// Snapshots of the table whose scan planning is timed.
    #[arg(long, default_value_t = 10_000)]
    history: usize,
    /// Timed runs per query (the median is reported).
    #[arg(long, default_value_t = 7)]
    runs: usize,
}

fn rows_batch(start: i64, n: usize) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Float64, false),
        Field::new("s", DataType::Utf8, false),
    ]));
    let ids = start..start + n as i64;
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(ids.clone())),
            Arc::new(Int64Array::from_iter_values(ids.clone().map(|i| i % 1000))),
            Arc::new(Float64Array::from_iter_values(
                ids.clone().map(|i| ((i * 7919) % 10_007) as f64 * 0.5),
            )),
            Arc::new(StringArray::from_iter_values(
                ids.map(|i| format!("customer-{:05}", i % 50_000)),
            )),
        ],
    )
    .unwrap()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// A DataFusion table over exactly these Parquet files.
async fn raw_table(ctx: &SessionContext, paths: &[String]) -> Arc<ListingTable> {
    let urls = paths
        .iter()
        .map(|p| ListingTableUrl::parse(p).unwrap())
        .collect();
    let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
        .with_file_extension(".parquet")
        .with_target_partitions(ctx.copied_config().target_partitions());
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .infer_schema(&ctx.state())
        .await
        .unwrap();
    Arc::new(ListingTable::try_new(config).unwrap())
}

async fn time_firn(session: &FirnSession, sql: &str) -> (Duration, String) {
    let t = Instant::now();
    let b = session.sql(sql).await.unwrap();
    (t.elapsed(), format!("{:?}", first_row(&b)))
}

async fn time_raw(ctx: &SessionContext, sql: &str) -> (Duration, String) {
    let t = Instant::now();
    let b = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    (t.elapsed(), format!("{:?}", first_row(&b)))
}

fn first_row(b: &[RecordBatch]) -> Vec<String> {
    let b = &b[0];
    (0..b.num_columns())
        .map(|c| datafusion::arrow::util::display::array_value_to_string(b.column(c), 0).unwrap())
        .collect()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args = Args::parse();
    let (rows, files, history) = if args.quick {
        (600_000, 12, 1000)
    } else {
        (args.rows, args.files, args.history)
    };
    let server = TestServer::start().await;
    let client = server.client().await;
    let session = FirnSession::new(client.clone());
    session
        .sql("CREATE SCHEMA bench; CREATE TABLE bench.t (id bigint NOT NULL, k bigint NOT NULL, v double NOT NULL, s string NOT NULL)")
        .await
        .unwrap();
    let ident = TableIdent::new("bench", "t");

    // Load: one file per commit, ids ascending (so id filters can skip files).
    eprintln!("writing {rows} rows in {files} files...");
    let per = rows / files;
    let load = Instant::now();
    let mut snapshot_after = Vec::new();
    for f in 0..files {
        let mut w = TableWriter::new(&client, &ident, WriterOptions::default())
            .await
            .unwrap();
        let start = (f * per) as i64;
        for chunk in (0..per).step_by(100_000) {
            w.write(&rows_batch(start + chunk as i64, 100_000.min(per - chunk)))
                .await
                .unwrap();
        }
        snapshot_after.push(w.commit().await.unwrap().snapshot_id);
    }
    let load = load.elapsed();
    let plan = client.plan_scan(&ident, None, None).await.unwrap();
    let paths: Vec<String> = plan.files.iter().map(|f| f.path.clone()).collect();
    assert_eq!(paths.len(), files);

    // The raw side: plain DataFusion over the same files (and over the files of an old
    // snapshot for the time-travel query), same number of partitions.
    let config = SessionConfig::new()
        .with_target_partitions(session.context().copied_config().target_partitions());
    let raw = SessionContext::new_with_config(config);
    raw.register_table("t", raw_table(&raw, &paths).await)
        .unwrap();
    let old_index = files / 2;
    let old_snapshot = snapshot_after[old_index - 1];
    let old_plan = client
        .plan_scan(
            &ident,
            Some(pb::SnapshotSelector {
                kind: Some(pb::snapshot_selector::Kind::SnapshotId(old_snapshot)),
            }),
            None,
        )
        .await
        .unwrap();
    let old_paths: Vec<String> = old_plan.files.iter().map(|f| f.path.clone()).collect();
    raw.register_table("t_old", raw_table(&raw, &old_paths).await)
        .unwrap();

    let mid = (rows / 2) as i64;
    let queries: Vec<(&str, String, String)> = vec![
        (
            "full scan aggregate",
            "SELECT sum(v), max(s), avg(k) FROM bench.t".into(),
            "SELECT sum(v), max(s), avg(k) FROM t".into(),
        ),
        (
            "selective filter (0.01%)",
            format!("SELECT count(*), sum(v) FROM bench.t WHERE id BETWEEN {mid} AND {}", mid + 1000),
            format!("SELECT count(*), sum(v) FROM t WHERE id BETWEEN {mid} AND {}", mid + 1000),
        ),
        (
            "group by, string filter",
            "SELECT k % 10 AS g, count(*) FROM bench.t WHERE s < 'customer-01000' GROUP BY 1 ORDER BY 1 LIMIT 1".into(),
            "SELECT k % 10 AS g, count(*) FROM t WHERE s < 'customer-01000' GROUP BY 1 ORDER BY 1 LIMIT 1".into(),
        ),
        (
            "time travel: old snapshot scan",
            format!("SELECT sum(v), max(s), avg(k) FROM bench.t VERSION AS OF {old_snapshot}"),
            "SELECT sum(v), max(s), avg(k) FROM t_old".into(),
        ),
    ];
    let mut table: Vec<(String, String, String, String)> = Vec::new();
    let mut worst = 0f64;
    for (name, firn_sql, raw_sql) in &queries {
        // Warm-up (OS cache, footer caches), and the answers must agree.
        let (_, a) = time_firn(&session, firn_sql).await;
        let (_, b) = time_raw(&raw, raw_sql).await;
        assert_eq!(a, b, "{name}: Firn and DataFusion disagree");
        let (mut f, mut r) = (Vec::new(), Vec::new());
        for _ in 0..args.runs {
            f.push(time_firn(&session, firn_sql).await.0);
            r.push(time_raw(&raw, raw_sql).await.0);
        }
        let (f, r) = (median(f), median(r));
        let ratio = f.as_secs_f64() / r.as_secs_f64();
        worst = worst.max(ratio);
        table.push((name.to_string(), ms(f), ms(r), format!("{ratio:.2}")));
    }

    // Planning on a long history: many tiny commits, then plan scans of old and new
    // snapshots (the gRPC PlanScan, and a whole SQL statement's planning).
    eprintln!("committing {history} snapshots...");
    session
        .sql("CREATE TABLE bench.h (id bigint NOT NULL, name string, ts timestamp)")
        .await
        .unwrap();
    let h = TableIdent::new("bench", "h");
    let location = client.load_table(&h, false).await.unwrap().location;
    let ids = firn_tests::build_history(&server.endpoint, &h, &location, history, 8).await;
    let probes = [
        ("first", ids[0].1),
        ("middle", ids[ids.len() / 2].1),
        ("current", ids[ids.len() - 1].1),
    ];
    let mut planning = Vec::new();
    let mut worst_plan = Duration::ZERO;
    for (label, id) in probes {
        let at = Some(pb::SnapshotSelector {
            kind: Some(pb::snapshot_selector::Kind::SnapshotId(id)),
        });
        let mut rpc = Vec::new();
        let mut sql = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            let p = client.plan_scan(&h, at.clone(), None).await.unwrap();
            rpc.push(t.elapsed());
            assert!(!p.files.is_empty());
            let t = Instant::now();
            let df = session.context().clone();
            let stmt = session
                .parse(&format!("SELECT count(*) FROM bench.h VERSION AS OF {id}"))
                .unwrap()
                .remove(0);
            let plan = session.plan(stmt.statement).await.unwrap();
            let _physical = df.state().create_physical_plan(&plan).await.unwrap();
            sql.push(t.elapsed());
        }
        let (rpc, sql) = (median(rpc), median(sql));
        worst_plan = worst_plan.max(rpc).max(sql);
        planning.push((label, rpc, sql));
    }

    println!(
        "Firn SQL benchmark: {rows} rows in {files} files ({:.0} MB), loaded in {:.1} s; {} partitions",
        plan.files.iter().map(|f| f.file_size_bytes).sum::<u64>() as f64 / 1e6,
        load.as_secs_f64(),
        session.context().copied_config().target_partitions()
    );
    println!(
        "{:<32}  {:>12}  {:>12}  {:>9}",
        "query (median of runs)", "Firn", "DataFusion", "Firn/raw"
    );
    println!("{:-<32}  {:->12}  {:->12}  {:->9}", "", "", "", "");
    for (q, f, r, ratio) in &table {
        println!("{q:<32}  {f:>12}  {r:>12}  {ratio:>9}");
    }
    println!("worst Firn/raw ratio: {worst:.2} (target <= 1.10)");
    println!();
    println!(
        "Planning a scan of a table with {} snapshots (median of 20)",
        ids.len()
    );
    println!(
        "{:<10}  {:>14}  {:>18}",
        "snapshot", "PlanScan RPC", "SQL plan (AS OF)"
    );
    println!("{:-<10}  {:->14}  {:->18}", "", "", "");
    for (label, rpc, sql) in planning {
        println!("{label:<10}  {:>14}  {:>18}", ms(rpc), ms(sql));
    }
    println!("slowest planning: {} (target < 20 ms)", ms(worst_plan));
}
