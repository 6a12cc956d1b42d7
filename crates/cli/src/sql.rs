//! `firn sql`: an interactive SQL shell (and batch runner) over a Firn server.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use clap::ValueEnum;
use firn_client::TableIdent;
use firn_query::{FirnSession, Output, QueryError};
use futures::StreamExt;
use rustyline::error::ReadlineError;
use rustyline::{DefaultEditor, config::Configurer};

use crate::Conn;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Tsv,
    Json,
    Ndjson,
}

#[derive(clap::Args)]
pub struct SqlArgs {
    #[command(flatten)]
    conn: Conn,
    /// Run these statements and exit (stops at the first error, exit code 1).
    #[arg(short = 'c', long = "command", conflicts_with = "file")]
    command: Option<String>,
    /// Run the statements of this file and exit (stops at the first error, exit code 1).
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Print at most this many rows of a result (0: all) [default: 100 in the shell, all in batch mode].
    #[arg(long)]
    max_rows: Option<usize>,
}

/// Settings the shell can change with backslash commands.
struct Settings {
    format: Format,
    max_rows: usize,
    timing: bool,
    /// Show a progress line on stderr for queries that take a while.
    progress: bool,
}

pub async fn run(args: SqlArgs) -> anyhow::Result<()> {
    let client = crate::client_cmds::connect(&args.conn)
        .await?
        .with_client_name("firn-sql");
    let session = FirnSession::new(client);
    let batch_sql = match (&args.command, &args.file) {
        (Some(c), _) => Some(c.clone()),
        (None, Some(f)) => Some(
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?,
        ),
        (None, None) => None,
    };
    let mut settings = Settings {
        format: args.format,
        max_rows: args
            .max_rows
            .unwrap_or(if batch_sql.is_some() { 0 } else { 100 }),
        timing: false,
        progress: std::io::stderr().is_terminal(),
    };
    match batch_sql {
        Some(sql) => {
            for s in session.parse(&sql).map_err(anyhow::Error::new)? {
                execute(&session, s, &settings).await?;
            }
            Ok(())
        }
        None => shell(session, &mut settings).await,
    }
}

fn history_path() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".firn_history"))
}

const HELP: &str = "\
Statements end with ';' and may span lines. Ctrl-C cancels a running query (or clears the
input); Ctrl-D quits.
  \\d                 list namespaces and tables
  \\d NS.T            describe a table (columns, partitioning, current snapshot)
  \\snapshots NS.T    the table's snapshots
  \\timing            toggle printing how long each statement took
  \\format FORMAT     table, csv, tsv, json or ndjson
  \\limit N           print at most N rows of a result (0: all)
  \\q                 quit
Time travel: SELECT ... FROM ns.t VERSION AS OF <id> | VERSION AS OF 'tag'
             | TIMESTAMP AS OF '2026-11-22 10:00:00'   Metadata: \"t$snapshots\", \"t$files\", ...";

async fn shell(session: FirnSession, settings: &mut Settings) -> anyhow::Result<()> {
    let mut rl = DefaultEditor::new()?;
    rl.set_auto_add_history(false);
    let _ = rl.set_max_history_size(10_000);
    let history = history_path();
    if let Some(h) = &history {
        let _ = rl.load_history(h);
    }
    eprintln!("firn sql — type \\? for help, \\q to quit");
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() {
            "firn> "
        } else {
            "  ... "
        };
        let line = tokio::task::block_in_place(|| rl.readline(prompt));
        match line {
            Ok(line) => {
                if buffer.is_empty() && line.trim_start().starts_with('\\') {
                    let _ = rl.add_history_entry(line.as_str());
                    match backslash(&session, line.trim(), settings).await {
                        Ok(true) => break,
                        Ok(false) => {}
                        Err(e) => eprintln!("error: {}", one_line(&e)),
                    }
                    continue;
                }
                if !buffer.is_empty() {
                    buffer.push('\n');
                }
                buffer.push_str(&line);
                if !buffer.trim_end().ends_with(';') {
                    continue;
                }
                let sql = std::mem::take(&mut buffer);
                let _ = rl.add_history_entry(sql.trim());
                if let Err(e) = run_all(&session, &sql, settings).await {
                    eprintln!("error: {}", one_line(&e));
                }
            }
            Err(ReadlineError::Interrupted) => {
                buffer.clear();
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(h) = &history {
        let _ = rl.save_history(h);
    }
    Ok(())
}

async fn run_all(session: &FirnSession, sql: &str, settings: &Settings) -> anyhow::Result<()> {
    for s in session.parse(sql)? {
        execute(session, s, settings).await?;
    }
    Ok(())
}

/// Runs a backslash command; `Ok(true)` means quit.
async fn backslash(
    session: &FirnSession,
    line: &str,
    settings: &mut Settings,
) -> anyhow::Result<bool> {
    let mut parts = line.split_whitespace();
    let cmd = parts.next().unwrap_or_default();
    let arg = parts.next();
    if parts.next().is_some() {
        bail!("{cmd} takes at most one argument");
    }
    match (cmd, arg) {
        ("\\q" | "\\quit", None) => return Ok(true),
        ("\\?" | "\\h" | "\\help", None) => println!("{HELP}"),
        ("\\timing", None) => {
            settings.timing = !settings.timing;
            println!("timing is {}", if settings.timing { "on" } else { "off" });
        }
        ("\\format", Some(f)) => {
            settings.format =
                Format::from_str(f, true).map_err(|_| anyhow::anyhow!("unknown format {f}"))?;
        }
        ("\\limit", Some(n)) => {
            settings.max_rows = n.parse().with_context(|| format!("{n} is not a number"))?;
        }
        ("\\d", None) => {
            let client = session.client();
            let mut rows = Vec::new();
            for ns in client.list_namespaces().await? {
                for t in client.list_tables(&ns.name).await? {
                    rows.push(vec![ns.name.clone(), t.name]);
                }
            }
            crate::output::print_table(&["namespace", "table"], &rows);
        }
        ("\\d", Some(t)) => describe(session, t).await?,
        ("\\snapshots", Some(t)) => {
            let id = TableIdent::parse(t)?;
            let sql = format!(
                "SELECT snapshot_id, parent_id, committed_at, operation, \
                 summary['added-records'] AS added_records, summary['total-records'] AS total_records \
                 FROM \"{}\".\"{}$snapshots\" ORDER BY committed_at",
                id.namespace, id.name
            );
            run_all(session, &format!("{sql};"), settings).await?;
        }
        _ => bail!("unknown command {line}; \\? lists the commands"),
    }
    Ok(false)
}

async fn describe(session: &FirnSession, table: &str) -> anyhow::Result<()> {
    let id = TableIdent::parse(table)?;
    let t = session.client().load_table(&id, false).await?;
    let schema: iceberg::spec::Schema = serde_json::from_str(&t.schema_json)?;
    let rows: Vec<Vec<String>> = schema
        .as_struct()
        .fields()
        .iter()
        .map(|f| {
            vec![
                f.name.clone(),
                f.field_type.to_string(),
                if f.required { "NOT NULL" } else { "" }.to_string(),
                f.id.to_string(),
            ]
        })
        .collect();
    crate::output::print_table(&["column", "type", "null", "field id"], &rows);
    let spec: serde_json::Value = serde_json::from_str(&t.partition_spec_json)?;
    let parts: Vec<String> = spec["fields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| {
                    format!(
                        "{}({})",
                        f["transform"].as_str().unwrap_or("?"),
                        f["name"].as_str().unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    println!(
        "partitioned by: {}",
        if parts.is_empty() {
            "nothing".to_string()
        } else {
            parts.join(", ")
        }
    );
    println!(
        "current snapshot: {}",
        t.current_snapshot_id
            .map(|s| s.to_string())
            .unwrap_or_else(|| "none".into())
    );
    println!("location: {}", t.location);
    Ok(())
}

/// Runs one statement and prints its result; Ctrl-C cancels it.
async fn execute(
    session: &FirnSession,
    s: firn_query::session::ParsedStatement,
    settings: &Settings,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let work = async {
        match session.run(s).await? {
            Output::Done(msg) => {
                println!("{msg}");
                Ok::<_, anyhow::Error>(())
            }
            Output::Rows(stream) => print_stream(stream, settings, start).await,
        }
    };
    tokio::select! {
        r = work => r?,
        _ = tokio::signal::ctrl_c() => {
            clear_progress(settings);
            return Err(QueryError::Cancelled.into());
        }
    }
    if settings.timing {
        println!("Time: {:.3} ms", start.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(())
}

fn clear_progress(settings: &Settings) {
    if settings.progress {
        eprint!("\r\x1b[2K");
    }
}

async fn print_stream(
    mut stream: datafusion_stream::Stream,
    settings: &Settings,
    start: Instant,
) -> anyhow::Result<()> {
    let schema = stream.schema();
    let mut kept: Vec<RecordBatch> = Vec::new();
    let mut kept_rows = 0usize;
    let mut total = 0usize;
    let limit = if settings.max_rows == 0 {
        usize::MAX
    } else {
        settings.max_rows
    };
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut shown = false;
    loop {
        tokio::select! {
            next = stream.next() => {
                let Some(batch) = next else { break };
                let batch = batch.map_err(QueryError::from)?;
                total += batch.num_rows();
                if kept_rows < limit {
                    let take = (limit - kept_rows).min(batch.num_rows());
                    kept.push(batch.slice(0, take));
                    kept_rows += take;
                }
            }
            _ = tick.tick() => {
                if settings.progress && start.elapsed() > Duration::from_secs(1) {
                    eprint!("\r\x1b[2Krunning… {:.1}s, {total} rows", start.elapsed().as_secs_f64());
                    shown = true;
                }
            }
        }
    }
    if shown {
        clear_progress(settings);
    }
    print_batches(&schema, &kept, settings.format)?;
    if total > kept_rows {
        println!("({} more rows; \\limit 0 shows all)", total - kept_rows);
    } else if settings.format == Format::Table {
        println!("({total} {})", if total == 1 { "row" } else { "rows" });
    }
    Ok(())
}

mod datafusion_stream {
    pub type Stream = datafusion::execution::SendableRecordBatchStream;
}

fn print_batches(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    format: Format,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        Format::Table => {
            if batches.iter().all(|b| b.num_rows() == 0) {
                let empty = RecordBatch::new_empty(schema.clone());
                writeln!(
                    out,
                    "{}",
                    arrow::util::pretty::pretty_format_batches(&[empty])?
                )?;
            } else {
                writeln!(
                    out,
                    "{}",
                    arrow::util::pretty::pretty_format_batches(batches)?
                )?;
            }
        }
        Format::Csv | Format::Tsv => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .with_delimiter(if format == Format::Tsv { b'\t' } else { b',' })
                .build(&mut out);
            if batches.is_empty() {
                w.write(&RecordBatch::new_empty(schema.clone()))?;
            }
            for b in batches {
                w.write(b)?;
            }
        }
        Format::Json => {
            let mut w = arrow::json::ArrayWriter::new(&mut out);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
            writeln!(out)?;
        }
        Format::Ndjson => {
            let mut w = arrow::json::LineDelimitedWriter::new(&mut out);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
        }
    }
    Ok(())
}

fn one_line(e: &anyhow::Error) -> String {
    crate::output::error_line(e)
}
